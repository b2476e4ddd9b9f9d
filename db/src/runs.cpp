#include "keymig/db/runs.hpp"

#include "pq.hpp"

namespace keymig::db {

namespace {

const char* const kRunColumns =
    "run_id, kind, target, state, coalesce(active_fingerprint, ''),"
    " coalesce(array_to_string(rolling_fingerprints, ','), ''), coalesce(selection::text, 'null'),"
    " journal, checkpoint, rows_scanned, rotated, already_active, flag_fixed, empty,"
    " undecryptable, conflicts, coalesce(host, ''), coalesce(pid, 0), started_at::text,"
    " coalesce(updated_at::text, ''), coalesce(finished_at::text, ''), coalesce(error, ''),"
    " coalesce(journal_purged_at::text, ''), rejected, rewritten, coalesce(run_group, '')";

// The first key of a run's advisory lock ('kmrn'), the second the hash of its id: apart
// from the target locks ('kmig', lock.cpp). Two runs whose ids share a hash merely
// exclude each other's rollback and migrate, which is safe.
constexpr int kRunLockSpace = 0x6b6d726e;

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
  run.journal_purged_at = r[22].as<std::string>();
  run.counts.rejected = r[23].as<std::int64_t>();
  run.counts.rewritten = r[24].as<std::int64_t>();
  run.run_group = r[25].as<std::string>();
  return run;
}

}  // namespace

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
  return guarded(conn, "creating run " + run.run_id, [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "INSERT INTO keymig.runs (run_id, kind, target, state, active_fingerprint,"
        " rolling_fingerprints, selection, journal, host, pid, updated_at, run_group,"
        " group_targets)"
        " VALUES ($1, $2, $3, 'running', $4, $5::text[], $6::jsonb, $7, $8, $9, now(),"
        "         nullif($10, ''), CASE WHEN $10 = '' THEN NULL ELSE $11::text[] END)"
        " ON CONFLICT (run_id) DO NOTHING RETURNING 1",
        run.run_id, run.kind, run.target, run.active_fingerprint,
        text_array(run.rolling_fingerprints), run.selection_json, run.journal, run.host, run.pid,
        run.run_group, text_array(run.group_targets));
    if (r.empty()) return false;
    tx.exec_params(
        "INSERT INTO keymig.chunks (run_id, chunk_no, lo, hi)"
        " SELECT $1, (n - 1)::int, lag(b) OVER (ORDER BY n), b"
        "   FROM unnest($2::text[]) WITH ORDINALITY AS u(b, n)",
        run.run_id, text_array(boundaries));
    tx.commit();
    return true;
  });
}

std::optional<std::string> find_unfinished_group(Connection& conn,
                                                 const std::vector<std::string>& target_names,
                                                 const std::string& selection_json,
                                                 const std::string& active_fingerprint) {
  return guarded(conn, "looking for an unfinished run",
                 [&](pqxx::connection& c) -> std::optional<std::string> {
                   pqxx::nontransaction tx(c);
                   auto r = tx.exec_params(
                       "SELECT run_group FROM keymig.runs WHERE run_group IS NOT NULL"
                       " AND kind = 'migrate'"
                       " AND group_targets @> $1::text[] AND group_targets <@ $1::text[]"
                       " AND coalesce(selection, 'null'::jsonb) = $2::jsonb"
                       " AND coalesce(active_fingerprint, '') IN ('', $3)"
                       " GROUP BY run_group"
                       " HAVING NOT bool_or(state IN ('rolled_back', 'finalized'))"
                       "    AND (bool_or(state IN ('running', 'failed'))"
                       "         OR count(*) < max(cardinality(group_targets)))"
                       " ORDER BY max(started_at) DESC, run_group DESC LIMIT 1",
                       text_array(target_names), selection_json, active_fingerprint);
                   if (r.empty()) return std::nullopt;
                   return r[0][0].as<std::string>();
                 });
}

std::vector<Run> group_runs(Connection& conn, const std::string& run_group) {
  return guarded(conn, "loading run " + run_group, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(std::string("SELECT ") + kRunColumns +
                                " FROM keymig.runs WHERE run_group = $1 ORDER BY run_id",
                            run_group);
    std::vector<Run> runs;
    for (const auto& row : r) runs.push_back(to_run(row));
    return runs;
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
        " rejected = rejected + $9, rewritten = rewritten + $10,"
        " updated_at = now() WHERE run_id = $1",
        run_id, d.rows_scanned, d.rotated, d.already_active, d.flag_fixed, d.empty, d.undecryptable,
        d.conflicts, d.rejected, d.rewritten);
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

bool try_lock_run(Connection& conn, const std::string& run_id, bool exclusive) {
  return guarded(conn, "locking run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx
        .exec_params(std::string("SELECT ") +
                         (exclusive ? "pg_try_advisory_lock" : "pg_try_advisory_lock_shared") +
                         "($1, hashtext($2))",
                     kRunLockSpace, run_id)[0][0]
        .as<bool>();
  });
}

}  // namespace keymig::db
