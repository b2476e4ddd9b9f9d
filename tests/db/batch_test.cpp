#include "keymig/db/batch.hpp"

#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/journal.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::SecretString;
using keymig::db::TargetSpec;

TEST_CASE("a batch write is a compare-and-swap: a concurrent change is a conflict", "[db][batch]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_cas CASCADE; CREATE SCHEMA h3a_cas;"
      "CREATE TABLE h3a_cas.users (id int PRIMARY KEY, tok text, flag boolean);"
      "INSERT INTO h3a_cas.users VALUES (1, 'old1', false), (2, 'old2', false), (3, 'act3', false);"
      "CREATE TABLE h3a_cas.bin (id int PRIMARY KEY, tok bytea);"
      "INSERT INTO h3a_cas.bin VALUES (1, 'old1'::bytea);");
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  auto t = keymig::db::check_target(conn,
                                    TargetSpec{"h3a_cas.users", "id", "tok", "flag", "", "", true});
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
    auto b =
        keymig::db::check_target(conn, TargetSpec{"h3a_cas.bin", "id", "tok", "", "", "", true});
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

namespace {

keymig::db::Change make_change(std::string id, std::string_view old_tok, std::string_view new_tok) {
  keymig::db::Change c;
  c.id = std::move(id);
  c.old_token = SecretString(old_tok);
  c.new_token = SecretString(new_tok);
  c.old_flag = false;
  return c;
}

std::string new_run(keymig::db::Connection& conn, const keymig::db::Table& t,
                    const std::string& prefix) {
  const std::string run_id =
      prefix + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  keymig::db::Run run;
  run.run_id = run_id;
  run.target = t.label();
  REQUIRE(keymig::db::create_run(conn, run, {std::nullopt}));
  return run_id;
}

std::string run_value(const std::string& run_id, const std::string& column) {
  return sql_value("SELECT " + column + " FROM keymig.runs WHERE run_id = '" + run_id + "'");
}

}  // namespace

TEST_CASE("a batch checks what the database stored: a BEFORE UPDATE trigger's rewrite is counted",
          "[db][batch]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_rw CASCADE; CREATE SCHEMA h3a_rw;"
      "CREATE TABLE h3a_rw.users (id int PRIMARY KEY, tok text, flag boolean);"
      "INSERT INTO h3a_rw.users SELECT g, 'old' || g, false FROM generate_series(1, 4) g;"
      "CREATE FUNCTION h3a_rw.mangle() RETURNS trigger LANGUAGE plpgsql AS $$"
      " BEGIN IF NEW.id = 2 THEN NEW.tok := 'mangled'; END IF; RETURN NEW; END $$;"
      "CREATE TRIGGER mangle BEFORE UPDATE ON h3a_rw.users FOR EACH ROW"
      " EXECUTE FUNCTION h3a_rw.mangle();");
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  auto t =
      keymig::db::check_target(conn, TargetSpec{"h3a_rw.users", "id", "tok", "flag", "", "", true});
  const std::string run_id = new_run(conn, t, "h3a-rw-");
  std::vector<keymig::db::Change> changes;
  for (int i = 1; i <= 4; ++i)
    changes.push_back(
        make_change(std::to_string(i), "old" + std::to_string(i), "new" + std::to_string(i)));
  keymig::db::BatchContext ctx;
  ctx.run_id = run_id;
  ctx.chunk = keymig::db::ChunkStep{0, std::nullopt, "4", true};
  ctx.counts.rows_scanned = 4;
  auto res = keymig::db::write_batch(conn, t, changes, ctx);
  CHECK(res.rewritten == std::vector<std::string>{"2"});
  CHECK(res.missed.empty());
  CHECK(res.rotated == 3);
  CHECK(run_value(run_id, "rotated") == "3");
  CHECK(run_value(run_id, "rewritten") == "1");
  CHECK(run_value(run_id, "conflicts") == "0");
  // The journal keeps what was stored, so that rollback finds the row and restores it.
  CHECK(sql_value("SELECT keymig.journal_text(new_token) FROM keymig.journal WHERE run_id = '" +
                  run_id + "' AND row_id = '2'") == "mangled");

  SECTION("a repeat after a lost reply recognises the rewritten row") {
    ctx.chunk->from = std::nullopt;
    auto again = keymig::db::write_batch(conn, t, changes, ctx);
    CHECK(again.rewritten == std::vector<std::string>{"2"});
    CHECK(again.rotated == 3);
    CHECK(again.missed.empty());
    CHECK(run_value(run_id, "rewritten") == "1");
  }
  SECTION("rollback restores the rewritten row's old token") {
    sql("DROP TRIGGER mangle ON h3a_rw.users");
    auto page = keymig::db::rollback_page(conn, t, run_id, std::nullopt, 100);
    CHECK(page.restored.size() == 4);
    CHECK(sql_value("SELECT tok FROM h3a_rw.users WHERE id = 2") == "old2");
  }
}

TEST_CASE("a row the database refuses is split out and the rest written with one checkpoint move",
          "[db][batch]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_rej CASCADE; CREATE SCHEMA h3a_rej;"
      "CREATE TABLE h3a_rej.users (id int PRIMARY KEY, tok text, flag boolean,"
      " CONSTRAINT short_enough CHECK (id <> 5 OR length(tok) < 6));"
      "INSERT INTO h3a_rej.users SELECT g, 'old' || g, false FROM generate_series(1, 9) g;");
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  auto t = keymig::db::check_target(conn,
                                    TargetSpec{"h3a_rej.users", "id", "tok", "flag", "", "", true});
  const std::string run_id = new_run(conn, t, "h3a-rej-");
  sql("UPDATE h3a_rej.users SET tok = 'app-wrote' WHERE id = 8");  // a conflict besides
  std::vector<keymig::db::Change> changes;
  for (int i = 1; i <= 9; ++i)
    changes.push_back(
        make_change(std::to_string(i), "old" + std::to_string(i), "newtoken" + std::to_string(i)));
  keymig::db::BatchContext ctx;
  ctx.run_id = run_id;
  ctx.chunk = keymig::db::ChunkStep{0, std::nullopt, "9", false};
  ctx.counts.rows_scanned = 10;
  ctx.counts.empty = 1;
  auto res = keymig::db::write_batch(conn, t, changes, ctx);
  REQUIRE(res.rejected.size() == 1);
  CHECK(res.rejected[0].id == "5");
  CHECK(res.rejected[0].reason.find("SQLSTATE 23514") != std::string::npos);
  CHECK(res.rejected[0].reason.find("short_enough") != std::string::npos);
  CHECK(res.rejected[0].reason.find("newtoken") == std::string::npos);
  CHECK(res.missed == std::vector<std::string>{"8"});
  CHECK(res.rotated == 7);
  CHECK(sql_value("SELECT tok FROM h3a_rej.users WHERE id = 5") == "old5");
  CHECK(sql_value("SELECT tok FROM h3a_rej.users WHERE id = 9") == "newtoken9");
  CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + run_id + "'") == "7");
  CHECK(run_value(run_id, "rotated") == "7");
  CHECK(run_value(run_id, "rejected") == "1");
  CHECK(run_value(run_id, "conflicts") == "1");
  CHECK(run_value(run_id, "rows_scanned") == "10");
  CHECK(run_value(run_id, "empty") == "1");
  CHECK(sql_value("SELECT checkpoint FROM keymig.chunks WHERE run_id = '" + run_id + "'") == "9");

  SECTION("repeating the split batch after a lost reply counts nothing twice") {
    ctx.chunk->from = std::nullopt;
    auto again = keymig::db::write_batch(conn, t, changes, ctx);
    CHECK(again.rotated == 7);
    REQUIRE(again.rejected.size() == 1);
    CHECK(again.rejected[0].id == "5");
    CHECK(again.missed == std::vector<std::string>{"8"});
    CHECK(run_value(run_id, "rotated") == "7");
    CHECK(run_value(run_id, "rejected") == "1");
    CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + run_id + "'") == "7");
  }
  SECTION("an error no row causes is not split") {
    sql("CREATE FUNCTION h3a_rej.boom() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '55000'; END $$;"
        "CREATE TRIGGER boom BEFORE UPDATE ON h3a_rej.users FOR EACH ROW"
        " EXECUTE FUNCTION h3a_rej.boom();"
        "UPDATE keymig.chunks SET checkpoint = NULL WHERE run_id = '" +
        run_id + "'");
    sql("ALTER TABLE h3a_rej.users DISABLE TRIGGER boom;"
        "UPDATE h3a_rej.users SET tok = 'old' || id WHERE id <> 5;"
        "ALTER TABLE h3a_rej.users ENABLE TRIGGER boom");
    ctx.chunk->from = std::nullopt;
    CHECK_THROWS_AS(keymig::db::write_batch(conn, t, changes, ctx), keymig::db::DbError);
    CHECK(sql_value("SELECT checkpoint IS NULL FROM keymig.chunks WHERE run_id = '" + run_id +
                    "'") == "t");
  }
}
