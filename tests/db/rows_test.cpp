#include "keymig/db/rows.hpp"

#include <catch2/catch.hpp>
#include <set>

#include "keymig/db/runs.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::SecretString;
using keymig::db::TargetSpec;

namespace {

std::vector<std::string> page_all(keymig::db::Connection& conn, const keymig::db::Table& t,
                                  std::int64_t limit, std::optional<std::string> upto = {}) {
  std::vector<std::string> ids;
  keymig::db::PageQuery q;
  q.limit = limit;
  q.upto = upto;
  while (true) {
    auto rows = keymig::db::read_page(conn, t, q);
    for (const auto& r : rows) ids.push_back(r.id);
    if (static_cast<std::int64_t>(rows.size()) < limit) break;
    q.after = rows.back().id;
  }
  return ids;
}

}  // namespace

TEST_CASE("keyset pages visit every row once in the id's own order", "[db][rows]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_rows CASCADE; CREATE SCHEMA h3a_rows;"
      "CREATE TABLE h3a_rows.b (id bigint PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.b SELECT g, 'x' || g FROM generate_series(1, 1003) g;"
      "CREATE TABLE h3a_rows.u (id uuid PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.u SELECT md5(g::text)::uuid, 'x' FROM generate_series(1, 257) g;"
      "CREATE TABLE h3a_rows.t (id text PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.t SELECT 'k' || g, 'x' FROM generate_series(1, 301) g;"
      "INSERT INTO h3a_rows.t VALUES ('with \"quote', 'y'), ('back\\slash', 'y'), ('', 'z');");
  keymig::db::Connection conn(test_options());

  SECTION("bigint ids compare as numbers, not text") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.b", "id", "s", "", ""});
    auto ids = page_all(conn, t, 100);
    REQUIRE(ids.size() == 1003);
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == std::to_string(i + 1));
    auto bounded = page_all(conn, t, 7, std::string("50"));
    CHECK(bounded.size() == 50);
  }
  SECTION("uuid ids") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.u", "id", "s", "", ""});
    auto ids = page_all(conn, t, 10);
    CHECK(ids.size() == 257);
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 257);
    CHECK(ids == page_all(conn, t, 1000));
  }
  SECTION("text ids, including quotes, backslashes and the empty string") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.t", "id", "s", "", ""});
    auto ids = page_all(conn, t, 16);
    CHECK(ids.size() == 304);
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 304);
    auto rows = keymig::db::read_rows(conn, t, {"with \"quote", "back\\slash", "k7", "missing"});
    CHECK(rows.size() == 3);
  }
  SECTION("a selection filters pages and reports what matched nothing") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.b", "id", "s", "", ""});
    keymig::db::Selection f;
    f.ids = {"5", "900", "77777"};
    keymig::db::PageQuery q;
    q.filter = &f;
    auto rows = keymig::db::read_page(conn, t, q);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].id == "5");
    CHECK(keymig::db::missing_selection(conn, t, f) == std::vector<std::string>{"77777"});
    f.ids = {"not-a-number"};
    CHECK_THROWS_AS(keymig::db::missing_selection(conn, t, f), keymig::db::TargetError);
    keymig::db::Selection by_name;
    by_name.usernames = {"ann"};
    CHECK_THROWS_AS(keymig::db::count_rows(conn, t, &by_name), keymig::db::TargetError);
  }
}

TEST_CASE("a batch write is a compare-and-swap: a concurrent change is a conflict", "[db][rows]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_cas CASCADE; CREATE SCHEMA h3a_cas;"
      "CREATE TABLE h3a_cas.users (id int PRIMARY KEY, tok text, flag boolean);"
      "INSERT INTO h3a_cas.users VALUES (1, 'old1', false), (2, 'old2', false), (3, 'act3', false);"
      "CREATE TABLE h3a_cas.bin (id int PRIMARY KEY, tok bytea);"
      "INSERT INTO h3a_cas.bin VALUES (1, 'old1'::bytea);");
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  auto t = keymig::db::check_target(conn, TargetSpec{"h3a_cas.users", "id", "tok", "flag", ""});
  const std::string run_id =
      "h3a-cas-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  keymig::db::Run run;
  run.run_id = run_id;
  run.target = t.label();
  REQUIRE(keymig::db::create_run(conn, run, {std::nullopt}));

  // Row 2 changes under us after it was read.
  sql("UPDATE h3a_cas.users SET tok = 'app-wrote' WHERE id = 2");
  std::vector<keymig::db::Change> changes;
  auto change = [&](std::string id, const char* old_tok, const char* new_tok) {
    keymig::db::Change c;
    c.id = std::move(id);
    c.old_token = SecretString(std::string_view(old_tok));
    c.new_token = SecretString(std::string_view(new_tok));
    c.old_flag = false;
    changes.push_back(std::move(c));
  };
  change("1", "old1", "new1");
  change("2", "old2", "new2");
  change("3", "act3", "act3");  // flag-only fix
  keymig::db::BatchContext ctx;
  ctx.run_id = run_id;
  ctx.chunk = keymig::db::ChunkStep{0, std::nullopt, "3", false};
  ctx.counts.rows_scanned = 3;
  auto res = keymig::db::write_batch(conn, t, changes, ctx);
  CHECK(res.missed == std::vector<std::string>{"2"});
  CHECK(res.rotated == 1);
  CHECK(res.flag_fixed == 1);
  CHECK(sql_value("SELECT tok FROM h3a_cas.users WHERE id = 1") == "new1");
  CHECK(sql_value("SELECT tok FROM h3a_cas.users WHERE id = 2") == "app-wrote");
  CHECK(sql_value("SELECT flag FROM h3a_cas.users WHERE id = 3") == "t");
  CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + run_id + "'") == "2");
  CHECK(sql_value("SELECT conflicts FROM keymig.runs WHERE run_id = '" + run_id + "'") == "1");
  CHECK(sql_value("SELECT checkpoint FROM keymig.chunks WHERE run_id = '" + run_id + "'") == "3");

  SECTION("repeating a batch after an ambiguous commit counts it once") {
    ctx.chunk->from = std::nullopt;  // as the first attempt saw it
    auto again = keymig::db::write_batch(conn, t, changes, ctx);
    // Row 1 holds our new token and row 3 its flag: applied before; row 2 missed again.
    CHECK(again.missed == std::vector<std::string>{"2"});
    CHECK(again.rotated == 1);
    CHECK(again.flag_fixed == 1);
    CHECK(sql_value("SELECT rotated FROM keymig.runs WHERE run_id = '" + run_id + "'") == "1");
    CHECK(sql_value("SELECT rows_scanned FROM keymig.runs WHERE run_id = '" + run_id + "'") == "3");
    CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + run_id + "'") == "2");
  }
  SECTION("a batch whose chunk checkpoint moved writes nothing and stops the lane") {
    // As after a crash that lost this worker's last commit: the batch expects checkpoint
    // "7", the database still says "3".
    sql("UPDATE h3a_cas.users SET tok = 'old4' WHERE id = 2");
    std::vector<keymig::db::Change> next;
    keymig::db::Change c;
    c.id = "2";
    c.old_token = SecretString(std::string_view("old4"));
    c.new_token = SecretString(std::string_view("new4"));
    c.old_flag = false;
    next.push_back(std::move(c));
    keymig::db::BatchContext later;
    later.run_id = ctx.run_id;
    later.counts = ctx.counts;
    later.chunk = keymig::db::ChunkStep{0, "7", "9", false};
    try {
      (void)keymig::db::write_batch(conn, t, next, later);
      FAIL("write_batch accepted a batch whose chunk moved");
    } catch (const keymig::db::DbError& e) {
      CHECK_FALSE(e.retryable());
      CHECK(std::string(e.what()).find("moved under this worker") != std::string::npos);
    }
    CHECK(sql_value("SELECT tok FROM h3a_cas.users WHERE id = 2") == "old4");
    CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + run_id + "'") == "2");
    CHECK(sql_value("SELECT checkpoint FROM keymig.chunks WHERE run_id = '" + run_id + "'") == "3");
  }
  SECTION("rollback restores what still holds the new token and leaves the rest") {
    sql("UPDATE h3a_cas.users SET tok = 'user-reenrolled' WHERE id = 3");
    auto page = keymig::db::rollback_page(conn, t, run_id, std::nullopt, 100);
    CHECK(page.rows == 2);
    CHECK(page.restored == std::vector<std::string>{"1"});
    CHECK(page.left == std::vector<std::string>{"3"});
    CHECK(sql_value("SELECT tok FROM h3a_cas.users WHERE id = 1") == "old1");
    CHECK(sql_value("SELECT flag FROM h3a_cas.users WHERE id = 1") == "f");
    CHECK(sql_value("SELECT tok FROM h3a_cas.users WHERE id = 3") == "user-reenrolled");
  }
  SECTION("bytea secrets are compared and written as the token's bytes") {
    auto b = keymig::db::check_target(conn, TargetSpec{"h3a_cas.bin", "id", "tok", "", ""});
    auto rows = keymig::db::read_rows(conn, b, {"1"});
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].token.view() == "old1");
    std::vector<keymig::db::Change> one;
    keymig::db::Change c;
    c.id = "1";
    c.old_token = SecretString(std::string_view("old1"));
    c.new_token = SecretString(std::string_view("new1"));
    one.push_back(std::move(c));
    keymig::db::BatchContext bctx;
    bctx.run_id = run_id;
    auto r = keymig::db::write_batch(conn, b, one, bctx);
    CHECK(r.missed.empty());
    CHECK(r.rotated == 1);
    CHECK(sql_value("SELECT convert_from(tok, 'UTF8') FROM h3a_cas.bin WHERE id = 1") == "new1");
  }
}

TEST_CASE("chunks are leased once while their holder's session lives", "[db][runs]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_chunks CASCADE; CREATE SCHEMA h3a_chunks;"
      "CREATE TABLE h3a_chunks.t (id int PRIMARY KEY, s text);"
      "INSERT INTO h3a_chunks.t SELECT g, 'x' FROM generate_series(1, 95) g;");
  keymig::db::Connection a(test_options());
  keymig::db::ensure_schema(a);
  auto t = keymig::db::check_target(a, TargetSpec{"h3a_chunks.t", "id", "s", "", ""});
  auto bounds = keymig::db::chunk_boundaries(a, t, 30);
  REQUIRE(bounds.size() == 4);  // 30, 60, 90, open
  CHECK(bounds[0] == std::optional<std::string>("30"));
  CHECK_FALSE(bounds[3].has_value());
  keymig::db::Run run;
  run.run_id =
      "h3a-chunks-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  run.target = t.label();
  REQUIRE(keymig::db::create_run(a, run, bounds));
  CHECK_FALSE(keymig::db::create_run(a, run, bounds));  // exists: joined, not duplicated

  auto first = keymig::db::lease_chunk(a, run.run_id, "a");
  REQUIRE(first);
  CHECK(first->chunk_no == 0);
  CHECK_FALSE(first->lo.has_value());
  {
    keymig::db::Connection b(test_options());
    auto second = keymig::db::lease_chunk(b, run.run_id, "b");
    REQUIRE(second);
    CHECK(second->chunk_no == 1);
    CHECK(second->lo == std::optional<std::string>("30"));
    CHECK(keymig::db::live_foreign_leases(a, run.run_id) == 1);
    // A process does not wait for its own lanes: their names share its prefix.
    CHECK(keymig::db::live_foreign_leases(a, run.run_id, "b") == 0);
    CHECK(keymig::db::live_foreign_leases(a, run.run_id, "c") == 1);
  }
  // b's session ended: its chunk is free at once (a short wait for the backend to exit).
  std::optional<keymig::db::Chunk> again;
  for (int i = 0; i < 50 && !(again && again->chunk_no == 1); ++i) {
    sql("SELECT pg_sleep(0.05)");
    again = keymig::db::lease_chunk(a, run.run_id, "a");
  }
  REQUIRE(again);
  CHECK(again->chunk_no == 1);
  CHECK_FALSE(keymig::db::complete_run_if_done(a, run.run_id));
}

TEST_CASE("autovacuum leaves a growing journal alone but still vacuums after deletes",
          "[db][runs]") {
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

TEST_CASE("the journal keeps a canonical token as its bytes and any other text as it was",
          "[db][rows]") {
  KEYMIG_REQUIRE_DB();
  // The Fernet specification's token: canonical, 100 characters for 73 bytes.
  const std::string spec =
      "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmp"
      "U4IwqDA==";
  const std::vector<std::pair<std::string, std::string>> olds = {
      {"1", spec},
      {"2", spec.substr(0, spec.size() - 2)},  // unpadded: does not spell itself back
      {"3", "AAAA"},                           // canonical, but not a Fernet token's bytes
      {"4", "gAAA+AAA"},                       // the standard alphabet
      {"5", " " + spec},                       // whitespace
      {"6", "g\xc3\xbcn"},                     // UTF-8 beyond ASCII
      {"7", ""},
  };
  sql("DROP SCHEMA IF EXISTS h5_journal CASCADE; CREATE SCHEMA h5_journal;"
      "CREATE TABLE h5_journal.users (id int PRIMARY KEY, tok text);"
      "CREATE TABLE h5_journal.bin (id int PRIMARY KEY, tok bytea);");
  for (const auto& [id, tok] : olds) {
    pqxx::connection c(test_dsn());
    pqxx::nontransaction tx(c);
    tx.exec_params("INSERT INTO h5_journal.users VALUES ($1::int, $2)", id, tok);
    tx.exec_params("INSERT INTO h5_journal.bin VALUES ($1::int, convert_to($2, 'UTF8'))", id, tok);
  }
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);

  for (const char* table : {"h5_journal.users", "h5_journal.bin"}) {
    auto t = keymig::db::check_target(conn, TargetSpec{table, "id", "tok", "", ""});
    const std::string run_id =
        "h5-" + std::string(table) + "-" +
        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    keymig::db::Run run;
    run.run_id = run_id;
    run.target = t.label();
    run.journal = true;
    REQUIRE(keymig::db::create_run(conn, run, {std::nullopt}));
    std::vector<keymig::db::Change> changes;
    for (const auto& [id, tok] : olds) {
      keymig::db::Change c;
      c.id = id;
      c.old_token = SecretString(std::string_view(tok));
      c.new_token = SecretString(std::string_view(spec));
      changes.push_back(std::move(c));
    }
    keymig::db::BatchContext ctx;
    ctx.run_id = run_id;
    ctx.journal = true;
    ctx.chunk = keymig::db::ChunkStep{0, std::nullopt, "7", false};
    ctx.counts.rows_scanned = static_cast<std::int64_t>(olds.size());
    auto res = keymig::db::write_batch(conn, t, changes, ctx);
    CHECK(res.missed.empty());
    CHECK(res.rotated == static_cast<std::int64_t>(olds.size()) - 1);  // row 1 already held it

    const std::string where = " FROM keymig.journal WHERE run_id = '" + run_id + "'";
    // Only the canonical Fernet token is kept as its bytes (the version byte first); the
    // rest carry the 0x00 tag and their text.
    CHECK(sql_value("SELECT string_agg(row_id || ':' || get_byte(old_token, 0), ',' ORDER BY "
                    "row_id)" +
                    where) == "1:128,2:0,3:0,4:0,5:0,6:0,7:0");
    CHECK(sql_value("SELECT octet_length(new_token)" + where + " AND row_id = '1'") == "73");
    CHECK(sql_value("SELECT count(*)" + where + " AND keymig.journal_text(new_token) = '" + spec +
                    "'") == "7");
    auto entries = keymig::db::read_journal(conn, run_id, std::nullopt, 100);
    REQUIRE(entries.size() == olds.size());
    for (std::size_t i = 0; i < olds.size(); ++i) {
      INFO("row " << olds[i].first);
      CHECK(entries[i].row_id == olds[i].first);
      CHECK_FALSE(entries[i].old_null);
      CHECK(entries[i].old_token.view() == olds[i].second);
      CHECK(entries[i].new_token.view() == spec);
    }
    // Rollback writes back exactly what each row held.
    auto page = keymig::db::rollback_page(conn, t, run_id, std::nullopt, 100);
    CHECK(page.restored.size() == olds.size());
    const std::string as_text =
        std::string(table) == "h5_journal.bin" ? "convert_from(tok, 'UTF8')" : "tok";
    for (const auto& [id, tok] : olds) {
      pqxx::connection c(test_dsn());
      pqxx::nontransaction tx(c);
      auto r = tx.exec_params("SELECT " + as_text + " FROM " + table + " WHERE id = $1::int", id);
      INFO(table << " row " << id);
      CHECK(r.at(0)[0].as<std::string>() == tok);
    }
  }
}

TEST_CASE("schema version 5 converts a journal written as text, and keeps every token",
          "[db][runs]") {
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
      "DELETE FROM keymig.schema_version WHERE version = 5;"
      "INSERT INTO keymig.journal (run_id, row_id, old_token, new_token) VALUES"
      "  ('h5-upgrade', '1', '" +
      spec +
      "', NULL), ('h5-upgrade', '2', 'g\xc3\xbcn', ''), ('h5-upgrade', '3', NULL, 'x');"
      "COMMIT;");
  keymig::db::ensure_schema(conn);
  CHECK(sql_value("SELECT max(version) FROM keymig.schema_version") == "5");
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
