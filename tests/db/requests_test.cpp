#include "keymig/db/requests.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <pqxx/pqxx>
#include <thread>

#include "keymig/db/error.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using keymig::db::Connection;
using keymig::db::RequestEnd;
using namespace keymig::testing;
namespace db = keymig::db;

namespace {

// An empty queue in the test database.
void fresh_queue() {
  Connection c(test_options());
  db::ensure_schema(c);
  sql("DELETE FROM keymig.requests");
}

std::string enqueue(const std::string& kind, const std::string& params = "NULL") {
  return sql_value("INSERT INTO keymig.requests(kind, params) VALUES ('" + kind + "', " + params +
                   ") RETURNING id");
}

std::string row(const std::string& id, const std::string& columns) {
  return sql_value("SELECT " + columns + " FROM keymig.requests WHERE id = " + id);
}

}  // namespace

TEST_CASE("requests are claimed oldest first, each once, with kind, params and wait",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  CHECK_FALSE(db::claim_next_request(conn, "unit-a"));
  const auto first = enqueue("migrate", "'{\"ids\": [1]}'");
  const auto second = enqueue("verify");
  auto a = db::claim_next_request(conn, "unit-a");
  REQUIRE(a);
  CHECK(std::to_string(a->id) == first);
  CHECK(a->kind == "migrate");
  CHECK(a->params == "{\"ids\": [1]}");
  CHECK(a->wait_ms >= 0);
  CHECK(row(first, "state || '|' || claimed_by || '|' || (started_at IS NOT NULL)") ==
        "running|unit-a|true");
  auto b = db::claim_next_request(conn, "unit-a");
  REQUIRE(b);
  CHECK(std::to_string(b->id) == second);
  CHECK(b->params.empty());  // NULL params
  CHECK_FALSE(db::claim_next_request(conn, "unit-a"));
}

TEST_CASE("a claim skips a request another session holds locked", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  const auto first = enqueue("migrate");
  const auto second = enqueue("verify");
  pqxx::connection other(test_dsn());
  pqxx::work locker(other);
  locker.exec("SELECT 1 FROM keymig.requests WHERE id = " + first + " FOR UPDATE");
  Connection conn(test_options());
  auto claimed = db::claim_next_request(conn, "unit-b");
  REQUIRE(claimed);
  CHECK(std::to_string(claimed->id) == second);
  locker.abort();
  claimed = db::claim_next_request(conn, "unit-b");
  REQUIRE(claimed);
  CHECK(std::to_string(claimed->id) == first);
}

TEST_CASE("finishing a request writes its end and result", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  const auto id = enqueue("migrate");
  auto claimed = db::claim_next_request(conn, "unit-c");
  REQUIRE(claimed);

  SECTION("done") {
    db::finish_request(conn, claimed->id, RequestEnd::done, R"({"succeeded": true})");
    CHECK(row(id, "state || '|' || (finished_at IS NOT NULL) || '|' || (result->>'succeeded')") ==
          "done|true|true");
    // Safe to repeat.
    db::finish_request(conn, claimed->id, RequestEnd::done, R"({"succeeded": true})");
    CHECK(row(id, "state") == "done");
  }
  SECTION("failed") {
    db::finish_request(conn, claimed->id, RequestEnd::failed, R"({"error": "x"})");
    CHECK(row(id, "state || '|' || (finished_at IS NOT NULL) || '|' || (result->>'error')") ==
          "failed|true|x");
  }
  SECTION("requeued, to be claimed again") {
    db::finish_request(conn, claimed->id, RequestEnd::requeued, R"({"interrupted": true})");
    CHECK(row(id,
              "state || '|' || (claimed_by IS NULL) || '|' || (started_at IS NULL) || '|' || "
              "(finished_at IS NULL) || '|' || (result->>'interrupted')") ==
          "queued|true|true|true|true");
    auto again = db::claim_next_request(conn, "unit-d");
    REQUIRE(again);
    CHECK(again->id == claimed->id);
  }
}

TEST_CASE("stale requests of claimers without a live session go back to the queue",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  const std::string live = "unit-live";
  auto owner = std::make_unique<Connection>(test_options());
  db::set_request_session_name(*owner, live);
  CHECK(sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                  db::request_session_name(live) + "'") == "1");
  const auto mine = enqueue("migrate");
  REQUIRE(db::claim_next_request(*owner, live));
  const auto ghost = enqueue("verify");
  sql("UPDATE keymig.requests SET state = 'running', claimed_by = 'unit-crashed', "
      "started_at = now() WHERE id = " +
      ghost);

  Connection other(test_options());
  CHECK(db::requeue_stale_requests(other) == 1);
  CHECK(row(ghost, "state || '|' || (claimed_by IS NULL)") == "queued|true");
  CHECK(row(mine, "state") == "running");
  CHECK(db::requeue_stale_requests(other) == 0);

  // The owner's session goes away: its claim is stale now.
  owner.reset();
  std::int64_t requeued = 0;
  for (int i = 0; i < 100 && requeued == 0; ++i) {
    requeued = db::requeue_stale_requests(other);
    if (requeued == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(requeued == 1);
  CHECK(row(mine, "state") == "queued");
}

TEST_CASE("the request session name is cut to what PostgreSQL keeps", "[db][requests]") {
  CHECK(db::request_session_name("host:1:ab") == "keymig-serve host:1:ab");
  CHECK(db::request_session_name(std::string(100, 'x')).size() == 63);
}

TEST_CASE("a missing requests table is a DbError with SQLSTATE 42P01", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  sql("ALTER TABLE keymig.requests RENAME TO requests_away");
  struct Restore {
    ~Restore() { sql("ALTER TABLE keymig.requests_away RENAME TO requests"); }
  } restore;
  Connection conn(test_options());
  try {
    (void)db::claim_next_request(conn, "unit-e");
    FAIL("claimed from a missing table");
  } catch (const db::DbError& e) {
    CHECK(e.sqlstate() == "42P01");
    CHECK_FALSE(e.retryable());
  }
  CHECK_THROWS_AS(db::requeue_stale_requests(conn), db::DbError);
}
