#include "progress.hpp"

#include <algorithm>

namespace keymig::engine::detail {

ProgressMeter::ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before)
    : options_(options), total_(total), done_before_(done_before) {}

void ProgressMeter::add(std::int64_t rows) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ += rows;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  emit();
}

void ProgressMeter::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  emit();
}

void ProgressMeter::set_status(std::string status) {
  std::lock_guard<std::mutex> lock(mutex_);
  status_ = std::move(status);
  emit();
}

void ProgressMeter::emit() {
  Progress p;
  p.rows_done = done_before_ + done_;
  p.rows_total = std::max(total_, p.rows_done);
  double secs = seconds_since(start_);
  p.rows_per_second = secs > 0 ? static_cast<double>(done_) / secs : 0;
  p.eta_seconds = p.rows_per_second > 0
                      ? static_cast<double>(p.rows_total - p.rows_done) / p.rows_per_second
                      : -1;
  if (options_.metrics && p.rows_total > 0) {
    options_.metrics->set_progress(static_cast<double>(p.rows_done) / p.rows_total,
                                   static_cast<double>(p.rows_total - p.rows_done));
  }
  p.status = status_;
  if (options_.progress) options_.progress(p);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace keymig::engine::detail
