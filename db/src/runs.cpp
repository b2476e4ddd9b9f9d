#include "keymig/db/runs.hpp"

#include <algorithm>
#include <iterator>

#include "keymig/log.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// Version 1 of keymig's own tables (docs/DESIGN.md section 4). Later versions append
// migrations (kSchemaV2, ...); never edit this one.
const char* const kSchemaV1 = R"SQL(
CREATE TABLE keymig.runs (
  run_id text PRIMARY KEY,
  kind text NOT NULL DEFAULT 'migrate',
  target text NOT NULL,
  state text NOT NULL,
  active_fingerprint text,
  rolling_fingerprints text[],
  selection jsonb,
  journal boolean NOT NULL,
  checkpoint text,
  rows_scanned bigint NOT NULL DEFAULT 0,
  rotated bigint NOT NULL DEFAULT 0,
  already_active bigint NOT NULL DEFAULT 0,
  flag_fixed bigint NOT NULL DEFAULT 0,
  empty bigint NOT NULL DEFAULT 0,
  undecryptable bigint NOT NULL DEFAULT 0,
  conflicts bigint NOT NULL DEFAULT 0,
  host text,
  pid int,
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz,
  finished_at timestamptz,
  error text
);
CREATE TABLE keymig.journal (
  run_id text REFERENCES keymig.runs ON DELETE CASCADE,
  row_id text,
  old_token text,
  new_token text,
  old_flag boolean,
  new_flag boolean,
  migrated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, row_id)
);
CREATE TABLE keymig.chunks (
  run_id text REFERENCES keymig.runs ON DELETE CASCADE,
  chunk_no int,
  lo text,
  hi text,
  checkpoint text,
  state text NOT NULL DEFAULT 'pending',
  leased_by text,
  leased_pid int,
  leased_backend_start timestamptz,
  PRIMARY KEY (run_id, chunk_no)
);
CREATE TABLE keymig.requests (
  id bigserial PRIMARY KEY,
  kind text NOT NULL,
  params jsonb,
  state text NOT NULL DEFAULT 'queued',
  created_at timestamptz NOT NULL DEFAULT now(),
  claimed_by text,
  started_at timestamptz,
  finished_at timestamptz,
  result jsonb
);
INSERT INTO keymig.schema_version (version) VALUES (1);
)SQL";

// Version 2: the journal's foreign key to runs goes. Its check ran once per journal row
// (a key-share lock on the one runs row, shared by every lane's batch): a fifth of the
// database time of a migrate batch. keymig journals only for runs it created before and
// never deletes a run itself, so the check guarded nothing; a row trigger keeps ON DELETE CASCADE
// for whoever deletes a run (keymig bench db does), at the cost of one statement per deleted run.
const char* const kSchemaV2 = R"SQL(
ALTER TABLE keymig.journal DROP CONSTRAINT IF EXISTS journal_run_id_fkey;
CREATE OR REPLACE FUNCTION keymig.delete_run_journal() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM keymig.journal WHERE run_id = OLD.run_id;
  RETURN OLD;
END
$$;
CREATE TRIGGER runs_delete_journal AFTER DELETE ON keymig.runs
  FOR EACH ROW EXECUTE FUNCTION keymig.delete_run_journal();
INSERT INTO keymig.schema_version (version) VALUES (2);
)SQL";

// Version 3: the journal's key columns compare bytewise (COLLATE "C"). Under a database's
// linguistic collation every key comparison of a journal insert went through strcoll; the
// key only has to be unique and ordered, not sorted for people. This rewrites the journal
// once (after finalize it is usually empty).
const char* const kSchemaV3 = R"SQL(
ALTER TABLE keymig.journal ALTER COLUMN run_id TYPE text COLLATE "C",
  ALTER COLUMN row_id TYPE text COLLATE "C";
INSERT INTO keymig.schema_version (version) VALUES (3);
)SQL";

// Version 4: autovacuum leaves the growing journal alone. It is written once per row
// during a run, read only through its key (run_id first) and emptied by finalize or
// purge, yet from empty its insert threshold (1,000 rows + 20 %) and its analyze
// threshold (50 rows + 10 %) are crossed again and again while a run writes it: a
// VACUUM ANALYZE of the journal took a core for 1.1 s in the middle of a 2.4 s,
// 200k-row run. No keymig query depends on its statistics (every one is a key-prefix
// scan). The vacuum after finalize's or purge's deletes stays on, and so does the
// anti-wraparound one.
const char* const kSchemaV4 = R"SQL(
ALTER TABLE keymig.journal SET (autovacuum_vacuum_insert_threshold = -1,
  autovacuum_analyze_threshold = 2147483647);
INSERT INTO keymig.schema_version (version) VALUES (4);
)SQL";

// Version 5: journal tokens as bytea, and no migrated_at. The journal is most of what a
// run writes beyond the row updates themselves (a 10M-row run wrote 20.7 GB, the
// one-statement rewrite of the same rows about half), and it stays on disk until
// finalize. A canonical token is kept as the bytes it spells (3/4 of its text; they
// start with Fernet's version byte 0x80), anything else as a 0x00 tag and its UTF-8
// text, so that journal_text() spells back exactly what the row held. A journal row goes
// from about 360 to about 275 bytes, a run's WAL down by 8 %. migrated_at was written
// and never read: a run's age is its last activity in keymig.runs.
const char* const kSchemaV5 = R"SQL(
CREATE FUNCTION keymig.journal_bytes(t text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT '\x00'::bytea || convert_to(t, 'UTF8') $$;
CREATE FUNCTION keymig.journal_text(b bytea) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$ SELECT CASE WHEN get_byte(b, 0) = 128
                    THEN translate(encode(b, 'base64'), E'+/\n', '-_')
                    ELSE convert_from(substr(b, 2), 'UTF8') END $$;
ALTER TABLE keymig.journal
  ALTER COLUMN old_token TYPE bytea USING keymig.journal_bytes(old_token),
  ALTER COLUMN new_token TYPE bytea USING keymig.journal_bytes(new_token),
  DROP COLUMN migrated_at;
INSERT INTO keymig.schema_version (version) VALUES (5);
)SQL";

// kMigrations[v - 1] takes the schema from version v - 1 to v.
const char* const kMigrations[] = {kSchemaV1, kSchemaV2, kSchemaV3, kSchemaV4, kSchemaV5};
static_assert(std::size(kMigrations) == kSchemaVersion, "one migration per schema version");

const char* const kRunColumns =
    "run_id, kind, target, state, coalesce(active_fingerprint, ''),"
    " coalesce(array_to_string(rolling_fingerprints, ','), ''), coalesce(selection::text, 'null'),"
    " journal, checkpoint, rows_scanned, rotated, already_active, flag_fixed, empty,"
    " undecryptable, conflicts, coalesce(host, ''), coalesce(pid, 0), started_at::text,"
    " coalesce(updated_at::text, ''), coalesce(finished_at::text, ''), coalesce(error, '')";

Run to_run(const pqxx::row& r) {
  Run run;
  run.run_id = r[0].as<std::string>();
  run.kind = r[1].as<std::string>();
  run.target = r[2].as<std::string>();
  run.state = r[3].as<std::string>();
  run.active_fingerprint = r[4].as<std::string>();
  std::string rolling = r[5].as<std::string>();
  for (std::size_t pos = 0; !rolling.empty() && pos <= rolling.size();) {
    auto comma = rolling.find(',', pos);
    if (comma == std::string::npos) comma = rolling.size();
    run.rolling_fingerprints.push_back(rolling.substr(pos, comma - pos));
    pos = comma + 1;
  }
  run.selection_json = r[6].as<std::string>();
  run.journal = r[7].as<bool>();
  run.checkpoint = opt_text(r[8]);
  run.counts.rows_scanned = r[9].as<std::int64_t>();
  run.counts.rotated = r[10].as<std::int64_t>();
  run.counts.already_active = r[11].as<std::int64_t>();
  run.counts.flag_fixed = r[12].as<std::int64_t>();
  run.counts.empty = r[13].as<std::int64_t>();
  run.counts.undecryptable = r[14].as<std::int64_t>();
  run.counts.conflicts = r[15].as<std::int64_t>();
  run.host = r[16].as<std::string>();
  run.pid = r[17].as<int>();
  run.started_at = r[18].as<std::string>();
  run.updated_at = r[19].as<std::string>();
  run.finished_at = r[20].as<std::string>();
  run.error = r[21].as<std::string>();
  return run;
}

std::string nullable_array(const std::vector<std::optional<std::string>>& values) {
  std::string out = "{";
  bool first = true;
  for (const auto& v : values) {
    if (v) {
      append_array_element(out, *v, first);
    } else {
      if (!first) out.push_back(',');
      out += "NULL";
    }
    first = false;
  }
  out.push_back('}');
  return out;
}

// The holder of a lease is alive while its session is: same pid, same start time (pids
// are reused). The function behind pg_stat_activity, asked for one pid: the view joins
// catalogs whose planning cost a few milliseconds per lease, on every lane at every chunk.
const char* const kHolderAlive =
    "EXISTS (SELECT 1 FROM pg_stat_get_activity(k.leased_pid) a"
    " WHERE a.backend_start IS NOT DISTINCT FROM k.leased_backend_start)";
const char* const kOwnBackendStart =
    "(SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid()))";

}  // namespace

void ensure_schema(Connection& conn) {
  guarded(conn, "creating schema keymig", [&](pqxx::connection& c) {
    {
      // Fast path without a lock: the schema is there and current.
      pqxx::nontransaction probe(c);
      // Two statements: a reference to a missing table fails at parse time, whatever
      // branch of a CASE would have been taken.
      int version = 0;
      if (!probe.exec("SELECT to_regclass('keymig.schema_version')")[0][0].is_null())
        version = probe.exec("SELECT coalesce(max(version), 0) FROM keymig.schema_version")[0][0]
                      .as<int>();
      if (version == kSchemaVersion) return;
      if (version > kSchemaVersion)
        throw DbError("schema keymig is at version " + std::to_string(version) +
                          ", newer than this keymig understands (" +
                          std::to_string(kSchemaVersion) + "): upgrade keymig",
                      "KM001", false);
    }
    pqxx::work tx(c);
    // Several workers may start at once: one creates, the others wait and find it done.
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('keymig.schema'))");
    tx.exec("CREATE SCHEMA IF NOT EXISTS keymig");
    tx.exec(
        "CREATE TABLE IF NOT EXISTS keymig.schema_version (version int PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())");
    int version =
        tx.exec("SELECT coalesce(max(version), 0) FROM keymig.schema_version")[0][0].as<int>();
    for (int v = version + 1; v <= kSchemaVersion; ++v) {
      tx.exec(kMigrations[v - 1]);
      KEYMIG_LOG(info, "db", v == 1 ? "schema_created" : "schema_upgraded", {"schema", "keymig"},
                 {"version", v});
    }
    tx.commit();
  });
}

std::optional<Run> load_run(Connection& conn, const std::string& run_id) {
  return guarded(conn, "loading run " + run_id, [&](pqxx::connection& c) -> std::optional<Run> {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        std::string("SELECT ") + kRunColumns + " FROM keymig.runs WHERE run_id = $1", run_id);
    if (r.empty()) return std::nullopt;
    return to_run(r[0]);
  });
}

std::optional<Run> find_unfinished_run(Connection& conn, const std::string& target,
                                       const std::string& kind, const std::string& selection_json) {
  return guarded(conn, "looking for an unfinished run",
                 [&](pqxx::connection& c) -> std::optional<Run> {
                   pqxx::nontransaction tx(c);
                   auto r = tx.exec_params(std::string("SELECT ") + kRunColumns +
                                               " FROM keymig.runs WHERE target = $1 AND kind = $2"
                                               " AND state IN ('running', 'failed')"
                                               " AND coalesce(selection, 'null'::jsonb) = $3::jsonb"
                                               " ORDER BY started_at DESC, run_id DESC LIMIT 1",
                                           target, kind, selection_json);
                   if (r.empty()) return std::nullopt;
                   return to_run(r[0]);
                 });
}

std::vector<Run> list_runs(Connection& conn, int limit) {
  return guarded(conn, "listing runs", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec(std::string("SELECT ") + kRunColumns +
                     " FROM keymig.runs ORDER BY started_at DESC, run_id DESC LIMIT " +
                     std::to_string(limit));
    std::vector<Run> runs;
    for (const auto& row : r) runs.push_back(to_run(row));
    return runs;
  });
}

bool create_run(Connection& conn, const Run& run,
                const std::vector<std::optional<std::string>>& boundaries) {
  std::vector<std::string> rolling(run.rolling_fingerprints.begin(),
                                   run.rolling_fingerprints.end());
  return guarded(conn, "creating run " + run.run_id, [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "INSERT INTO keymig.runs (run_id, kind, target, state, active_fingerprint,"
        " rolling_fingerprints, selection, journal, host, pid, updated_at)"
        " VALUES ($1, $2, $3, 'running', $4, $5::text[], $6::jsonb, $7, $8, $9, now())"
        " ON CONFLICT (run_id) DO NOTHING RETURNING 1",
        run.run_id, run.kind, run.target, run.active_fingerprint, text_array(rolling),
        run.selection_json, run.journal, run.host, run.pid);
    if (r.empty()) return false;
    tx.exec_params(
        "INSERT INTO keymig.chunks (run_id, chunk_no, lo, hi)"
        " SELECT $1, (n - 1)::int, lag(b) OVER (ORDER BY n), b"
        "   FROM unnest($2::text[]) WITH ORDINALITY AS u(b, n)",
        run.run_id, nullable_array(boundaries));
    tx.commit();
    return true;
  });
}

void claim_run(Connection& conn, const std::string& run_id, const std::string& host, int pid) {
  guarded(conn, "claiming run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(
        "UPDATE keymig.runs SET state = 'running', host = $2, pid = $3, updated_at = now(),"
        " finished_at = NULL, error = NULL WHERE run_id = $1",
        run_id, host, pid);
  });
}

void set_run_state(Connection& conn, const std::string& run_id, const std::string& state,
                   const std::string& error) {
  guarded(conn, "updating run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(
        "UPDATE keymig.runs SET state = $2, updated_at = now(), error = nullif($3, ''),"
        " finished_at = CASE WHEN $2 IN ('running', 'failed') THEN finished_at ELSE now() END"
        " WHERE run_id = $1",
        run_id, state, error);
  });
}

void add_run_counts(Connection& conn, const std::string& run_id, const RunCounts& d) {
  guarded(conn, "updating run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(
        "UPDATE keymig.runs SET rows_scanned = rows_scanned + $2, rotated = rotated + $3,"
        " already_active = already_active + $4, flag_fixed = flag_fixed + $5,"
        " empty = empty + $6, undecryptable = undecryptable + $7, conflicts = conflicts + $8,"
        " updated_at = now() WHERE run_id = $1",
        run_id, d.rows_scanned, d.rotated, d.already_active, d.flag_fixed, d.empty, d.undecryptable,
        d.conflicts);
  });
}

bool complete_run_if_done(Connection& conn, const std::string& run_id) {
  return guarded(conn, "completing run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(
        "UPDATE keymig.runs SET state = 'completed', finished_at = now(), updated_at = now(),"
        " error = NULL WHERE run_id = $1 AND state IN ('running', 'failed', 'completed')"
        " AND NOT EXISTS (SELECT 1 FROM keymig.chunks WHERE run_id = $1 AND state <> 'done')"
        " RETURNING 1",
        run_id);
    return !r.empty();
  });
}

std::vector<std::optional<std::string>> chunk_boundaries(Connection& conn, const Table& t,
                                                         std::int64_t rows_per_chunk,
                                                         std::int64_t* total_rows) {
  const std::int64_t per = std::max<std::int64_t>(1, rows_per_chunk);
  // A walk along the id index, one chunk per step (an index-only scan of `per` entries
  // once the table is vacuumed), that counts the rows too: a window function over the
  // table plus a count(*) read it twice, a second and more per ten million rows.
  const std::string step = "SELECT t." + t.q_id + "::text FROM " + t.q_table + " AS t";
  const std::string order =
      " ORDER BY t." + t.q_id + " OFFSET " + std::to_string(per - 1) + " LIMIT 1";
  const std::string after = " WHERE t." + t.q_id + " > $1::" + t.id_type;
  return guarded(conn, "planning chunks", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    std::vector<std::optional<std::string>> out;
    for (;;) {
      auto r =
          out.empty() ? tx.exec(step + order) : tx.exec_params(step + after + order, *out.back());
      if (r.empty()) break;
      out.emplace_back(r[0][0].as<std::string>());
    }
    if (total_rows) {
      const std::string rest =
          "SELECT count(*) FROM " + t.q_table + " AS t" + (out.empty() ? std::string() : after);
      auto r = out.empty() ? tx.exec(rest) : tx.exec_params(rest, *out.back());
      *total_rows = static_cast<std::int64_t>(out.size()) * per + r[0][0].as<std::int64_t>();
    }
    out.emplace_back(std::nullopt);
    return out;
  });
}

std::optional<Chunk> lease_chunk(Connection& conn, const std::string& run_id,
                                 const std::string& worker) {
  return guarded(
      conn, "leasing a chunk of run " + run_id, [&](pqxx::connection& c) -> std::optional<Chunk> {
        // Prepared: a lane leases a chunk every few batches.
        static const std::string sql =
            std::string(
                "UPDATE keymig.chunks c SET state = 'leased', leased_by = $2,"
                " leased_pid = pg_backend_pid(), leased_backend_start = ") +
            kOwnBackendStart +
            " WHERE c.run_id = $1 AND c.chunk_no = (SELECT k.chunk_no FROM keymig.chunks k"
            "   WHERE k.run_id = $1 AND (k.state = 'pending' OR (k.state = 'leased' AND NOT " +
            kHolderAlive +
            "))"
            "   ORDER BY k.chunk_no LIMIT 1 FOR UPDATE OF k SKIP LOCKED)"
            // Asynchronous commit: a synchronous one flushed the WAL of every batch
            // written since, a stall of each lane at each chunk. A lease lost in a
            // crash is harmless: its holder's session died with it, so the chunk is
            // free again, from its last checkpoint that survived.
            "   AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
            " RETURNING c.chunk_no, c.lo, c.hi, c.checkpoint";
        const std::string statement = prepared(conn.impl(), sql);
        pqxx::nontransaction tx(c);
        auto r = tx.exec_prepared(statement, run_id, worker);
        if (r.empty()) return std::nullopt;
        Chunk ch;
        ch.chunk_no = r[0][0].as<int>();
        ch.lo = opt_text(r[0][1]);
        ch.hi = opt_text(r[0][2]);
        ch.checkpoint = opt_text(r[0][3]);
        return ch;
      });
}

void renew_leases(Connection& conn, const std::string& run_id, const std::string& worker) {
  guarded(conn, "renewing a lease of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(std::string("UPDATE keymig.chunks SET leased_pid = pg_backend_pid(),"
                               " leased_backend_start = ") +
                       kOwnBackendStart +
                       " WHERE run_id = $1 AND leased_by = $2 AND state = 'leased'",
                   run_id, worker);
  });
}

std::int64_t live_foreign_leases(Connection& conn, const std::string& run_id,
                                 const std::string& except_workers) {
  return guarded(conn, "reading leases of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx
        .exec_params(
            std::string("SELECT count(*) FROM keymig.chunks k WHERE k.run_id = $1"
                        " AND k.state = 'leased' AND k.leased_pid <> pg_backend_pid()"
                        " AND ($2 = '' OR left(coalesce(k.leased_by, ''), length($2)) <> $2)"
                        " AND ") +
                kHolderAlive,
            run_id, except_workers)[0][0]
        .as<std::int64_t>();
  });
}

std::vector<JournalEntry> read_journal(Connection& conn, const std::string& run_id,
                                       const std::optional<std::string>& after,
                                       std::int64_t limit) {
  std::string sql =
      "SELECT row_id, keymig.journal_text(old_token), keymig.journal_text(new_token), old_flag,"
      " new_flag FROM keymig.journal"
      " WHERE run_id = $1 AND ($2::text IS NULL OR row_id > $2::text) ORDER BY row_id LIMIT " +
      std::to_string(limit);
  return guarded(conn, "reading the journal of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, run_id, opt_param(after));
    std::vector<JournalEntry> out;
    out.reserve(r.size());
    for (const auto& row : r) {
      JournalEntry e;
      e.row_id = row[0].as<std::string>();
      e.old_null = row[1].is_null();
      if (!e.old_null) e.old_token = SecretString(std::string_view(row[1].c_str(), row[1].size()));
      e.new_null = row[2].is_null();
      if (!e.new_null) e.new_token = SecretString(std::string_view(row[2].c_str(), row[2].size()));
      e.old_flag = opt_bool(row[3]);
      e.new_flag = opt_bool(row[4]);
      out.push_back(std::move(e));
    }
    return out;
  });
}

std::int64_t journal_size(Connection& conn, const std::string& run_id) {
  return guarded(conn, "counting the journal of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec_params("SELECT count(*) FROM keymig.journal WHERE run_id = $1", run_id)[0][0]
        .as<std::int64_t>();
  });
}

RollbackPage rollback_page(Connection& conn, const Table& t, const std::string& run_id,
                           const std::optional<std::string>& after, std::int64_t limit) {
  auto as_secret = [&](const std::string& e) {
    return t.secret_is_bytea ? "convert_to(" + e + ", 'UTF8')" : e;
  };
  std::string sql =
      "WITH page AS (SELECT row_id, keymig.journal_text(old_token) AS old_token,"
      "   keymig.journal_text(new_token) AS new_token, old_flag FROM keymig.journal"
      "   WHERE run_id = $1 AND ($2::text IS NULL OR row_id > $2::text) ORDER BY row_id LIMIT " +
      std::to_string(limit) + "), upd AS (UPDATE " + t.q_table + " AS t SET " + t.q_secret + " = " +
      as_secret("j.old_token") +
      (t.has_flag() ? ", " + t.q_flag + " = coalesce(j.old_flag, t." + t.q_flag + ")"
                    : std::string()) +
      "   FROM page j WHERE t." + t.q_id + " = j.row_id::" + t.id_type +
      // CAS: only where the row still holds what keymig wrote (a cleared secret may read
      // as NULL or ''), or already holds the old token (a repeated rollback).
      "    AND (t." + t.q_secret + " IS NOT DISTINCT FROM " + as_secret("j.new_token") +
      "         OR (j.new_token IS NULL AND t." + t.q_secret +
      " = '')"
      "         OR t." +
      t.q_secret + " IS NOT DISTINCT FROM " + as_secret("j.old_token") +
      ")"
      "  RETURNING j.row_id)"
      " SELECT p.row_id, u.row_id IS NOT NULL FROM page p LEFT JOIN upd u USING (row_id)"
      " ORDER BY p.row_id";
  return guarded(conn, "rolling back run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, run_id, opt_param(after));
    RollbackPage page;
    page.rows = static_cast<std::int64_t>(r.size());
    for (const auto& row : r) {
      std::string id = row[0].as<std::string>();
      (row[1].as<bool>() ? page.restored : page.left).push_back(id);
      page.last = std::move(id);
    }
    return page;
  });
}

std::int64_t delete_journal(Connection& conn, const std::string& run_id) {
  return guarded(conn, "deleting the journal of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return static_cast<std::int64_t>(
        tx.exec_params("DELETE FROM keymig.journal WHERE run_id = $1", run_id).affected_rows());
  });
}

std::pair<std::int64_t, std::int64_t> purge_journals(Connection& conn,
                                                     std::chrono::seconds older_than) {
  return guarded(conn, "purging journals", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // Age is the run's last activity: a run idle that long is not running any more.
    auto r = tx.exec_params(
        "WITH r AS (SELECT run_id FROM keymig.runs"
        "   WHERE coalesce(finished_at, updated_at, started_at) < now() - make_interval(secs => "
        "$1)),"
        " d AS (DELETE FROM keymig.journal j USING r WHERE j.run_id = r.run_id RETURNING j.run_id)"
        " SELECT count(DISTINCT run_id), count(*) FROM d",
        static_cast<double>(older_than.count()));
    return std::make_pair(r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>());
  });
}

}  // namespace keymig::db
