#pragma once

// The progress meter: rows, rate and ETA for Options::progress and the progress gauges.

#include <chrono>
#include <cstdint>
#include <mutex>

#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// Calls options.progress at most every 200 ms (and on finish), and sets
/// keymig_run_progress_ratio and keymig_rows_remaining. Thread-safe: lanes share one.
class ProgressMeter {
 public:
  ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before);
  void add(std::int64_t rows);
  void finish();
  /// The throttle's status for the progress line ("" when batches go); reported at once.
  void set_status(std::string status);

 private:
  void emit();
  std::mutex mutex_;
  const Options& options_;
  std::int64_t total_, done_before_, done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
  std::string status_;
};

[[nodiscard]] double seconds_since(std::chrono::steady_clock::time_point start);

}  // namespace keymig::engine::detail
