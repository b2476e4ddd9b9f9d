// keymig bench: throughput figures from the one binary. `crypto` is here; `db` (end-to-end
// rows/s on a scratch table) registers its own subcommand in this file beside it.

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "command.hpp"
#include "keymig/bench/crypto_bench.hpp"

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

std::function<int()> setup_bench(CLI::App& sub, Common& common) {
  sub.require_subcommand(1);
  // Each subcommand's action returns -1 when it was not the one chosen.
  std::vector<std::function<int()>> actions;
  actions.push_back(setup_bench_crypto(sub, common));
  return [actions]() -> int {
    for (const auto& action : actions) {
      const int rc = action();
      if (rc >= 0) return rc;
    }
    return kExitUsage;
  };
}

const Registrar kBench{CommandSpec{
    "bench", "throughput figures; crypto: Fernet tokens/s per thread count", 300, setup_bench}};

}  // namespace
}  // namespace keymig::app
