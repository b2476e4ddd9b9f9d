// The service's lifecycle against a real PostgreSQL: reload (SIGHUP's path) and stop.

#include "keymig/service/service.hpp"

#include <catch2/catch.hpp>

#include "service_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("a bad config on reload is refused and the old one stays", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_unit");
  RunningService running(dsn);
  running.start();
  auto& service = running.service();
  running.fail_next_load = true;
  service.request_reload();
  REQUIRE(wait_for([&] { return running.status()["config"].contains("last_reload_error"); },
                   seconds(5)));
  auto status = running.status();
  CHECK(status["config"]["generation"] == 1);
  running.fail_next_load = false;
  service.request_reload();
  REQUIRE(wait_for([&] { return running.status()["config"]["generation"] == 2; }, seconds(5)));
  CHECK(http_get(running.port(), "/readyz").find("200 OK") != std::string::npos);
  CHECK_FALSE(running.status()["config"].contains("last_reload_error"));
  CHECK(running.loads == 3);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("an idle service stops at once with exit 0", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_unit");
  RunningService running(dsn);
  running.start();
  auto stop_at = steady_clock::now();
  running.stop();
  CHECK(running.exit_code == 0);
  CHECK(steady_clock::now() - stop_at < seconds(5));
}
