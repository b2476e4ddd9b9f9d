#include "progress.hpp"

#include <algorithm>

#include "keymig/log.hpp"

namespace keymig::engine::detail {

ProgressMeter::ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before)
    : options_(options), total_(total), done_before_(done_before) {}

ProgressMeter::~ProgressMeter() {
  // A pass that threw (or was stopped) still ends its terminal line: otherwise the error
  // that follows is glued to the last report.
  std::lock_guard<std::mutex> lock(mutex_);
  if (!finished_ && options_.progress) {
    try {
      Progress p = snapshot();
      p.last = true;
      options_.progress(p);
    } catch (...) {  // a destructor must not throw; the line is cosmetic
    }
  }
}

void ProgressMeter::add(std::int64_t rows) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ += rows;
  auto now = std::chrono::steady_clock::now();
  if (options_.progress_log_every.count() > 0 && now - last_log_ >= options_.progress_log_every) {
    last_log_ = now;
    log_line();
  }
  if (now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  emit(false);
}

void ProgressMeter::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
  emit(true);
}

void ProgressMeter::log_line() {
  const Progress p = snapshot();
  KEYMIG_LOG(info, "engine", "progress", {"rows_done", p.rows_done}, {"rows_total", p.rows_total},
             {"percent", p.rows_total > 0 ? 100.0 * static_cast<double>(p.rows_done) /
                                                static_cast<double>(p.rows_total)
                                          : 0.0},
             {"rows_per_second", p.rows_per_second}, {"eta_seconds", p.eta_seconds},
             {"status", status_.empty() ? std::string("running") : status_});
}

namespace {

// "paused (operator)", "waiting: replica lag 3.2s > 1s (standby s1)": the kind of wait,
// without the figures that change at every probe.
std::string_view status_kind(std::string_view status) {
  return status.substr(0, std::min(status.find(':'), status.find('(')));
}

}  // namespace

void ProgressMeter::set_status(std::string status) {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool new_kind = status_kind(status) != status_kind(status_);
  status_ = std::move(status);
  // A log with no terminal sees a pause at once, not at the next periodic line, which a
  // paused run (adding no rows) would never write.
  if (new_kind && options_.progress_log_every.count() > 0) {
    last_log_ = std::chrono::steady_clock::now();
    log_line();
  }
  emit(false);
}

Progress ProgressMeter::snapshot() const {
  Progress p;
  p.rows_done = done_before_ + done_;
  p.rows_total = std::max(total_, p.rows_done);
  double secs = seconds_since(start_);
  p.rows_per_second = secs > 0 ? static_cast<double>(done_) / secs : 0;
  p.eta_seconds = p.rows_per_second > 0
                      ? static_cast<double>(p.rows_total - p.rows_done) / p.rows_per_second
                      : -1;
  return p;
}

void ProgressMeter::emit(bool last) {
  Progress p = snapshot();
  p.last = last;
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
