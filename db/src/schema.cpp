#include "keymig/db/schema.hpp"

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

// Version 6: what the safety checks of a run and of the request queue record.
// runs.rejected counts rows the database refused one by one (a CHECK, a trigger that
// raises, a column too short) after their batch was split; runs.rewritten counts rows
// whose stored value is not the token keymig wrote (a BEFORE UPDATE trigger changed it),
// whose journal rows finalize must keep. runs.journal_purged_at marks a run whose journal
// `journal purge` deleted, so that rollback refuses it rather than restore nothing.
// requests.target names the table a request is for, so that several serve deployments
// on one database each claim only their own; claimed_pid and claimed_backend_start name
// the claiming session, whose liveness is checked by backend pid (application_name is
// cut to 63 bytes and cannot identify it). IF NOT EXISTS: the upgrade tests replay it.
const char* const kSchemaV6 = R"SQL(
ALTER TABLE keymig.runs ADD COLUMN IF NOT EXISTS rejected bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS rewritten bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS journal_purged_at timestamptz;
ALTER TABLE keymig.requests ADD COLUMN IF NOT EXISTS target text,
  ADD COLUMN IF NOT EXISTS claimed_pid int,
  ADD COLUMN IF NOT EXISTS claimed_backend_start timestamptz;
INSERT INTO keymig.schema_version (version) VALUES (6);
)SQL";

// Version 7: what an operator needs to trust a run's judgement. keymig.scans keeps the
// last whole-target scan or verify of each target (counts by key fingerprint,
// undecryptable rows and how many of them were acknowledged), so that a migrate can
// refuse to leave more rows unreadable than the operator last saw. Rows in
// keymig.acknowledged are undecryptable rows an operator has looked at and accepted
// (orphans no key reads): reported, but they no longer fail a run; a new one still does.
// requests.requested_by and requests.reason are the audit trail the admin UI fills in.
const char* const kSchemaV7 = R"SQL(
CREATE TABLE IF NOT EXISTS keymig.scans (
  target text COLLATE "C" PRIMARY KEY,
  command text NOT NULL,
  scanned_at timestamptz NOT NULL DEFAULT now(),
  rows_scanned bigint NOT NULL,
  undecryptable bigint NOT NULL,
  acknowledged bigint NOT NULL DEFAULT 0,
  counts jsonb NOT NULL,
  active_fingerprint text,
  rolling_fingerprints text[]
);
CREATE TABLE IF NOT EXISTS keymig.acknowledged (
  target text COLLATE "C",
  row_id text COLLATE "C",
  reason text NOT NULL,
  acknowledged_by text NOT NULL,
  acknowledged_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (target, row_id)
);
ALTER TABLE keymig.requests ADD COLUMN IF NOT EXISTS requested_by text,
  ADD COLUMN IF NOT EXISTS reason text;
INSERT INTO keymig.schema_version (version) VALUES (7);
)SQL";

// kMigrations[v - 1] takes the schema from version v - 1 to v.
const char* const kSchemaV8 = R"SQL(
ALTER TABLE keymig.runs ADD COLUMN IF NOT EXISTS run_group text COLLATE "C";
ALTER TABLE keymig.runs ADD COLUMN IF NOT EXISTS group_targets text[];
CREATE INDEX IF NOT EXISTS runs_run_group ON keymig.runs (run_group) WHERE run_group IS NOT NULL;
INSERT INTO keymig.schema_version (version) VALUES (8);
)SQL";

const char* const kMigrations[] = {kSchemaV1, kSchemaV2, kSchemaV3, kSchemaV4,
                                   kSchemaV5, kSchemaV6, kSchemaV7, kSchemaV8};
static_assert(std::size(kMigrations) == kSchemaVersion, "one migration per schema version");

// A role that may not create schema keymig, or may not upgrade it, hears which privilege
// it lacks and how to get it; the migration runs in one transaction, so nothing of it
// was made.
[[noreturn]] void refuse_privilege(Connection& conn, const DbError& e) {
  std::string who = "this role";
  try {
    who = guarded(conn, "", [](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      const auto r = tx.exec("SELECT current_user::text, current_database()::text");
      return "role " + r[0][0].as<std::string>() + " on database " + r[0][1].as<std::string>();
    });
  } catch (const keymig::Error&) {
  }
  throw TargetError(std::string(e.what()) + ": " + who +
                    " needs to own schema keymig (or CREATE on the database to make it); "
                    "nothing was created. An administrator can grant exactly that with "
                    "scripts/keymig-role.sql (docs/operations.md, \"Least privilege\")");
}

void create_or_upgrade(Connection& conn) {
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
    // CREATE SCHEMA checks the database's CREATE privilege even when the schema exists
    // (IF NOT EXISTS included): a role that owns schema keymig but may not create schemas
    // must still be able to upgrade it.
    if (tx.exec("SELECT to_regnamespace('keymig')")[0][0].is_null())
      tx.exec("CREATE SCHEMA keymig");
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

}  // namespace

void ensure_schema(Connection& conn) {
  try {
    create_or_upgrade(conn);
  } catch (const DbError& e) {
    if (e.sqlstate() == "42501") refuse_privilege(conn, e);
    throw;
  }
}

}  // namespace keymig::db
