#pragma once

// The progress meter: rows, rate and ETA for Options::progress and the progress gauges.

#include <chrono>
#include <cstdint>
#include <mutex>

#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// Calls options.progress at most every 200 ms (and once with Progress::last on finish,
/// or at destruction when the pass ended otherwise), logs a `progress` line every
/// options.progress_log_every, and sets keymig_run_progress_ratio and
/// keymig_rows_remaining. Thread-safe: lanes share one.
class ProgressMeter {
 public:
  ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before);
  ~ProgressMeter();
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;
  void add(std::int64_t rows);
  void finish();
  /// The throttle's status for the progress line ("" when batches go); reported at once.
  void set_status(std::string status);

 private:
  [[nodiscard]] Progress snapshot() const;
  void emit(bool last);
  std::mutex mutex_;
  const Options& options_;
  std::int64_t total_, done_before_, done_ = 0;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
  std::chrono::steady_clock::time_point last_log_ = start_;
  std::string status_;
  void log_line();  // under mutex_: the `progress` log line, with the status
};

[[nodiscard]] double seconds_since(std::chrono::steady_clock::time_point start);

}  // namespace keymig::engine::detail
