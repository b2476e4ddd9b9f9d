#include "keymig/bench/db_bench.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

namespace {

// psql, not libpqxx: the test checks the database from outside, as an operator would.
std::string psql(const std::string& dsn, const std::string& sql) {
  const std::string cmd = "psql -X -Atq -d '" + dsn + "' -c \"" + sql + "\" 2>/dev/null";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string runs_count(const std::string& dsn) {
  // A subquery on a missing table fails at parse time, whatever CASE says: ask first.
  if (psql(dsn,
           "SELECT count(*) FROM pg_tables WHERE schemaname = 'keymig' AND tablename = 'runs'") !=
      "1")
    return "0";
  return psql(dsn, "SELECT count(*) FROM keymig.runs");
}

}  // namespace

TEST_CASE("bench db times migrate and the floor on the same rows and leaves nothing behind",
          "[db][bench]") {
  const char* dsn = std::getenv("KEYMIG_TEST_DSN");
  if (!dsn || !*dsn) {
    WARN("KEYMIG_TEST_DSN is not set: no database, nothing to measure");
    return;
  }
  keymig::bench::DbBenchOptions options;
  options.dsn = dsn;
  options.rows = 3000;
  options.batch_size = 500;
  options.threads = 2;
  options.keymig_binary = KEYMIG_BINARY;  // this test binary is not keymig
  const std::string runs_before = runs_count(dsn);

  SECTION("with the journal") {
    options.journal = true;
  }
  SECTION("without the journal, twice") {
    options.journal = false;
    options.repeat = 2;
  }
  SECTION("one table against the same rows in three, as one run over three targets") {
    options.targets = 3;
  }
  const auto result = keymig::bench::run_db_bench(options);

  CHECK(result.rows == 3000);
  REQUIRE(result.samples.size() == static_cast<std::size_t>(options.repeat));
  CHECK(result.migrate_seconds > 0);
  CHECK(result.floor_seconds > 0);
  CHECK(result.ratio == Approx(result.migrate_seconds / result.floor_seconds));
  CHECK(result.floor_warm_seconds > 0);
  // Machine-wide CPU from /proc/stat, in clock ticks: never negative, never more than
  // every core for the whole time (with a few ticks of slack: the kernel's per-core
  // counts are sampled, not exact).
  const double cores = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
  for (const auto& s : result.samples) {
    CHECK(s.migrate_cpu_seconds >= 0);
    CHECK(s.migrate_cpu_seconds <= (s.migrate_seconds + 0.05) * cores);
    CHECK(s.floor_cpu_seconds >= 0);
    CHECK(s.floor_cpu_seconds <= (s.floor_seconds + 0.05) * cores);
  }
  CHECK(result.ratio_warm == Approx(result.migrate_seconds / result.floor_warm_seconds));
  CHECK(result.peak_rss_bytes > 1024 * 1024);  // a real process, not a zeroed rusage

  const auto json = nlohmann::json::parse(keymig::bench::db_bench_json(result));
  CHECK(json.at("rows") == 3000);
  CHECK(json.at("migrate_seconds").get<double>() == Approx(result.migrate_seconds));
  CHECK(json.at("floor_seconds").get<double>() == Approx(result.floor_seconds));
  CHECK(json.at("ratio").get<double>() == Approx(result.ratio));
  CHECK(json.at("floor_warm_seconds").get<double>() == Approx(result.floor_warm_seconds));
  CHECK(json.at("samples").at(0).at("floor_warm_seconds").get<double>() > 0);
  CHECK(json.at("migrate_cpu_seconds").get<double>() == Approx(result.migrate_cpu_seconds));
  CHECK(json.at("floor_cpu_seconds").get<double>() == Approx(result.floor_cpu_seconds));
  CHECK(json.at("peak_rss_bytes").get<std::int64_t>() == result.peak_rss_bytes);
  CHECK(keymig::bench::db_bench_text(result).find("x the floor") != std::string::npos);
  if (options.targets > 1) {
    CHECK(result.targets == 3);
    CHECK(result.targets_migrate_seconds > 0);
    CHECK(result.targets_ratio == Approx(result.targets_migrate_seconds / result.migrate_seconds));
    CHECK(json.at("targets_ratio").get<double>() == Approx(result.targets_ratio));
    CHECK(json.at("samples").at(0).at("targets_migrate_seconds").get<double>() > 0);
    CHECK(keymig::bench::db_bench_text(result).find("3 targets") != std::string::npos);
  } else {
    CHECK_FALSE(json.contains("targets_ratio"));
  }

  // The scratch schema and the bench's runs (with their journal) are gone.
  CHECK(psql(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = '" + result.scratch_schema +
                      "'") == "0");
  CHECK(runs_count(dsn) == runs_before);
}

TEST_CASE("bench db refuses impossible options before it connects", "[bench]") {
  keymig::bench::DbBenchOptions options;
  options.dsn = "postgresql://nobody@127.0.0.1:1/none";  // never reached
  options.keymig_binary = KEYMIG_BINARY;
  SECTION("no rows") {
    options.rows = 0;
  }
  SECTION("no repeats") {
    options.repeat = 0;
  }
  SECTION("negative threads") {
    options.threads = -1;
  }
  SECTION("more targets than rows, or too many") {
    options.rows = 2;
    options.targets = 3;
  }
  SECTION("a binary that does not exist") {
    options.keymig_binary = "/nonexistent/keymig";
  }
  CHECK_THROWS_AS(keymig::bench::run_db_bench(options), keymig::UsageError);
}
