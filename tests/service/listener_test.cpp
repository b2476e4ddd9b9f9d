// The service's LISTEN session on its event loop: a lost session is re-opened with
// backoff, /readyz follows it, and what was queued meanwhile is claimed.

#include <catch2/catch.hpp>

#include "service_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("the service re-LISTENs after its session is killed and claims what was queued",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_listener");
  RunningService running(dsn);
  // Long enough for the INSERT below to land before the reconnect looks at the queue.
  running.options.reconnect_min = milliseconds(1500);
  running.start();
  const auto port = running.port();
  const std::string listener_pid =
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
      "AND application_name = 'keymig-serve-listen'";
  const std::string old_pid = psql(dsn, listener_pid);
  REQUIRE_FALSE(old_pid.empty());
  psql(dsn, "SELECT pg_terminate_backend(" + old_pid + ")");
  // Queued without a listener and without a NOTIFY: the reconnect drains it.
  std::string id = psql(
      dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('verify', 'users') RETURNING id");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(10)));
  const std::string new_pid = psql(dsn, listener_pid);
  CHECK_FALSE(new_pid.empty());
  CHECK(new_pid != old_pid);
  CHECK(http_get(port, "/readyz").find("200 OK") != std::string::npos);
  // And NOTIFY wakes it again.
  id = enqueue(dsn, "INSERT INTO keymig.requests(kind, target) VALUES ('verify', 'users')");
  REQUIRE(wait_for([&] { return request_state(dsn, id) == "done"; }, seconds(5)));
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("the service is not ready while its database is unreachable", "[service]") {
  const std::string unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2";
  FakeRunner fake;
  keymig::metrics::Metrics metrics;
  keymig::service::ServiceOptions options;
  options.metrics_listen = "127.0.0.1:0";
  options.handle_signals = false;
  options.reconnect_min = milliseconds(50);
  options.reconnect_max = milliseconds(200);
  keymig::service::Service service(
      [&] { return std::shared_ptr<const keymig::service::Settings>(make_settings(unreachable)); },
      fake.runner(), metrics, options);
  int exit_code = -1;
  std::thread loop([&] { exit_code = service.run(); });
  std::this_thread::sleep_for(milliseconds(500));
  const auto port = service.http_port();
  CHECK(http_get(port, "/readyz").find("503") != std::string::npos);
  CHECK(http_get(port, "/healthz").find("200 OK") != std::string::npos);
  auto doc = json::parse(service.status_json());
  CHECK(doc["ready"] == false);
  CHECK(doc["database"] == "down");
  service.request_stop();
  loop.join();
  CHECK(exit_code == 0);
  CHECK(fake.count() == 0);
}
