// The service's HTTP routes and its /status document.

#include <catch2/catch.hpp>

#include "service_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("the service answers its routes and 404 for the rest", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_status");
  RunningService running(dsn);
  running.start();
  const auto port = running.port();
  CHECK(http_get(port, "/healthz").find("200 OK") != std::string::npos);
  CHECK(http_get(port, "/readyz").find("ready\n") != std::string::npos);
  auto metrics = http_get(port, "/metrics");
  CHECK(metrics.find("200 OK") != std::string::npos);
  CHECK(metrics.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(http_get(port, "/").find("/status") != std::string::npos);
  auto status = http_get(port, "/status");
  CHECK(status.find("application/json") != std::string::npos);
  CHECK(http_get(port, "/nope").find("404") != std::string::npos);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("the status document names the instance, config, schedule and queue counts",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_status");
  RunningService running(dsn, [](keymig::service::Settings& s) {
    s.config.migration.schedule.at_minute_of_day = 2 * 60 + 5;
  });
  running.start();
  auto doc = running.status();
  CHECK(doc["instance"] == "unit-test");
  CHECK(doc["ready"] == true);
  CHECK(doc["database"] == "up");
  CHECK(doc["draining"] == false);
  CHECK(doc["current_run"].is_null());
  CHECK(doc["last"].is_object());
  CHECK(doc["config"]["generation"] == 1);
  CHECK(doc["config"]["key_fingerprints"].size() == 1);
  CHECK(doc["schedule"]["at_utc"] == "02:05");
  CHECK(doc["schedule"].contains("next_run_at"));
  CHECK(doc["requests"] == json{{"done", 0}, {"failed", 0}, {"requeued", 0}});
  running.stop();
  CHECK(running.exit_code == 0);
}
