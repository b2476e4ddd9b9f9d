#include "keymig/metrics/metrics.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "exposition.hpp"
#include "process.hpp"

using keymig::metrics::Metrics;
using keymig::test::sample;

namespace {

// The version CMake passes to the library as KEYMIG_VERSION: `project(keymig VERSION x)`.
std::string project_version() {
  const auto cmake = keymig::test::read_file(std::string(KEYMIG_SOURCE_DIR) + "/CMakeLists.txt");
  std::smatch match;
  REQUIRE(std::regex_search(cmake, match, std::regex(R"(project\(keymig\s+VERSION\s+([0-9.]+))")));
  return match[1];
}

}  // namespace

TEST_CASE("every family of the design is exported with its type", "[metrics]") {
  Metrics m;
  keymig::test::touch_every_family(m);
  const auto text = m.serialize();

  const std::vector<std::pair<std::string, std::string>> expected = {
      {"keymig_rows_total", "counter"},
      {"keymig_rows_by_key", "gauge"},
      {"keymig_batches_total", "counter"},
      {"keymig_batch_duration_seconds", "histogram"},
      {"keymig_run_progress_ratio", "gauge"},
      {"keymig_rows_remaining", "gauge"},
      {"keymig_run_progress_updated_timestamp_seconds", "gauge"},
      {"keymig_journal_rows", "gauge"},
      {"keymig_journal_oldest_seconds", "gauge"},
      {"keymig_crypto_operations_total", "counter"},
      {"keymig_db_retries_total", "counter"},
      {"keymig_last_success_timestamp_seconds", "gauge"},
      {"keymig_last_run_success", "gauge"},
      {"keymig_run_in_progress", "gauge"},
      {"keymig_build_info", "gauge"},
      {"keymig_throttled", "gauge"},
      {"keymig_throttled_seconds_total", "counter"},
  };
  for (const auto& [name, type] : expected) {
    INFO(name);
    CHECK(keymig::test::type_of(text, name) == type);
  }
  CHECK(keymig::test::families(text).size() == expected.size());

  SECTION("with the labels of the design") {
    CHECK(sample(text, R"(keymig_rows_total{outcome="rotated",target="users"})") == 1.0);
    CHECK(sample(text, R"(keymig_rows_by_key{key="rolling_0",target="users"})") == 10.0);
    CHECK(sample(text, R"(keymig_rows_by_key{key="active",target="users"})") == 5.0);
    CHECK(sample(text, R"(keymig_batches_total{status="ok",target="users"})") == 1.0);
    CHECK(sample(text, R"(keymig_throttled{reason="replica_lag"})") == 1.0);
    CHECK(sample(text, R"(keymig_throttled{reason="flag_file"})") == 0.0);
    CHECK(sample(text, R"(keymig_throttled_seconds_total{reason="replica_lag"})") == 1.5);
    CHECK(sample(text, R"(keymig_throttled_seconds_total{reason="active_sessions"})") == 0.0);
    CHECK(sample(text, "keymig_batch_duration_seconds_count") == 1.0);
    CHECK(sample(text, R"(keymig_batch_duration_seconds_bucket{le="0.025"})") == 1.0);
    CHECK(sample(text, R"(keymig_batch_duration_seconds_bucket{le="0.01"})") == 0.0);
    CHECK(sample(text, R"(keymig_batch_duration_seconds_bucket{le="60"})") == 1.0);
    CHECK(sample(text, "keymig_run_progress_ratio") == 0.5);
    CHECK(sample(text, "keymig_rows_remaining") == 10.0);
    CHECK(sample(text, R"(keymig_journal_rows{target="users"})") == 1500.0);
    CHECK(sample(text, R"(keymig_journal_oldest_seconds{target="users"})") == 7200.0);
    CHECK(sample(text, R"(keymig_crypto_operations_total{op="decrypt"})") == 1.0);
    CHECK(sample(text, "keymig_db_retries_total") == 1.0);
    CHECK(sample(text, R"(keymig_last_success_timestamp_seconds{command="migrate"})") ==
          1700000000.0);
    CHECK(sample(text, R"(keymig_last_run_success{command="migrate"})") == 1.0);
    CHECK(sample(text, R"(keymig_last_run_success{command="verify"})") == 0.0);
    CHECK(sample(text, "keymig_run_in_progress") == 1.0);
    CHECK(sample(text, R"(keymig_build_info{version=")" + project_version() + R"("})") == 1.0);
  }
}

TEST_CASE("counters move by what is added and gauges hold what is set", "[metrics]") {
  Metrics m;
  m.add_rows("users", "rotated", 3);
  m.add_rows("users", "rotated", 4);
  m.add_rows("public.admins", "conflict", 2);
  m.observe_batch("users", "failed", 0.5);
  m.observe_batch("users", "failed", 2.0);
  m.set_progress(0.25, 300);
  m.set_progress(0.75, 100);
  m.set_run_in_progress(true);
  m.set_run_in_progress(false);
  const auto text = m.serialize();

  CHECK(sample(text, R"(keymig_rows_total{outcome="rotated",target="users"})") == 7.0);
  CHECK(sample(text, R"(keymig_rows_total{outcome="conflict",target="public.admins"})") == 2.0);
  CHECK(sample(text, R"(keymig_batches_total{status="failed",target="users"})") == 2.0);
  CHECK(sample(text, "keymig_batch_duration_seconds_sum") == 2.5);
  CHECK(sample(text, "keymig_run_progress_ratio") == 0.75);
  CHECK(sample(text, "keymig_rows_remaining") == 100.0);
  CHECK(sample(text, "keymig_run_in_progress") == 0.0);

  SECTION("a new target starts every outcome and status at zero") {
    for (const char* outcome :
         {"already_active", "flag_fixed", "empty", "undecryptable", "conflict"}) {
      INFO(outcome);
      CHECK(sample(text, std::string(R"(keymig_rows_total{outcome=")") + outcome +
                             R"(",target="users"})") == 0.0);
    }
    CHECK(sample(text, R"(keymig_batches_total{status="ok",target="users"})") == 0.0);
  }
  SECTION("a later success flips the failed command back to 1") {
    m.set_last_failure("migrate");
    CHECK(sample(m.serialize(), R"(keymig_last_run_success{command="migrate"})") == 0.0);
    m.set_last_success("migrate", 1800000000);
    CHECK(sample(m.serialize(), R"(keymig_last_run_success{command="migrate"})") == 1.0);
  }
}

TEST_CASE("label values outside their sets are counted as other, never as new series",
          "[metrics]") {
  Metrics m;
  m.add_rows("users", "user-4711", 1);
  m.add_rows("users", "user-4712", 1);
  m.set_rows_by_key("users", "rolling_x", 3);
  m.set_rows_by_key("users", "rolling_12", 4);
  m.add_crypto_operations("mystery", 5);
  m.observe_batch("users", "exploded", 0.1);
  m.set_last_success("42", 1);
  const auto text = m.serialize();

  CHECK(sample(text, R"(keymig_rows_total{outcome="other",target="users"})") == 2.0);
  CHECK(text.find("user-4711") == std::string::npos);
  CHECK(sample(text, R"(keymig_rows_by_key{key="other",target="users"})") == 3.0);
  CHECK(sample(text, R"(keymig_rows_by_key{key="rolling_12",target="users"})") == 4.0);
  CHECK(sample(text, R"(keymig_crypto_operations_total{op="other"})") == 5.0);
  CHECK(sample(text, R"(keymig_batches_total{status="other",target="users"})") == 1.0);
  CHECK(sample(text, R"(keymig_last_run_success{command="other"})") == 1.0);
}

TEST_CASE("pipeline workers adding at once give the exact sum", "[metrics][concurrency]") {
  Metrics m;
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&m, t] {
      // Half the workers see a target first, so series creation races too.
      const std::string target = t % 2 ? "users" : "admins";
      for (int i = 0; i < kIterations; ++i) {
        m.add_rows(target, "rotated", 1);
        m.add_rows("users", "empty", 2);
        m.add_crypto_operations("encrypt", 1);
        m.observe_batch(target, "ok", 0.001 * (i % 7));
        m.add_db_retry();
        m.set_rows_by_key("users", "active", i);
        if (i % 1000 == 0) (void)m.serialize();  // a scrape in the middle of it all
      }
    });
  }
  for (auto& w : workers) w.join();
  const auto text = m.serialize();
  const double half = kThreads / 2 * kIterations;
  CHECK(sample(text, R"(keymig_rows_total{outcome="rotated",target="users"})") == half);
  CHECK(sample(text, R"(keymig_rows_total{outcome="rotated",target="admins"})") == half);
  CHECK(sample(text, R"(keymig_rows_total{outcome="empty",target="users"})") ==
        2.0 * kThreads * kIterations);
  CHECK(sample(text, R"(keymig_crypto_operations_total{op="encrypt"})") ==
        1.0 * kThreads * kIterations);
  CHECK(sample(text, R"(keymig_batches_total{status="ok",target="users"})") == half);
  CHECK(sample(text, "keymig_batch_duration_seconds_count") == 1.0 * kThreads * kIterations);
  CHECK(sample(text, "keymig_db_retries_total") == 1.0 * kThreads * kIterations);
}

TEST_CASE("progress is kept within 0..1 and rows remaining is never negative", "[metrics]") {
  Metrics m;
  m.set_progress(1.7, -3);
  auto text = m.serialize();
  CHECK(sample(text, "keymig_run_progress_ratio") == 1.0);
  CHECK(sample(text, "keymig_rows_remaining") == 0.0);
  m.set_progress(-0.2, 5);
  text = m.serialize();
  CHECK(sample(text, "keymig_run_progress_ratio") == 0.0);
  CHECK(sample(text, "keymig_rows_remaining") == 5.0);
}

TEST_CASE("a key or token passed by mistake as a label value never reaches the log", "[metrics]") {
  // What a careless caller could pass: a Fernet key and a token (both made up).
  const std::string key = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
  const std::string token =
      "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_"
      "5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
  keymig::test::TempDir dir;
  const auto captured = dir.path() + "/stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  const int file = ::open(captured.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::dup2(file, STDERR_FILENO);
  ::close(file);
  Metrics m;
  m.add_rows("users", token, 1);
  m.set_rows_by_key("users", key, 1);
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);

  const auto log = keymig::test::read_file(captured);
  INFO(log);
  CHECK(log.find("unknown_label_value") != std::string::npos);  // the mistake is reported
  CHECK(log.find(key) == std::string::npos);
  CHECK(log.find(key.substr(0, 12)) == std::string::npos);
  CHECK(log.find(token.substr(0, 20)) == std::string::npos);
  const auto text = m.serialize();
  CHECK(text.find(key) == std::string::npos);
  CHECK(text.find(token) == std::string::npos);
}

TEST_CASE("progress is labelled with the recorded target and says when it was set", "[metrics]") {
  Metrics m;
  m.set_target("public.users.mfa_secret");
  const double before =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  m.set_progress(0.1, 900);
  const auto text = m.serialize();
  CHECK(sample(text, R"(keymig_run_progress_ratio{target="public.users.mfa_secret"})") == 0.1);
  CHECK(sample(text, R"(keymig_rows_remaining{target="public.users.mfa_secret"})") == 900.0);
  const auto updated = sample(
      text, R"(keymig_run_progress_updated_timestamp_seconds{target="public.users.mfa_secret"})");
  REQUIRE(updated.has_value());
  CHECK(*updated >= before - 1);
  CHECK(*updated <= before + 60);
  // Another target's run in the same process keeps its own series.
  m.set_target("public.admins.mfa_secret");
  m.set_progress(1.0, 0);
  CHECK(sample(m.serialize(), R"(keymig_run_progress_ratio{target="public.users.mfa_secret"})") ==
        0.1);
  CHECK(sample(m.serialize(), R"(keymig_run_progress_ratio{target="public.admins.mfa_secret"})") ==
        1.0);
}
