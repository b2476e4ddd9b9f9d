#include "keymig/db/requests.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "keymig/db/error.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using keymig::db::Connection;
using keymig::db::RequestEnd;
using namespace keymig::testing;
namespace db = keymig::db;

namespace {

// An empty queue in the test database, and the table its requests name.
void fresh_queue() {
  Connection c(test_options());
  db::ensure_schema(c);
  sql("DELETE FROM keymig.requests");
  sql("CREATE TABLE IF NOT EXISTS public.queue_users(id int PRIMARY KEY)");
  sql("CREATE TABLE IF NOT EXISTS public.queue_admins(id int PRIMARY KEY)");
}

unsigned oid_of(const std::string& table) {
  return static_cast<unsigned>(std::stoul(sql_value("SELECT '" + table + "'::regclass::oid")));
}

std::optional<unsigned> users_oid() {
  return oid_of("public.queue_users");
}

std::string enqueue(const std::string& kind, const std::string& params = "NULL",
                    const std::string& target = "'public.queue_users'") {
  return sql_value("INSERT INTO keymig.requests(kind, params, target) VALUES ('" + kind + "', " +
                   params + ", " + target + ") RETURNING id");
}

std::string row(const std::string& id, const std::string& columns) {
  return sql_value("SELECT " + columns + " FROM keymig.requests WHERE id = " + id);
}

// The DSN of the test database as another role.
std::string dsn_as(const std::string& role) {
  std::string dsn = test_dsn();
  const auto at = dsn.find('@');
  const auto scheme = dsn.find("://");
  REQUIRE((at != std::string::npos && scheme != std::string::npos));
  return dsn.substr(0, scheme + 3) + role + dsn.substr(at);
}

}  // namespace

TEST_CASE("requests are claimed oldest first, each once, with kind, params and wait",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  CHECK_FALSE(db::claim_next_request(conn, "unit-a", users_oid()));
  const auto first = enqueue("migrate", "'{\"ids\": [1]}'");
  const auto second = enqueue("verify");
  auto a = db::claim_next_request(conn, "unit-a", users_oid());
  REQUIRE(a);
  CHECK(std::to_string(a->id) == first);
  CHECK(a->kind == "migrate");
  CHECK(a->params == "{\"ids\": [1]}");
  CHECK(a->wait_ms >= 0);
  CHECK(row(first, "state || '|' || claimed_by || '|' || (started_at IS NOT NULL)") ==
        "running|unit-a|true");
  CHECK(a->target == "public.queue_users");
  CHECK(a->refusal.empty());
  auto b = db::claim_next_request(conn, "unit-a", users_oid());
  REQUIRE(b);
  CHECK(std::to_string(b->id) == second);
  CHECK(b->params.empty());  // NULL params
  CHECK_FALSE(db::claim_next_request(conn, "unit-a", users_oid()));
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
  auto claimed = db::claim_next_request(conn, "unit-b", users_oid());
  REQUIRE(claimed);
  CHECK(std::to_string(claimed->id) == second);
  locker.abort();
  claimed = db::claim_next_request(conn, "unit-b", users_oid());
  REQUIRE(claimed);
  CHECK(std::to_string(claimed->id) == first);
}

TEST_CASE("finishing a request writes its end and result", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  const auto id = enqueue("migrate");
  auto claimed = db::claim_next_request(conn, "unit-c", users_oid());
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
              "(finished_at IS NULL) || '|' || (result->>'interrupted') || '|' || "
              "(claimed_pid IS NULL AND claimed_backend_start IS NULL)") ==
          "queued|true|true|true|true|true");
    auto again = db::claim_next_request(conn, "unit-d", users_oid());
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
  REQUIRE(db::claim_next_request(*owner, live, users_oid()));
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
    (void)db::claim_next_request(conn, "unit-e", users_oid());
    FAIL("claimed from a missing table");
  } catch (const db::DbError& e) {
    CHECK(e.sqlstate() == "42P01");
    CHECK_FALSE(e.retryable());
  }
  CHECK_THROWS_AS(db::requeue_stale_requests(conn), db::DbError);
}

TEST_CASE("a claim records the claiming session's backend pid and start", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  const auto id = enqueue("verify");
  REQUIRE(db::claim_next_request(conn, "unit-f", users_oid()));
  const std::string pid = row(id, "claimed_pid::text");
  REQUIRE_FALSE(pid.empty());
  CHECK(sql_value("SELECT count(*) FROM pg_stat_activity a JOIN keymig.requests r ON "
                  "a.pid = r.claimed_pid AND a.backend_start = r.claimed_backend_start "
                  "WHERE r.id = " +
                  id) == "1");
}

TEST_CASE("a live claimer whose instance name is longer than a session name is not requeued",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  // A long host name and pid: more than PostgreSQL keeps of an application_name.
  const std::string live = "k8s-node-with-a-long-host-name.example.internal:4194304:0123456789ab";
  REQUIRE(db::request_session_name(live).size() == 63);
  auto owner = std::make_unique<Connection>(test_options());
  db::set_request_session_name(*owner, live);
  const auto mine = enqueue("migrate");
  REQUIRE(db::claim_next_request(*owner, live, users_oid()));
  Connection other(test_options());
  CHECK(db::requeue_stale_requests(other) == 0);
  CHECK(row(mine, "state || '|' || claimed_by") == "running|" + live);
  owner.reset();
  std::int64_t requeued = 0;
  for (int i = 0; i < 100 && requeued == 0; ++i) {
    requeued = db::requeue_stale_requests(other);
    if (requeued == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(requeued == 1);
  CHECK(row(mine, "state || '|' || (claimed_pid IS NULL)") == "queued|true");
}

TEST_CASE("a claim whose pid now belongs to a later session is stale", "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection live(test_options());
  const auto id = enqueue("verify");
  REQUIRE(db::claim_next_request(live, "unit-g", users_oid()));
  // The same pid, started earlier: a crashed claimer whose pid the server gave again.
  sql("UPDATE keymig.requests SET claimed_backend_start = claimed_backend_start - "
      "interval '1 hour' WHERE id = " +
      id);
  Connection other(test_options());
  CHECK(db::requeue_stale_requests(other) == 1);
  CHECK(row(id, "state") == "queued");
}

TEST_CASE("a claim made before pids were recorded is judged by the session name",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection owner(test_options());
  db::set_request_session_name(owner, "unit-legacy");
  const auto live = enqueue("verify");
  const auto gone = enqueue("verify");
  sql("UPDATE keymig.requests SET state = 'running', started_at = now(), claimed_by = "
      "CASE WHEN id = " +
      live + " THEN 'unit-legacy' ELSE 'unit-legacy-crashed' END");
  Connection other(test_options());
  CHECK(db::requeue_stale_requests(other) == 1);
  CHECK(row(live, "state") == "running");
  CHECK(row(gone, "state") == "queued");
}

TEST_CASE(
    "a serve claims the requests naming its table in any spelling, and refuses those "
    "naming none",
    "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  std::vector<std::string> mine, refused, others;
  for (const char* t : {"'public.queue_users'", "'queue_users'", "'PUBLIC.Queue_Users'",
                        "'\"public\".\"queue_users\"'", "' queue_users '"})
    mine.push_back(enqueue("verify", "NULL", t));
  for (const char* t :
       {"'queue_admins'", "'public.queue_admins'", "'no_such_table'", "'no_schema.queue_users'"})
    others.push_back(enqueue("verify", "NULL", t));
  for (const char* t : {"NULL", "''", "'  '", "'a.b.c.d'", "'\"unclosed'", "'other_db.public.x'"})
    refused.push_back(enqueue("verify", "NULL", t));
  Connection conn(test_options());
  std::vector<std::string> got_mine, got_refused;
  while (auto c = db::claim_next_request(conn, "unit-h", users_oid())) {
    if (c->refusal.empty()) {
      got_mine.push_back(std::to_string(c->id));
    } else {
      got_refused.push_back(std::to_string(c->id));
      const bool no_target = c->target.find_first_not_of(' ') == std::string::npos;
      CHECK(c->refusal.find(no_target ? "names no target" : "not a table name") !=
            std::string::npos);
    }
  }
  CHECK(got_mine == mine);
  CHECK(got_refused == refused);
  for (const auto& id : others) CHECK(row(id, "state") == "queued");

  // The other table's serve takes the rest that name it, and nothing of the first's.
  sql("UPDATE keymig.requests SET state = 'queued' WHERE id IN (" + mine[0] + ")");
  std::vector<std::string> got_admins;
  while (auto c = db::claim_next_request(conn, "unit-i", oid_of("public.queue_admins"))) {
    CHECK(c->refusal.empty());
    got_admins.push_back(std::to_string(c->id));
  }
  CHECK(got_admins == std::vector<std::string>{others[0], others[1]});
  CHECK(row(mine[0], "state") == "queued");

  // A serve whose own table is missing claims only what it must refuse.
  const auto untargeted = enqueue("verify", "NULL", "NULL");
  auto c = db::claim_next_request(conn, "unit-j", std::nullopt);
  REQUIRE(c);
  CHECK(std::to_string(c->id) == untargeted);
  CHECK_FALSE(db::claim_next_request(conn, "unit-j", std::nullopt));
}

TEST_CASE("a target in a schema this role may not use is another serve's, not an error",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  sql("DO $$ BEGIN CREATE ROLE keymig_queue_reader LOGIN; "
      "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  sql("CREATE SCHEMA IF NOT EXISTS queue_private");
  sql("CREATE TABLE IF NOT EXISTS queue_private.users(id int)");
  sql("REVOKE ALL ON SCHEMA queue_private FROM PUBLIC");
  sql("GRANT USAGE ON SCHEMA keymig TO keymig_queue_reader");
  sql("GRANT SELECT, UPDATE ON keymig.requests TO keymig_queue_reader");
  const auto private_one = enqueue("verify", "NULL", "'queue_private.users'");
  const auto mine = enqueue("verify");
  auto options = test_options();
  options.dsn = dsn_as("keymig_queue_reader");
  Connection conn(options);
  auto c = db::claim_next_request(conn, "unit-k", users_oid());
  REQUIRE(c);
  CHECK(std::to_string(c->id) == mine);
  CHECK_FALSE(db::claim_next_request(conn, "unit-k", users_oid()));
  CHECK(row(private_one, "state") == "queued");
}

TEST_CASE("a selected claim takes only requests that name their users, and their audit trail",
          "[db][requests]") {
  KEYMIG_REQUIRE_DB();
  fresh_queue();
  Connection conn(test_options());
  // In the order service::is_selected_job decides them (tests/service/jobs_test.cpp).
  std::vector<std::string> selected, whole;
  whole.push_back(enqueue("migrate"));
  whole.push_back(enqueue("status", "'{}'"));
  whole.push_back(enqueue("verify", "'{\"ids\": [1], \"run_id\": \"m1\"}'"));
  whole.push_back(enqueue("finalize", "'{\"run_id\": \"m1\"}'"));
  whole.push_back(enqueue("migrate", "'{\"ids\": []}'"));
  whole.push_back(enqueue("migrate", "'{\"ids\": [1, 2, 3, 4]}'"));  // over max_selected
  whole.push_back(enqueue("migrate", "'[1, 2]'"));  // malformed: refused by the main lane
  selected.push_back(enqueue("migrate", "'{\"usernames\": [\"a\", \"b\", \"c\"]}'"));
  selected.push_back(enqueue("reset_mfa", "'{\"ids\": [1], \"usernames\": [\"a\"]}'"));
  selected.push_back(enqueue("verify", "'{\"ids\": [\"7\"], \"run_id\": null}'"));
  selected.push_back(enqueue("status", "'{\"usernames\": [\"a\"]}'"));
  selected.push_back(enqueue("rollback", "'{\"run_id\": \"r1\"}'"));
  sql("UPDATE keymig.requests SET requested_by = 'admin:alice', reason = 'ticket 1' WHERE id = " +
      selected[0]);
  std::vector<std::string> got;
  while (auto c =
             db::claim_next_request(conn, "unit-s", users_oid(), db::ClaimScope::selected, 3)) {
    if (got.empty()) {
      CHECK(c->requested_by == "admin:alice");
      CHECK(c->reason == "ticket 1");
    } else {
      CHECK(c->requested_by.empty());
    }
    got.push_back(std::to_string(c->id));
  }
  CHECK(got == selected);
  for (const auto& id : whole) CHECK(row(id, "state") == "queued");
  // The main lane's claim takes the rest.
  std::vector<std::string> rest;
  while (auto c = db::claim_next_request(conn, "unit-m", users_oid()))
    rest.push_back(std::to_string(c->id));
  CHECK(rest == whole);
}
