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
