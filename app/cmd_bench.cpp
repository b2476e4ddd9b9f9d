// keymig bench: throughput figures from the one binary. `crypto` is here; `db` (end-to-end
// rows/s on a scratch table) registers its own subcommand in this file beside it.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "command.hpp"
#include "keymig/bench/crypto_bench.hpp"
#include "keymig/bench/db_bench.hpp"
#include "keymig/db/connection.hpp"

namespace keymig::app {
namespace {

void write_stdout(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

// Adds `keymig bench crypto` to `bench`; returns its action (run when it was chosen).
std::function<int()> setup_bench_crypto(CLI::App& bench, Common& common) {
  CLI::App* sub = bench.add_subcommand(
      "crypto",
      "Fernet throughput per thread count: rotate (find the key by HMAC, decrypt, re-encrypt "
      "with a fresh IV), classify (HMAC only) and verify (decrypt under the active key), "
      "against the primitive floor of direct OpenSSL calls. Keys are generated in memory; "
      "no config, no database");
  struct Flags {
    bench::CryptoBenchOptions options;
    std::vector<int> threads;
  };
  auto flags = std::make_shared<Flags>();
  sub->add_option("--threads", flags->threads,
                  "thread counts to measure, comma-separated (default: 1 and the core count)")
      ->delimiter(',')
      ->type_name("N,N,...")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--seconds", flags->options.seconds, "seconds per timed measurement")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 3600.0));
  sub->add_option("--plaintext-bytes", flags->options.plaintext_bytes,
                  "plaintext size; 32 is a 32-character base32 TOTP secret")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  sub->add_option("--repetitions", flags->options.repetitions,
                  "measurements per figure; the median is reported (the machine may be shared)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  sub->footer(
      "Each figure is a median over the repetitions. Thread counts above the core count are "
      "flagged as oversubscribed instead of reported as figures; a low CPU share means other "
      "work was running. Takes about 3 x repetitions x seconds per thread count.");
  add_output_flags(*sub, common);
  return [sub, flags, &common]() -> int {
    if (!sub->parsed()) return -1;
    bench::CryptoBenchOptions options = flags->options;
    if (!flags->threads.empty()) {
      options.threads = flags->threads;
    } else {
      const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      options.threads = cores > 1 ? std::vector<int>{1, cores} : std::vector<int>{1};
    }
    const bench::CryptoBenchReport report = bench::run_crypto_bench(options);
    write_stdout(common.json ? bench::to_json(report) + "\n" : bench::to_text(report));
    return kExitOk;
  };
}

// Adds `keymig bench db` to `bench`; returns its action (run when it was chosen).
std::function<int()> setup_bench_db(CLI::App& bench, Common& common) {
  CLI::App* sub = bench.add_subcommand(
      "db",
      "end-to-end: keymig migrate (run as a child of this binary) on a scratch table of "
      "rolling-key tokens, against PostgreSQL's own one-statement rewrite of the same rows; "
      "migrate seconds, rows/s, the floor (from a new session; the warm-session figure beside it), "
      "the ratio and peak RSS. Drops its scratch tables");
  auto options = std::make_shared<bench::DbBenchOptions>();
  sub->add_option("--rows", options->rows, "rows in the scratch table")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100'000'000}));
  sub->add_option("--repeat", options->repeat, "measurements; the median is reported")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  sub->add_option("--targets", options->targets,
                  "also migrate the same rows split over this many tables as one run over "
                  "keyMigration.targets, and report its time against one table's")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  sub->add_option("--threads", options->threads, "migrate --threads (0: all cores)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--batch-size", options->batch_size, "migrate --batch-size (0: its default)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1'000'000}));
  sub->add_flag("--journal,!--no-journal", options->journal,
                "journal old tokens as a production run does (default on)");
  sub->add_option("--migrate-binary", options->keymig_binary,
                  "run this keymig binary's migrate instead of this one's: compares two builds "
                  "on the same rows and the same floor (default: this binary)")
      ->check(CLI::ExistingFile);
  add_db_flags(*sub, common);
  add_output_flags(*sub, common);
  return [sub, options, &common]() -> int {
    if (!sub->parsed()) return -1;
    bench::DbBenchOptions o = *options;
    o.dsn = common.dsn;
    // It writes a scratch schema: never into whatever database libpq would pick by default.
    if (!db::dsn_configured(o.dsn))
      throw UsageError(
          "bench db: give --dsn (e.g. $(scripts/pg newdb keymig_bench)) or set libpq's PG* "
          "variables");
    const bench::DbBenchResult result = bench::run_db_bench(o);
    write_stdout(common.json ? bench::db_bench_json(result) + "\n" : bench::db_bench_text(result));
    return kExitOk;
  };
}

std::function<int()> setup_bench(CLI::App& sub, Common& common) {
  sub.require_subcommand(1);
  // Each subcommand's action returns -1 when it was not the one chosen.
  std::vector<std::function<int()>> actions;
  actions.push_back(setup_bench_crypto(sub, common));
  actions.push_back(setup_bench_db(sub, common));
  return [actions]() -> int {
    for (const auto& action : actions) {
      const int rc = action();
      if (rc >= 0) return rc;
    }
    return kExitUsage;
  };
}

const Registrar kBench{CommandSpec{
    "bench",
    "throughput figures; crypto: Fernet tokens/s per thread count; db: migrate rows/s vs the floor",
    300,
    setup_bench,
    {},
    "  keymig bench crypto --threads 1,4          tokens/s on 1 and 4 threads\n"
    "  keymig bench db --dsn DSN --rows 200000     migrate rows/s on a scratch table\n"
    "  keymig bench db --dsn DSN --rows 300000 --targets 3   one table vs three of a third"}};

}  // namespace
}  // namespace keymig::app
