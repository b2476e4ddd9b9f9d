#include "keymig/service/jobs.hpp"

#include <catch2/catch.hpp>
#include <chrono>

using namespace keymig::service;
using namespace std::chrono;

TEST_CASE("a migrate request without params selects the whole target", "[service][jobs]") {
  for (const char* params : {"", "null", "{}", R"({"ids": []})"}) {
    auto parsed = parse_request("migrate", params);
    REQUIRE(parsed.job);
    CHECK(parsed.error.empty());
    CHECK(parsed.job->kind == JobKind::migrate);
    CHECK(parsed.job->selection.ids.empty());
    CHECK(parsed.job->selection.usernames.empty());
    CHECK(parsed.job->source == "request");
  }
}

TEST_CASE("ids may be numbers or strings and usernames are strings", "[service][jobs]") {
  auto parsed = parse_request("verify", R"({"ids": [1, "22", 333], "usernames": ["alice"]})");
  REQUIRE(parsed.job);
  CHECK(parsed.job->kind == JobKind::verify);
  CHECK(parsed.job->selection.ids == std::vector<std::string>{"1", "22", "333"});
  CHECK(parsed.job->selection.usernames == std::vector<std::string>{"alice"});
}

TEST_CASE("reset_mfa refuses to reset everyone", "[service][jobs]") {
  for (const char* params : {"", "{}", R"({"ids": []})", R"({"usernames": []})"}) {
    auto parsed = parse_request("reset_mfa", params);
    CHECK_FALSE(parsed.job);
    CHECK(parsed.error.find("never resets everyone") != std::string::npos);
  }
  auto ok = parse_request("reset_mfa", R"({"usernames": ["bob"]})");
  REQUIRE(ok.job);
  CHECK(ok.job->kind == JobKind::reset_mfa);
}

TEST_CASE("malformed requests are refused with a reason", "[service][jobs]") {
  SECTION("unknown kind") {
    auto parsed = parse_request("drop_table", "");
    CHECK_FALSE(parsed.job);
    CHECK(parsed.error.find("unknown kind 'drop_table'") != std::string::npos);
  }
  SECTION("unknown kind with control characters is not echoed raw") {
    auto parsed = parse_request("x\ny", "");
    CHECK(parsed.error.find('\n') == std::string::npos);
  }
  SECTION("params not JSON") {
    CHECK(parse_request("migrate", "{").error == "params is not valid JSON");
  }
  SECTION("params not an object") {
    CHECK(parse_request("migrate", "[1]").error == "params must be a JSON object");
  }
  SECTION("unknown field") {
    CHECK_FALSE(parse_request("migrate", R"({"where": "1=1"})").job);
  }
  SECTION("ids not an array") {
    CHECK_FALSE(parse_request("migrate", R"({"ids": 5})").job);
  }
  SECTION("usernames with a number") {
    CHECK_FALSE(parse_request("migrate", R"({"usernames": [5]})").job);
  }
  SECTION("an empty id string") {
    CHECK_FALSE(parse_request("migrate", R"({"ids": [""]})").job);
  }
  SECTION("a fractional id") {
    CHECK_FALSE(parse_request("migrate", R"({"ids": [1.5]})").job);
  }
}

TEST_CASE("the daily run is the next HH:MM in UTC strictly after now", "[service][schedule]") {
  // 2024-01-01T00:00:00Z
  system_clock::time_point midnight{seconds(1704067200)};
  CHECK(next_daily_run(midnight, 120) == midnight + hours(2));
  CHECK(next_daily_run(midnight + hours(2), 120) == midnight + hours(26));
  CHECK(next_daily_run(midnight + hours(3), 120) == midnight + hours(26));
  CHECK(next_daily_run(midnight + hours(1) + minutes(59) + seconds(59), 120) ==
        midnight + hours(2));
  CHECK(next_daily_run(midnight, 0) == midnight + hours(24));
  CHECK(next_daily_run(midnight + hours(23), 23 * 60 + 59) == midnight + hours(23) + minutes(59));
}

TEST_CASE("rollback and finalize take the run they are for", "[service][jobs]") {
  for (const char* kind : {"rollback", "finalize"}) {
    auto parsed = parse_request(kind, R"({"run_id": "r20261203T101010Z-0a1b2c3d"})");
    REQUIRE(parsed.job);
    CHECK(parsed.job->kind ==
          (std::string(kind) == "rollback" ? JobKind::rollback : JobKind::finalize));
    CHECK(parsed.job->run_id == "r20261203T101010Z-0a1b2c3d");
    CHECK(std::string(job_kind_name(parsed.job->kind)) == kind);
    // As the CLI's --run is required, so is params.run_id.
    for (const char* params : {"", "{}", R"({"run_id": null})"}) {
      auto missing = parse_request(kind, params);
      CHECK_FALSE(missing.job);
      CHECK(missing.error.find("needs params.run_id") != std::string::npos);
    }
    CHECK_FALSE(parse_request(kind, R"({"run_id": "x", "ids": [1]})").job);
    CHECK_FALSE(parse_request(kind, R"({"run_id": 7})").job);
    auto odd = parse_request(kind, R"({"run_id": "a'; DROP TABLE users; --"})");
    CHECK_FALSE(odd.job);
    CHECK(odd.error.find("DROP") == std::string::npos);
  }
  auto verify = parse_request("verify", R"({"run_id": "m1"})");
  REQUIRE(verify.job);
  CHECK(verify.job->run_id == "m1");
  CHECK_FALSE(parse_request("migrate", R"({"run_id": "m1"})").job);
}

TEST_CASE("status takes a selection or none", "[service][jobs]") {
  auto all = parse_request("status", "");
  REQUIRE(all.job);
  CHECK(all.job->kind == JobKind::status);
  CHECK(all.job->selection.empty());
  auto some = parse_request("status", R"({"usernames": ["alice"]})");
  REQUIRE(some.job);
  CHECK(some.job->selection.usernames == std::vector<std::string>{"alice"});
}

TEST_CASE("selected jobs are the ones that touch only the users they name", "[service][jobs]") {
  auto job = [](const char* kind, const char* params) { return *parse_request(kind, params).job; };
  CHECK(is_selected_job(job("migrate", R"({"usernames": ["a", "b", "c"]})")));
  CHECK(is_selected_job(job("reset_mfa", R"({"ids": [1]})")));
  CHECK(is_selected_job(job("status", R"({"ids": [1]})")));
  CHECK(is_selected_job(job("verify", R"({"ids": [1]})")));
  CHECK(is_selected_job(job("rollback", R"({"run_id": "r1"})")));
  CHECK_FALSE(is_selected_job(job("migrate", "")));
  CHECK_FALSE(is_selected_job(job("status", "{}")));
  CHECK_FALSE(is_selected_job(job("verify", R"({"ids": [1], "run_id": "m1"})")));
  CHECK_FALSE(is_selected_job(job("finalize", R"({"run_id": "m1"})")));
  std::string many = "{\"ids\": [";
  for (std::size_t i = 0; i <= kMaxSelectedUsers; ++i) many += (i ? "," : "") + std::to_string(i);
  CHECK_FALSE(is_selected_job(job("migrate", (many + "]}").c_str())));
}
