#include "keymig/db/schema.hpp"

#include <catch2/catch.hpp>

#include "keymig/db/journal.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("autovacuum leaves a growing journal alone but still vacuums after deletes",
          "[db][schema]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  CHECK(sql_value("SELECT max(version) FROM keymig.schema_version") ==
        std::to_string(keymig::db::kSchemaVersion));
  const std::string options = sql_value(
      "SELECT array_to_string(reloptions, ',') FROM pg_class"
      " WHERE oid = 'keymig.journal'::regclass");
  CHECK(options.find("autovacuum_vacuum_insert_threshold=-1") != std::string::npos);
  CHECK(options.find("autovacuum_analyze_threshold=2147483647") != std::string::npos);
  // The vacuum that reclaims finalize's and purge's deletes is not switched off.
  CHECK(options.find("autovacuum_enabled") == std::string::npos);
}

TEST_CASE("schema version 5 converts a journal written as text, and keeps every token",
          "[db][schema]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  const std::string spec =
      "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmp"
      "U4IwqDA==";
  // Back to version 4's journal (text tokens, migrated_at), with rows in it.
  sql("BEGIN;"
      "DELETE FROM keymig.journal WHERE run_id = 'h5-upgrade';"
      "ALTER TABLE keymig.journal"
      "  ALTER COLUMN old_token TYPE text USING keymig.journal_text(old_token),"
      "  ALTER COLUMN new_token TYPE text USING keymig.journal_text(new_token),"
      "  ADD COLUMN migrated_at timestamptz NOT NULL DEFAULT now();"
      "DROP FUNCTION keymig.journal_text(bytea);"
      "DROP FUNCTION keymig.journal_bytes(text);"
      "DELETE FROM keymig.schema_version WHERE version >= 5;"
      "INSERT INTO keymig.journal (run_id, row_id, old_token, new_token) VALUES"
      "  ('h5-upgrade', '1', '" +
      spec +
      "', NULL), ('h5-upgrade', '2', 'g\xc3\xbcn', ''), ('h5-upgrade', '3', NULL, 'x');"
      "COMMIT;");
  keymig::db::ensure_schema(conn);
  CHECK(sql_value("SELECT max(version) FROM keymig.schema_version") ==
        std::to_string(keymig::db::kSchemaVersion));
  CHECK(sql_value("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                  " 'keymig.journal'::regclass AND attname = 'old_token'") == "bytea");
  auto entries = keymig::db::read_journal(conn, "h5-upgrade", std::nullopt, 10);
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].old_token.view() == spec);
  CHECK(entries[0].new_null);
  CHECK(entries[1].old_token.view() == "g\xc3\xbcn");
  CHECK_FALSE(entries[1].new_null);
  CHECK(entries[1].new_token.view().empty());
  CHECK(entries[2].old_null);
  CHECK(entries[2].new_token.view() == "x");
  sql("DELETE FROM keymig.journal WHERE run_id = 'h5-upgrade'");
}
