// The worker against a real PostgreSQL, with a fake runner standing in for the engine:
// claims, results, refusals, the drain on stop, stale claims and the per-target lock.

#include <catch2/catch.hpp>

#include "keymig/db/error.hpp"
#include "service_fixture.hpp"

using namespace keymig::testing;
using keymig::service::Job;

TEST_CASE("the service claims NOTIFY'd requests at once and writes their results",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  running.start();
  auto& fake = running.fake;
  auto start = steady_clock::now();
  std::string id = enqueue(dsn,
                           "INSERT INTO keymig.requests(kind, params, target) VALUES ('migrate', "
                           "'{\"ids\": [1, 2]}', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(5)));
  double claim_ms = std::stod(psql(dsn,
                                   "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                                   "FROM keymig.requests WHERE id = " +
                                       id));
  WARN(
      "NOTIFY-to-claim latency " << claim_ms << " ms; round trip to done "
                                 << duration_cast<milliseconds>(steady_clock::now() - start).count()
                                 << " ms");
  CHECK(claim_ms < 1000);
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["succeeded"] == true);
  CHECK(result["run_id"] == "fake-run");
  CHECK(result["claimed_by"] == "unit-test");
  REQUIRE(fake.count() == 1);
  CHECK(fake.snapshot()[0].selection.ids == std::vector<std::string>{"1", "2"});
  auto status = running.status();
  CHECK(status["last"]["migrate"]["succeeded"] == true);
  CHECK(status["requests"]["done"] == 1);
  CHECK(http_get(running.port(), "/metrics").find("keymig_rows_total") != std::string::npos);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a reset_mfa request without a selection fails with the reason, runner untouched",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  running.start();
  std::string id =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('reset_mfa', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "failed"; }, seconds(5)));
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["error"].get<std::string>().find("never resets everyone") != std::string::npos);
  CHECK(result["exit_code"] == 2);
  CHECK(running.fake.count() == 0);
  CHECK(running.status()["requests"]["failed"] == 1);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("stop during a run drains it and puts the request back in the queue", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  running.start();
  running.fake.duration = seconds(30);
  std::string id =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'users')");
  REQUIRE(wait_for([&] { return running.fake.count() == 1; }, seconds(5)));
  CHECK(running.status()["current_run"]["kind"] == "migrate");
  auto stop_at = steady_clock::now();
  running.stop();
  CHECK(running.exit_code == 0);
  CHECK(steady_clock::now() - stop_at < seconds(5));
  CHECK(request_state(dsn, id) == "queued");
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["interrupted"] == true);
  CHECK(result["requeued"] == "shutdown");
  CHECK(psql(dsn, "SELECT claimed_by IS NULL FROM keymig.requests WHERE id = " + id) == "t");
}

TEST_CASE("a request left running by a crashed instance is claimed again and done",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  {
    // A first service makes the schema; then a crash leaves a claim behind.
    RunningService first(dsn);
    first.start();
  }
  std::string id = psql(dsn,
                        "INSERT INTO keymig.requests(kind, target, state, claimed_by, started_at) "
                        "VALUES ('verify', 'users', 'running', 'crashed-instance', now()) "
                        "RETURNING id");
  RunningService running(dsn);
  running.start();
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(10)));
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["claimed_by"] == "unit-test");
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("requests wait while another process holds the target and are done after",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  psql(dsn, "CREATE TABLE users(id int PRIMARY KEY)");
  RunningService running(
      dsn, [](keymig::service::Settings& s) { s.config.migration.targets.front().table = "users"; });
  running.options.busy_retry = milliseconds(200);
  running.start();
  // Another keymig serve on the same table, spelled differently: the lock is the table's.
  FILE* holder = ::popen(("psql " + quote_shell(dsn) +
                          " -Atq -c \"SELECT pg_advisory_lock(x'6b6d6967'::int, "
                          "'public.users'::regclass::oid::int4)\" -c 'SELECT pg_sleep(2)' "
                          ">/dev/null 2>&1")
                             .c_str(),
                         "r");
  REQUIRE(holder);
  REQUIRE(wait_for(
      [&] {
        return psql(dsn,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                    "classid = x'6b6d6967'::int::oid") == "1";
      },
      seconds(5)));
  std::string id =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('verify', 'users')");
  std::this_thread::sleep_for(milliseconds(500));
  CHECK(request_state(dsn, id) == "queued");
  CHECK(running.fake.count() == 0);
  ::pclose(holder);  // the holder's session ends with pg_sleep
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(10)));
  CHECK(running.fake.count() == 1);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a job cut short by a lost database goes back to the queue and is resumed",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  running.options.busy_retry = milliseconds(300);
  // What the engine throws once its retries give up on a database that is away.
  running.fake.on_call = [](std::size_t call) {
    if (call == 0)
      throw keymig::db::DbError("writing a batch: connection lost: server closed the connection",
                                "08006", true);
  };
  running.start();
  std::string id =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(10)));
  CHECK(running.fake.count() == 2);
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["succeeded"] == true);
  auto status = running.status();
  CHECK(status["requests"]["requeued"] == 1);
  CHECK(status["requests"]["done"] == 1);
  CHECK(status["requests"]["failed"] == 0);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a job the database refuses for a reason of its own still fails the request",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  running.options.busy_retry = milliseconds(300);
  running.fake.on_call = [](std::size_t) {
    throw keymig::db::DbError("writing a batch: new row violates check constraint (SQLSTATE 23514)",
                              "23514", false);
  };
  running.start();
  std::string id =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "failed"; }, seconds(10)));
  auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
  CHECK(result["exit_code"] == 1);
  CHECK_FALSE(result.contains("requeued"));
  std::this_thread::sleep_for(milliseconds(600));
  CHECK(running.fake.count() == 1);
  CHECK(request_state(dsn, id) == "failed");
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("the service claims only requests for its own table and fails untargeted ones",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  psql(dsn, "CREATE TABLE admins(id int PRIMARY KEY)");
  RunningService running(dsn);
  running.start();
  std::string untargeted = enqueue(dsn, "INSERT INTO keymig.requests(kind) VALUES ('migrate')");
  std::string theirs =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'admins')");
  std::string ours =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'PUBLIC.Users')");
  REQUIRE(wait_for([&] { return request_state(dsn, ours) == "done"; }, seconds(5)));
  REQUIRE(wait_for([&] { return request_state(dsn, untargeted) == "failed"; }, seconds(5)));
  auto result =
      json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + untargeted));
  CHECK(result["error"].get<std::string>().find("names no target") != std::string::npos);
  CHECK(result["exit_code"] == 2);
  CHECK(request_state(dsn, theirs) == "queued");
  CHECK(running.fake.count() == 1);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a selected-user request is served while a whole-table request runs", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn);
  // The whole-table migrate takes 4 s; everything after it is instant.
  running.fake.on_call = [](std::size_t call) {
    if (call == 0) std::this_thread::sleep_for(seconds(4));
  };
  running.start();
  std::string whole =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('migrate', 'users')");
  std::string another =
      enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('verify', 'users')");
  REQUIRE(wait_for([&] { return running.fake.count() == 1; }, seconds(5)));
  std::string selected = enqueue(dsn,
                                 "INSERT INTO keymig.requests(kind, params, target, requested_by) "
                                 "VALUES ('reset_mfa', '{\"usernames\": [\"a\", \"b\", \"c\"]}', "
                                 "'users', 'admin:alice')");
  // Before: queued behind the whole-table run for its 4 s.
  REQUIRE(wait_for([&] { return request_state(dsn, selected) == "done"; }, seconds(2)));
  CHECK(request_state(dsn, whole) == "running");
  // A second whole-table request is not the selected lane's: it waits for the first.
  CHECK(request_state(dsn, another) == "queued");
  auto status = running.status();
  CHECK(status["current_run"]["kind"] == "migrate");
  CHECK(status["current_run"]["lane"] == "main");
  CHECK(status["last"]["reset_mfa"]["lane"] == "selected");
  CHECK(status["last"]["reset_mfa"]["request"]["requested_by"] == "admin:alice");
  REQUIRE(wait_for([&] { return request_state(dsn, another) == "done"; }, seconds(10)));
  CHECK(request_state(dsn, whole) == "done");
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a selected-user request is served while a scheduled run runs", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_worker");
  RunningService running(dsn, [](keymig::service::Settings& s) {
    s.config.migration.schedule.every = std::chrono::hours(1);
  });
  running.fake.on_call = [](std::size_t call) {
    if (call == 0) std::this_thread::sleep_for(seconds(4));
  };
  running.start();
  REQUIRE(wait_for([&] { return running.fake.count() == 1; }, seconds(5)));
  std::string selected = enqueue(dsn,
                                 "INSERT INTO keymig.requests(kind, params, target) "
                                 "VALUES ('migrate', '{\"ids\": [1, 2, 3]}', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, selected) == "done"; }, seconds(2)));
  auto status = running.status();
  CHECK(status["current_run"]["source"] == "schedule");
  CHECK(status["current_runs"].size() == 1);
  REQUIRE(running.fake.count() == 2);
  CHECK(running.fake.snapshot()[1].selection.ids == std::vector<std::string>{"1", "2", "3"});
  running.stop();
  CHECK(running.exit_code == 0);
}
