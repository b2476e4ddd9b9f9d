#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "keymig/error.hpp"

namespace keymig::metrics {

/// Exporting failed: the textfile could not be written, or the Pushgateway refused or
/// could not be reached. The message names the path or the URL (never credentials).
class MetricsError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

/// keymig's Prometheus families (docs/DESIGN.md section 6). Thread-safe: every method
/// may be called from pipeline workers at once. Label values are bounded sets (targets,
/// outcomes, key labels, ops, statuses, commands), never a user id: a value outside its
/// documented set is counted under "other" (with one warning per value) rather than
/// growing the series count or throwing in the middle of a batch.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// keymig_rows_total{target,outcome}; outcome: rotated, already_active, flag_fixed,
  /// empty, undecryptable, conflict. A target's first use creates all its outcomes at 0,
  /// so that rate() sees the first increment.
  void add_rows(std::string_view target, std::string_view outcome, std::uint64_t n);
  /// keymig_rows_by_key{target,key}; key: active, rolling_0.., undecryptable, empty.
  void set_rows_by_key(std::string_view target, std::string_view key, double rows);
  /// keymig_batches_total{target,status} and keymig_batch_duration_seconds;
  /// status: ok (committed), failed (rolled back), retried, dry_run.
  void observe_batch(std::string_view target, std::string_view status, double seconds);
  /// keymig_run_progress_ratio and keymig_rows_remaining.
  void set_progress(double ratio, double rows_remaining);
  /// keymig_crypto_operations_total{op}; op: classify, decrypt, encrypt, verify.
  void add_crypto_operations(std::string_view op, std::uint64_t n);
  /// keymig_db_retries_total.
  void add_db_retry();
  /// keymig_last_success_timestamp_seconds{command} and keymig_last_run_success{command}
  /// = 1; command: migrate, verify, scan, rollback, finalize, reset_mfa.
  /// (The label is not called `job`: that name belongs to Prometheus and the Pushgateway.)
  void set_last_success(std::string_view command, double unix_seconds);
  /// keymig_last_run_success{command} = 0: the command's latest run failed.
  void set_last_failure(std::string_view command);
  /// keymig_run_in_progress.
  void set_run_in_progress(bool running);

  /// The Prometheus text exposition format (version 0.0.4).
  [[nodiscard]] std::string serialize() const;
  /// Writes the exposition to `path` atomically (temp file in the same directory +
  /// rename), for node_exporter's textfile collector. Throws MetricsError.
  void write_textfile(const std::string& path) const;
  /// Pushes to a Pushgateway at `gateway_url` (`http[s]://[user:password@]host[:port]`),
  /// job "keymig", grouped by target and, when this process recorded the result of
  /// exactly one command (set_last_success/set_last_failure), by that command too: a push
  /// replaces whole families of its group, so `keymig verify` pushing after `keymig
  /// migrate` into one group would erase migrate's last-success time. Only the series of
  /// that target and command (and those without these labels) are sent. Bounded by
  /// kPushTimeoutSeconds. Throws keymig::UsageError for a malformed URL, MetricsError when
  /// the push fails (URL and HTTP status or cause). The gateway's reply is discarded.
  void push(const std::string& gateway_url, std::string_view target) const;
  /// As above, with the command named explicitly.
  void push(const std::string& gateway_url, std::string_view target,
            std::string_view command) const;

  static constexpr int kPushTimeoutSeconds = 15;

 private:
  void push_grouped(const std::string& gateway_url,
                    const std::map<std::string, std::string>& group) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::metrics
