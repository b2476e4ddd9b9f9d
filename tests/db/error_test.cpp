#include "keymig/db/error.hpp"

#include <catch2/catch.hpp>

#include "keymig/db/batch.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

// The SQLSTATEs libpqxx 6.4 loses (it throws their classes without one) are told by
// class, so that retries and refusals that depend on them work against a real server.
TEST_CASE("deadlocks, serialization failures and missing privileges keep their SQLSTATE",
          "[db][errors]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h_err CASCADE; CREATE SCHEMA h_err;"
      "CREATE TABLE h_err.code (code text);"
      "CREATE TABLE h_err.users (id int PRIMARY KEY, tok text);"
      "INSERT INTO h_err.users VALUES (1, 'old1');"
      "CREATE FUNCTION h_err.refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
      " BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = (SELECT code FROM h_err.code);"
      " END $$;"
      "CREATE TRIGGER refuse BEFORE UPDATE ON h_err.users"
      "  FOR EACH ROW EXECUTE FUNCTION h_err.refuse();");
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  auto t = keymig::db::check_target(
      conn, keymig::db::TargetSpec{"h_err.users", "id", "tok", "", "", "", true});
  std::vector<keymig::db::Change> changes(1);
  changes[0].id = "1";
  changes[0].old_token = keymig::SecretString(std::string_view("old1"));
  changes[0].new_token = keymig::SecretString(std::string_view("new1"));
  keymig::db::BatchContext ctx;
  ctx.run_id = "h-err";

  struct Case {
    const char* code;
    bool retryable;
  };
  for (const Case c : {Case{"40P01", true}, Case{"40001", true}, Case{"42501", false}}) {
    CAPTURE(c.code);
    sql(std::string("DELETE FROM h_err.code; INSERT INTO h_err.code VALUES ('") + c.code + "')");
    try {
      (void)keymig::db::write_batch(conn, t, changes, ctx);
      FAIL("the trigger did not refuse");
    } catch (const keymig::db::DbError& e) {
      CHECK(e.sqlstate() == c.code);
      CHECK(e.retryable() == c.retryable);
      CHECK(std::string(e.what()).find(std::string("SQLSTATE ") + c.code) != std::string::npos);
    }
  }
  // A row's own refusal keeps its state too: the batch splits it out as rejected.
  for (const char* code : {"23514", "P0001"}) {
    CAPTURE(code);
    sql(std::string("DELETE FROM h_err.code; INSERT INTO h_err.code VALUES ('") + code + "')");
    const auto res = keymig::db::write_batch(conn, t, changes, ctx);
    REQUIRE(res.rejected.size() == 1);
    CHECK(res.rejected[0].id == "1");
    CHECK(res.rejected[0].reason.find(std::string("SQLSTATE ") + code) != std::string::npos);
  }
  CHECK(sql_value("SELECT tok FROM h_err.users WHERE id = 1") == "old1");
}
