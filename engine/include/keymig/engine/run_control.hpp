#pragma once

// Run control while a migrate runs (docs/DESIGN.md section 2, "Run control"): pause,
// resume, and retune rows per second and batch size without a restart. `keymig serve`
// owns one for its lifetime and its HTTP routes change it; every run it starts points
// Options::control at it, so a pause outlives the run in progress and holds the next one.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace keymig::engine {

/// Thread-safe: the HTTP thread writes it, every lane's source and writer read it.
class RunControl {
 public:
  struct State {
    bool paused = false;
    std::optional<std::int64_t> max_rows_per_second;  // nullopt: the config's
    std::optional<std::int64_t> batch_size;           // nullopt: the config's
    std::chrono::system_clock::time_point since{};    // of the last change; epoch: never
    std::string by;                                   // who made it (remote address)
  };

  void pause(const std::string& by) {
    std::lock_guard<std::mutex> lock(mu_);
    state_.paused = true;
    touch(by);
    paused_.store(true);
  }
  void resume(const std::string& by) {
    std::lock_guard<std::mutex> lock(mu_);
    state_.paused = false;
    touch(by);
    paused_.store(false);
  }
  /// nullopt leaves a value as it is; 0 rows per second means unthrottled.
  void retune(std::optional<std::int64_t> max_rows_per_second,
              std::optional<std::int64_t> batch_size, const std::string& by) {
    std::lock_guard<std::mutex> lock(mu_);
    if (max_rows_per_second) {
      state_.max_rows_per_second = max_rows_per_second;
      rate_.store(*max_rows_per_second);
    }
    if (batch_size) {
      state_.batch_size = batch_size;
      batch_.store(*batch_size);
    }
    touch(by);
  }

  /// Lock-free reads for the hot path (every page, every batch).
  [[nodiscard]] bool paused() const noexcept { return paused_.load(); }
  /// The rate override, or `fallback` (the config's) when none was set.
  [[nodiscard]] std::int64_t rows_per_second(std::int64_t fallback) const noexcept {
    const auto v = rate_.load();
    return v < 0 ? fallback : v;
  }
  [[nodiscard]] std::int64_t batch_size(std::int64_t fallback) const noexcept {
    const auto v = batch_.load();
    return v <= 0 ? fallback : v;
  }
  [[nodiscard]] State state() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_;
  }

 private:
  void touch(const std::string& by) {
    state_.since = std::chrono::system_clock::now();
    state_.by = by;
  }
  mutable std::mutex mu_;
  State state_;
  std::atomic<bool> paused_{false};
  std::atomic<std::int64_t> rate_{-1};   // -1: no override
  std::atomic<std::int64_t> batch_{-1};  // -1: no override
};

/// The adaptive default's decision (docs/DESIGN.md section 2): how long to wait after a
/// batch whose commit took `latency`, given the recent ones. A batch slower than
/// kFactor x the median of the last kWindow (after kWarmup batches) earns a wait of the
/// excess over that median, capped at kMaxWait. Pure and deterministic: the test feeds it
/// synthetic latencies. Not thread-safe: Throttle calls it under its own mutex.
class AdaptiveBackoff {
 public:
  static constexpr std::size_t kWindow = 50;
  static constexpr std::size_t kWarmup = 10;
  static constexpr double kFactor = 3.0;
  static constexpr std::chrono::milliseconds kMaxWait{1000};

  /// Records one batch's commit latency; returns the wait before the next batch (0: go).
  /// Slow batches join the window too, so that a lasting shift in what the server can do
  /// becomes the new normal instead of a wait per batch forever.
  std::chrono::milliseconds observe(std::chrono::microseconds latency);
  /// The median of the window (0 before any batch).
  [[nodiscard]] std::chrono::microseconds median() const;
  /// The median the last observe() judged its batch against (0 during the warm-up).
  [[nodiscard]] std::chrono::microseconds judged_median() const noexcept { return judged_; }

 private:
  std::chrono::microseconds window_[kWindow]{};
  std::chrono::microseconds judged_{0};
  std::size_t count_ = 0;  // batches seen (the window holds min(count_, kWindow))
};

/// The adaptive default's second rule (docs/DESIGN.md section 2): the load keymig itself
/// adds, which its own batches cannot see (they set their median). A canary commits an
/// empty write transaction every kInterval, as a sign-in that writes does: it waits for
/// the server's CPU and for its WAL flush, behind keymig's. The first kBaselineSamples,
/// taken before any batch, are the server as the application has it without keymig;
/// afterwards, while the median of the last kWindow canaries (a full window), and the
/// newest, are above the target (kFactor x the baseline, and at least kSlack over it), the
/// gap every lane leaves between batches doubles (from kStep, at most kMaxGap); once they are back
/// under the baseline's kRelax multiple, it shrinks by a quarter (below kStep: none). Pure and
/// deterministic: the test feeds it synthetic latencies. Not thread-safe: Throttle calls
/// it under its own mutex.
class CommitCanary {
 public:
  static constexpr std::chrono::milliseconds kInterval{100};
  static constexpr std::size_t kBaselineSamples = 5;
  static constexpr std::size_t kWindow = 5;
  static constexpr double kFactor = 2.0;
  static constexpr double kRelax = 1.5;
  static constexpr std::chrono::microseconds kSlack{1000};
  static constexpr std::chrono::milliseconds kStep{5};
  static constexpr std::chrono::milliseconds kMaxGap{1000};

  /// Records one canary's commit latency; returns the gap between batches from now on.
  std::chrono::milliseconds observe(std::chrono::microseconds latency);
  /// Whether the baseline is measured (Throttle measures it before the first page).
  [[nodiscard]] bool ready() const noexcept { return count_ >= kBaselineSamples; }
  /// The median of the baseline samples (0 before ready()).
  [[nodiscard]] std::chrono::microseconds baseline() const noexcept { return baseline_; }
  /// The median of the last kWindow canaries after the baseline (0 before the first).
  [[nodiscard]] std::chrono::microseconds recent() const noexcept { return recent_; }
  /// The latency above which the gap grows.
  [[nodiscard]] std::chrono::microseconds target() const noexcept;
  [[nodiscard]] std::chrono::milliseconds gap() const noexcept { return gap_; }

 private:
  std::chrono::microseconds samples_[kBaselineSamples > kWindow ? kBaselineSamples : kWindow]{};
  std::size_t count_ = 0;  // canaries seen, the baseline's included
  std::chrono::microseconds baseline_{0};
  std::chrono::microseconds recent_{0};
  std::chrono::milliseconds gap_{0};
};

}  // namespace keymig::engine
