#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "keymig/error.hpp"

namespace keymig::metrics {

class MetricsError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

/// keymig's Prometheus families (docs/DESIGN.md section 6). Thread-safe: every method
/// may be called from pipeline workers at once. Label values are bounded sets (targets,
/// outcomes, key labels), never a user id.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// keymig_rows_total{target,outcome}; outcome: rotated, already_active, flag_fixed,
  /// empty, undecryptable, conflict.
  void add_rows(std::string_view target, std::string_view outcome, std::uint64_t n);
  /// keymig_rows_by_key{target,key}; key: active, rolling_0.., undecryptable, empty.
  void set_rows_by_key(std::string_view target, std::string_view key, double rows);
  /// keymig_batches_total{target,status} and keymig_batch_duration_seconds.
  void observe_batch(std::string_view target, std::string_view status, double seconds);
  /// keymig_run_progress_ratio and keymig_rows_remaining.
  void set_progress(double ratio, double rows_remaining);
  /// keymig_crypto_operations_total{op}; op: classify, decrypt, encrypt, verify.
  void add_crypto_operations(std::string_view op, std::uint64_t n);
  /// keymig_db_retries_total.
  void add_db_retry();
  /// keymig_last_success_timestamp_seconds{job}; job: migrate, verify, ...
  void set_last_success(std::string_view job, double unix_seconds);
  /// keymig_run_in_progress.
  void set_run_in_progress(bool running);

  /// The Prometheus text exposition format (version 0.0.4).
  [[nodiscard]] std::string serialize() const;
  /// Writes the exposition to `path` atomically (temp file + rename), for node_exporter's
  /// textfile collector. Throws MetricsError.
  void write_textfile(const std::string& path) const;
  /// Pushes to a Pushgateway (job "keymig", grouped by target). Throws MetricsError.
  void push(const std::string& gateway_url, std::string_view target) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::metrics
