#include "keymig/db/runs.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("a run is found while unfinished and completes once its chunks are done", "[db][runs]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  const std::string stamp =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  keymig::db::Run run;
  run.run_id = "h6-runs-" + stamp;
  run.target = "h6_runs.users-" + stamp;
  run.active_fingerprint = "cc";
  run.rolling_fingerprints = {"aa", "bb"};
  run.selection_json = R"({"ids": ["1", "2"]})";
  run.host = "host-a";
  run.pid = 42;
  REQUIRE(keymig::db::create_run(conn, run, {std::string("10"), std::nullopt}));
  CHECK(sql_value("SELECT count(*) FROM keymig.chunks WHERE run_id = '" + run.run_id + "'") == "2");

  auto loaded = keymig::db::load_run(conn, run.run_id);
  REQUIRE(loaded);
  CHECK(loaded->kind == "migrate");
  CHECK(loaded->target == run.target);
  CHECK(loaded->state == "running");
  CHECK(loaded->active_fingerprint == "cc");
  CHECK(loaded->rolling_fingerprints == std::vector<std::string>{"aa", "bb"});
  CHECK(loaded->selection_json == run.selection_json);
  CHECK(loaded->journal);
  CHECK_FALSE(loaded->checkpoint.has_value());
  CHECK(loaded->host == "host-a");
  CHECK(loaded->pid == 42);
  CHECK_FALSE(loaded->started_at.empty());
  CHECK(loaded->finished_at.empty());
  CHECK_FALSE(keymig::db::load_run(conn, run.run_id + "-none").has_value());

  keymig::db::RunCounts delta;
  delta.rows_scanned = 5;
  delta.rotated = 3;
  delta.conflicts = 2;
  keymig::db::add_run_counts(conn, run.run_id, delta);
  delta.conflicts = -1;  // the sweep's correction
  keymig::db::add_run_counts(conn, run.run_id, delta);
  keymig::db::claim_run(conn, run.run_id, "host-b", 7);
  keymig::db::set_run_state(conn, run.run_id, "failed", "lost the server");
  loaded = keymig::db::load_run(conn, run.run_id);
  REQUIRE(loaded);
  CHECK(loaded->counts.rows_scanned == 10);
  CHECK(loaded->counts.rotated == 6);
  CHECK(loaded->counts.conflicts == 1);
  CHECK(loaded->host == "host-b");
  CHECK(loaded->pid == 7);
  CHECK(loaded->state == "failed");
  CHECK(loaded->error == "lost the server");
  CHECK(loaded->finished_at.empty());

  // A failed run is resumed by the next migrate of the same target and selection.
  auto unfinished =
      keymig::db::find_unfinished_run(conn, run.target, "migrate", run.selection_json);
  REQUIRE(unfinished);
  CHECK(unfinished->run_id == run.run_id);
  CHECK_FALSE(keymig::db::find_unfinished_run(conn, run.target, "migrate", "null"));
  CHECK_FALSE(keymig::db::find_unfinished_run(conn, run.target, "reset_mfa", run.selection_json));

  CHECK_FALSE(keymig::db::complete_run_if_done(conn, run.run_id));
  sql("UPDATE keymig.chunks SET state = 'done' WHERE run_id = '" + run.run_id + "'");
  CHECK(keymig::db::complete_run_if_done(conn, run.run_id));
  loaded = keymig::db::load_run(conn, run.run_id);
  REQUIRE(loaded);
  CHECK(loaded->state == "completed");
  CHECK(loaded->error.empty());
  CHECK_FALSE(loaded->finished_at.empty());
  CHECK_FALSE(keymig::db::find_unfinished_run(conn, run.target, "migrate", run.selection_json));

  const auto runs = keymig::db::list_runs(conn, 1000);
  CHECK(std::any_of(runs.begin(), runs.end(),
                    [&](const keymig::db::Run& r) { return r.run_id == run.run_id; }));
}

TEST_CASE("a run's lock: shared among migrate's sessions, exclusive for rollback",
          "[db][runs][lock]") {
  KEYMIG_REQUIRE_DB();
  const std::string run_id =
      "h6-lock-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  keymig::db::Connection lane_a(test_options());
  keymig::db::Connection lane_b(test_options());
  keymig::db::Connection rollback(test_options());
  {
    keymig::db::Connection other(test_options());
    CHECK(keymig::db::try_lock_run(other, run_id, /*exclusive=*/true));
    CHECK_FALSE(keymig::db::try_lock_run(lane_a, run_id, /*exclusive=*/false));
  }  // the session's end releases it, as a crashed process's does (once its backend exits)
  bool shared = false;
  for (int i = 0; i < 100 && !shared; ++i) {
    shared = keymig::db::try_lock_run(lane_a, run_id, false);
    if (!shared) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(shared);
  CHECK(keymig::db::try_lock_run(lane_b, run_id, false));
  CHECK_FALSE(keymig::db::try_lock_run(rollback, run_id, true));
  CHECK(keymig::db::try_lock_run(rollback, run_id + "-other", true));  // another run
  CHECK(keymig::db::load_run(lane_a, run_id) == std::nullopt);
}

TEST_CASE("journal_purged_at reads back empty until a purge sets it", "[db][runs]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  keymig::db::Run run;
  run.run_id =
      "h6-purged-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  run.target = "h6_runs.purged";
  REQUIRE(keymig::db::create_run(conn, run, {std::nullopt}));
  CHECK(keymig::db::load_run(conn, run.run_id)->journal_purged_at.empty());
  sql("UPDATE keymig.runs SET journal_purged_at = now() WHERE run_id = '" + run.run_id + "'");
  CHECK_FALSE(keymig::db::load_run(conn, run.run_id)->journal_purged_at.empty());
}
