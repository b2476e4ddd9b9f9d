#include "keymig/bench/crypto_bench.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

using namespace keymig::bench;

TEST_CASE("a short crypto bench on one thread gives positive figures and a valid floor",
          "[bench]") {
  CryptoBenchOptions options;
  options.threads = {1};
  options.seconds = 0.2;
  options.repetitions = 1;
  const CryptoBenchReport report = run_crypto_bench(options);

  REQUIRE(report.results.size() == 3);
  std::set<std::string> ops;
  for (const auto& r : report.results) {
    INFO(r.op);
    ops.insert(r.op);
    CHECK(r.threads == 1);
    CHECK(r.tokens_per_second > 0);
    CHECK(r.per_thread_tokens_per_second == Approx(r.tokens_per_second));
    CHECK_FALSE(r.oversubscribed);
  }
  CHECK(ops == std::set<std::string>{"rotate", "classify", "verify"});
  CHECK(report.floor.tokens_per_second > 0);
  // Valid: a finite positive cost ratio (its size depends on the machine's load).
  CHECK(report.floor.ratio > 0);
  CHECK(std::isfinite(report.floor.ratio));
  for (const auto& r : report.results) CHECK(r.cpu_share > 0);
  CHECK(report.plaintext_bytes == 32);
  CHECK(report.cores >= 1);

  const auto json = nlohmann::json::parse(to_json(report));
  CHECK(json.at("results").size() == 3);
  CHECK(json.at("results")[0].at("tokens_per_second").get<double>() > 0);
  CHECK(json.at("floor").at("ratio").get<double>() == Approx(report.floor.ratio));
  CHECK(json.at("plaintext_bytes") == 32);
  const std::string text = to_text(report);
  CHECK(text.find("rotate costs") != std::string::npos);
}

TEST_CASE("thread counts above the core count are flagged, not passed off as figures", "[bench]") {
  CryptoBenchOptions options;
  options.threads = {static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) + 1};
  options.seconds = 0.05;
  options.repetitions = 1;
  const auto report = run_crypto_bench(options);
  REQUIRE_FALSE(report.results.empty());
  for (const auto& r : report.results) CHECK(r.oversubscribed);
  CHECK(to_text(report).find("oversubscribed") != std::string::npos);
  CHECK(report.floor.ratio > 0);  // measured against a one-thread rotate all the same
}

TEST_CASE("bad crypto bench options are usage errors", "[bench]") {
  CryptoBenchOptions options;
  options.threads = {};
  CHECK_THROWS_AS(run_crypto_bench(options), keymig::UsageError);
  options.threads = {0};
  CHECK_THROWS_AS(run_crypto_bench(options), keymig::UsageError);
  options.threads = {1};
  options.seconds = 0;
  CHECK_THROWS_AS(run_crypto_bench(options), keymig::UsageError);
}
