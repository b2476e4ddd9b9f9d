#include "keymig/db/chunks.hpp"

#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::db::TargetSpec;

TEST_CASE("chunks are leased once while their holder's session lives", "[db][chunks]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_chunks CASCADE; CREATE SCHEMA h3a_chunks;"
      "CREATE TABLE h3a_chunks.t (id int PRIMARY KEY, s text);"
      "INSERT INTO h3a_chunks.t SELECT g, 'x' FROM generate_series(1, 95) g;");
  keymig::db::Connection a(test_options());
  keymig::db::ensure_schema(a);
  auto t = keymig::db::check_target(a, TargetSpec{"h3a_chunks.t", "id", "s", "", "", "", true});
  auto bounds = keymig::db::chunk_boundaries(a, t, 30);
  REQUIRE(bounds.size() == 4);  // 30, 60, 90, open
  CHECK(bounds[0] == std::optional<std::string>("30"));
  CHECK_FALSE(bounds[3].has_value());
  keymig::db::Run run;
  run.run_id =
      "h3a-chunks-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  run.target = t.label();
  REQUIRE(keymig::db::create_run(a, run, bounds));
  CHECK_FALSE(keymig::db::create_run(a, run, bounds));  // exists: joined, not duplicated

  auto first = keymig::db::lease_chunk(a, run.run_id, "a");
  REQUIRE(first);
  CHECK(first->chunk_no == 0);
  CHECK_FALSE(first->lo.has_value());
  {
    keymig::db::Connection b(test_options());
    auto second = keymig::db::lease_chunk(b, run.run_id, "b");
    REQUIRE(second);
    CHECK(second->chunk_no == 1);
    CHECK(second->lo == std::optional<std::string>("30"));
    CHECK(keymig::db::live_foreign_leases(a, run.run_id) == 1);
    // A process does not wait for its own lanes: their names share its prefix.
    CHECK(keymig::db::live_foreign_leases(a, run.run_id, "b") == 0);
    CHECK(keymig::db::live_foreign_leases(a, run.run_id, "c") == 1);
  }
  // b's session ended: its chunk is free at once (a short wait for the backend to exit).
  std::optional<keymig::db::Chunk> again;
  for (int i = 0; i < 50 && !(again && again->chunk_no == 1); ++i) {
    sql("SELECT pg_sleep(0.05)");
    again = keymig::db::lease_chunk(a, run.run_id, "a");
  }
  REQUIRE(again);
  CHECK(again->chunk_no == 1);
  CHECK_FALSE(keymig::db::complete_run_if_done(a, run.run_id));
}
