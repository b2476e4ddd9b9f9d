// The schedule: keyMigration.schedule.every runs migrate, then verify of that run, at
// start and again after the interval.

#include <catch2/catch.hpp>

#include "service_fixture.hpp"

using namespace keymig::testing;
using keymig::service::JobKind;

TEST_CASE("a schedule of every runs migrate then verify at start and after the interval",
          "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_scheduler");
  RunningService running(dsn, [](keymig::service::Settings& s) {
    s.config.migration.schedule.every = std::chrono::seconds(1);
  });
  running.start();
  REQUIRE(wait_for([&] { return running.fake.count() >= 4; }, seconds(10)));
  auto jobs = running.fake.snapshot();
  for (std::size_t i = 0; i + 1 < 4; i += 2) {
    CHECK(jobs[i].kind == JobKind::migrate);
    CHECK(jobs[i].source == "schedule");
    CHECK(jobs[i + 1].kind == JobKind::verify);
    CHECK(jobs[i + 1].run_id == "fake-run");  // the migrate's run
  }
  auto doc = running.status();
  CHECK(doc["schedule"]["every_seconds"] == 1);
  CHECK(doc["schedule"].contains("next_run_at"));
  CHECK(doc["last"]["migrate"]["source"] == "schedule");
  CHECK(doc["last"]["verify"]["succeeded"] == true);
  running.stop();
  CHECK(running.exit_code == 0);
}

TEST_CASE("a reload keeps the scheduled time and starts no run of its own", "[service][db]") {
  KEYMIG_SERVICE_DB("h5_service_scheduler");
  auto every = std::make_shared<std::atomic<int>>(3600);
  RunningService running(dsn, [every](keymig::service::Settings& s) {
    s.config.migration.schedule.every = std::chrono::seconds(every->load());
  });
  running.start();
  // The run at start: migrate, then verify of that run.
  REQUIRE(wait_for([&] { return running.fake.count() == 2; }, seconds(10)));
  const auto next_before = running.status()["schedule"]["next_run_at"];

  running.service().request_reload();
  REQUIRE(wait_for([&] { return running.status()["config"]["generation"] == 2; }, seconds(5)));
  std::this_thread::sleep_for(milliseconds(1500));
  CHECK(running.fake.count() == 2);  // before: a third job, a whole-table migrate, at once
  CHECK(running.status()["schedule"]["next_run_at"] == next_before);

  SECTION("a shorter interval brings the next run forward, not to now") {
    every->store(2);
    running.service().request_reload();
    REQUIRE(wait_for([&] { return running.status()["config"]["generation"] == 3; }, seconds(5)));
    std::this_thread::sleep_for(milliseconds(800));
    CHECK(running.fake.count() == 2);
    REQUIRE(wait_for([&] { return running.fake.count() >= 4; }, seconds(5)));
    CHECK(running.fake.snapshot()[2].kind == JobKind::migrate);
  }
  running.stop();
  CHECK(running.exit_code == 0);
}
