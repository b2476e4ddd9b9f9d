#include "keymig/bench/crypto_bench.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "keymig/crypto/fernet.hpp"
#include "keymig/crypto/floor.hpp"
#include "keymig/secure.hpp"

namespace keymig::bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kInputs = 1024;  // distinct tokens per op; a power of two
constexpr std::size_t kMask = kInputs - 1;
constexpr std::uint64_t kSamplesPerThread = 32;  // rotated tokens kept for the check
constexpr std::uint64_t kTimestamp = 1'700'000'000;

const char* const kOps[] = {"rotate", "classify", "verify"};

struct ThreadCount {
  std::uint64_t ops = 0;
  std::uint64_t failures = 0;
  double cpu_seconds = 0;
};

struct Measurement {
  double rate = 0;       // tokens per wall-clock second, all threads together
  double cpu_share = 0;  // CPU time the threads got / (wall time x threads)
};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs `op(thread, i)` on `threads` threads for `seconds` and returns tokens per second.
// Threads start together after they exist, so thread creation is not timed; `op`
// returns false for a wrong output, which fails the benchmark instead of counting.
template <typename Op>
Measurement measure(int threads, double seconds, const Op& op, const char* what) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::vector<ThreadCount> counts(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      ThreadCount count;
      const double cpu_start = thread_cpu_seconds();
      while (!stop.load(std::memory_order_relaxed)) {
        for (int k = 0; k < 16; ++k, ++count.ops)
          if (!op(t, count.ops)) ++count.failures;
      }
      count.cpu_seconds = thread_cpu_seconds() - cpu_start;
      counts[static_cast<std::size_t>(t)] = count;
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true, std::memory_order_relaxed);
  for (auto& thread : pool) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::uint64_t ops = 0;
  std::uint64_t failures = 0;
  double cpu = 0;
  for (const auto& count : counts) {
    ops += count.ops;
    failures += count.failures;
    cpu += count.cpu_seconds;
  }
  if (failures != 0)
    throw CryptoBenchError(std::string(what) + ": " + std::to_string(failures) + " of " +
                           std::to_string(ops) + " outputs were wrong");
  if (ops == 0 || elapsed <= 0) throw CryptoBenchError(std::string(what) + ": nothing measured");
  return {static_cast<double>(ops) / elapsed, cpu / (elapsed * threads)};
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double median_rate(const std::vector<Measurement>& samples) {
  std::vector<double> rates;
  for (const auto& m : samples) rates.push_back(m.rate);
  return median(rates);
}

// Tokens per second of CPU the threads actually got: the cost figure that stays put when
// other work shares the machine.
double median_cpu_rate(const std::vector<Measurement>& samples, int threads) {
  std::vector<double> rates;
  for (const auto& m : samples)
    rates.push_back(m.cpu_share > 0 ? m.rate / (m.cpu_share * threads) : 0);
  return median(rates);
}

double median_cpu_share(const std::vector<Measurement>& samples) {
  std::vector<double> shares;
  for (const auto& m : samples) shares.push_back(m.cpu_share);
  return median(shares);
}

void validate(const CryptoBenchOptions& options) {
  if (options.threads.empty()) throw UsageError("bench crypto: --threads needs at least one count");
  for (const int t : options.threads)
    if (t < 1 || t > 1024)
      throw UsageError("bench crypto: thread counts must be 1..1024, got " + std::to_string(t));
  if (!(options.seconds > 0) || options.seconds > 3600)
    throw UsageError("bench crypto: --seconds must be in (0, 3600]");
  if (options.plaintext_bytes > (1u << 20))
    throw UsageError("bench crypto: --plaintext-bytes must be at most 1048576");
  if (options.repetitions < 1 || options.repetitions > 100)
    throw UsageError("bench crypto: --repetitions must be 1..100");
}

// Everything the timed loops read: made before any timing, immutable during it.
struct Inputs {
  explicit Inputs(std::size_t plaintext_bytes)
      : active_key(crypto::Key::generate()), rolling_key(crypto::Key::generate()) {
    const crypto::Fernet rolling(crypto::Key::parse(rolling_key.encode().view()));
    const crypto::Fernet active(crypto::Key::parse(active_key.encode().view()));
    std::vector<crypto::Key> rolling_keys;
    rolling_keys.push_back(crypto::Key::parse(rolling_key.encode().view()));
    ring = std::make_unique<crypto::KeyRing>(crypto::Key::parse(active_key.encode().view()),
                                             std::move(rolling_keys));
    std::mt19937_64 rng(std::random_device{}());
    static constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    for (std::size_t i = 0; i < kInputs; ++i) {
      std::string p(plaintext_bytes, 'A');
      for (char& c : p) c = kBase32[rng() % 32];
      plaintexts.emplace_back(std::move(p));
      under_rolling.push_back(rolling.encrypt_at_time(plaintexts.back().view(), kTimestamp + i));
      under_active.push_back(active.encrypt_at_time(plaintexts.back().view(), kTimestamp + i));
      raw_rolling.push_back(crypto::token_bytes(under_rolling.back().view()));
    }
  }
  crypto::Key active_key;
  crypto::Key rolling_key;
  std::unique_ptr<crypto::KeyRing> ring;
  std::vector<SecretString> plaintexts;
  std::vector<SecretString> under_rolling;
  std::vector<SecretString> under_active;
  std::vector<std::vector<std::uint8_t>> raw_rolling;
};

// Each thread walks the inputs from its own offset, so threads do not share cache lines
// of the same token at the same moment.
std::size_t input_index(int thread, int threads, std::uint64_t i) {
  return (static_cast<std::size_t>(thread) * kInputs / static_cast<std::size_t>(threads) +
          static_cast<std::size_t>(i)) &
         kMask;
}

Measurement measure_rotate(const Inputs& in, int threads, double seconds) {
  struct Kept {
    std::size_t index;
    SecretString token;
  };
  std::vector<std::vector<Kept>> kept(static_cast<std::size_t>(threads));
  for (auto& k : kept) k.reserve(kSamplesPerThread);
  const Measurement rate = measure(
      threads, seconds,
      [&](int t, std::uint64_t i) {
        const std::size_t index = input_index(t, threads, i);
        crypto::Rotation r = in.ring->rotate(in.under_rolling[index].view());
        const bool ok = r.reason == crypto::Reason::ok && r.key_index == 1 && !r.token.empty();
        if (i < kSamplesPerThread)
          kept[static_cast<std::size_t>(t)].push_back({index, std::move(r.token)});
        return ok;
      },
      "rotate");
  // After the clock: the outputs must be tokens the active key alone reads back.
  for (const auto& thread_kept : kept) {
    if (thread_kept.empty()) throw CryptoBenchError("rotate: no output was kept for checking");
    for (const auto& k : thread_kept) {
      const auto check = in.ring->decrypt_active(k.token.view());
      if (!check.ok() || check.plaintext.view() != in.plaintexts[k.index].view() ||
          check.timestamp != kTimestamp + k.index)
        throw CryptoBenchError(
            "rotate: a rotated token does not decrypt under the active key "
            "to its original plaintext and timestamp");
    }
  }
  return rate;
}

Measurement measure_classify(const Inputs& in, int threads, double seconds) {
  return measure(
      threads, seconds,
      [&](int t, std::uint64_t i) {
        const auto c = in.ring->classify(in.under_rolling[input_index(t, threads, i)].view());
        return c.reason == crypto::Reason::ok && c.key_index == 1;
      },
      "classify");
}

Measurement measure_verify(const Inputs& in, int threads, double seconds) {
  return measure(
      threads, seconds,
      [&](int t, std::uint64_t i) {
        const std::size_t index = input_index(t, threads, i);
        const auto d = in.ring->decrypt_active(in.under_active[index].view());
        return d.ok() && d.plaintext.size() == in.plaintexts[index].size();
      },
      "verify");
}

Measurement measure_floor(const Inputs& in, double seconds) {
  crypto::RotationFloor floor(in.rolling_key, in.active_key);
  return measure(
      1, seconds, [&](int, std::uint64_t i) { return floor.run(in.raw_rolling[i & kMask]); },
      "floor");
}

std::string with_commas(double value) {
  const auto n = static_cast<long long>(std::llround(value));
  std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

CryptoBenchReport run_crypto_bench(const CryptoBenchOptions& options) {
  validate(options);
  const Inputs in(options.plaintext_bytes);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  std::vector<int> counts = options.threads;
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  // The ratio compares one thread with one thread, whatever counts were asked for.
  const bool one_listed = counts.front() == 1;

  // samples[count index][op] and the floor, interleaved per repetition so that a change
  // in the machine's load hits every figure alike.
  std::vector<std::array<std::vector<Measurement>, 3>> samples(counts.size());
  std::vector<Measurement> floor_samples;
  std::vector<Measurement> rotate_one;
  for (int rep = 0; rep < options.repetitions; ++rep) {
    for (std::size_t c = 0; c < counts.size(); ++c) {
      const int threads = counts[c];
      samples[c][0].push_back(measure_rotate(in, threads, options.seconds));
      samples[c][1].push_back(measure_classify(in, threads, options.seconds));
      samples[c][2].push_back(measure_verify(in, threads, options.seconds));
    }
    if (!one_listed) rotate_one.push_back(measure_rotate(in, 1, options.seconds));
    floor_samples.push_back(measure_floor(in, options.seconds));
  }

  CryptoBenchReport report;
  report.plaintext_bytes = options.plaintext_bytes;
  report.cores = cores;
  report.seconds = options.seconds;
  report.repetitions = options.repetitions;
  for (std::size_t c = 0; c < counts.size(); ++c) {
    for (std::size_t op = 0; op < 3; ++op) {
      CryptoBenchResult result;
      result.op = kOps[op];
      result.threads = counts[c];
      result.tokens_per_second = median_rate(samples[c][op]);
      result.cpu_share = median_cpu_share(samples[c][op]);
      result.per_thread_tokens_per_cpu_second = median_cpu_rate(samples[c][op], counts[c]);
      result.per_thread_tokens_per_second = result.tokens_per_second / counts[c];
      result.oversubscribed = static_cast<unsigned>(counts[c]) > cores;
      report.results.push_back(result);
    }
  }
  report.floor.tokens_per_second = median_rate(floor_samples);
  report.floor.tokens_per_cpu_second = median_cpu_rate(floor_samples, 1);
  const auto& rotate_single = one_listed ? samples[0][0] : rotate_one;
  // Cost ratio: CPU time per rotate over CPU time per floor token, both on one thread; CPU
  // time, because a neighbour's load would otherwise move the ratio.
  report.floor.ratio = report.floor.tokens_per_cpu_second / median_cpu_rate(rotate_single, 1);
  return report;
}

std::string to_json(const CryptoBenchReport& report) {
  nlohmann::json results = nlohmann::json::array();
  for (const auto& r : report.results)
    results.push_back({{"op", r.op},
                       {"threads", r.threads},
                       {"tokens_per_second", r.tokens_per_second},
                       {"per_thread_tokens_per_second", r.per_thread_tokens_per_second},
                       {"oversubscribed", r.oversubscribed},
                       {"cpu_share", r.cpu_share},
                       {"per_thread_tokens_per_cpu_second", r.per_thread_tokens_per_cpu_second}});
  const nlohmann::json out{{"results", results},
                           {"floor",
                            {{"tokens_per_second", report.floor.tokens_per_second},
                             {"tokens_per_cpu_second", report.floor.tokens_per_cpu_second},
                             {"ratio", report.floor.ratio}}},
                           {"plaintext_bytes", report.plaintext_bytes},
                           {"cores", report.cores},
                           {"seconds", report.seconds},
                           {"repetitions", report.repetitions}};
  return out.dump();
}

std::string to_text(const CryptoBenchReport& report) {
  char line[160];
  std::string out;
  std::snprintf(line, sizeof line,
                "keymig bench crypto: %zu-byte plaintexts, %u cores, median of %d x %.2f s\n",
                report.plaintext_bytes, report.cores, report.repetitions, report.seconds);
  out += line;
  std::snprintf(line, sizeof line, "%-9s %7s %14s %14s %18s %6s\n", "op", "threads", "tokens/s",
                "per thread", "per thread per CPU", "CPU");
  out += line;
  bool any_oversubscribed = false;
  double least_share = 1;
  for (const auto& r : report.results) {
    if (!r.oversubscribed) least_share = std::min(least_share, r.cpu_share);
    if (r.oversubscribed) {
      any_oversubscribed = true;
      std::snprintf(line, sizeof line, "%-9s %7d   oversubscribed: %d threads on %u cores\n",
                    r.op.c_str(), r.threads, r.threads, report.cores);
    } else {
      std::snprintf(line, sizeof line, "%-9s %7d %14s %14s %18s %5.0f%%\n", r.op.c_str(), r.threads,
                    with_commas(r.tokens_per_second).c_str(),
                    with_commas(r.per_thread_tokens_per_second).c_str(),
                    with_commas(r.per_thread_tokens_per_cpu_second).c_str(), r.cpu_share * 100);
    }
    out += line;
  }
  std::snprintf(line, sizeof line, "%-9s %7d %14s %14s %18s\n", "floor", 1,
                with_commas(report.floor.tokens_per_second).c_str(),
                with_commas(report.floor.tokens_per_second).c_str(),
                with_commas(report.floor.tokens_per_cpu_second).c_str());
  out += line;
  std::snprintf(line, sizeof line,
                "rotate costs %.2f x the primitive floor in CPU time (2 HMAC-SHA256, "
                "AES-128-CBC decrypt and encrypt, 16 random bytes per token)\n",
                report.floor.ratio);
  out += line;
  if (least_share < 0.9) {
    std::snprintf(line, sizeof line,
                  "the machine was busy: some measurements got only %.0f%% of their cores, "
                  "so their figures are low\n",
                  least_share * 100);
    out += line;
  }
  if (any_oversubscribed)
    out +=
        "oversubscribed counts have more threads than cores: their figures (in --json) measure "
        "the scheduler, not keymig\n";
  return out;
}

}  // namespace keymig::bench
