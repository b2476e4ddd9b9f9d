#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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
/// "" when `url` is a Pushgateway URL a push can use, else what is wrong, never quoting
/// the URL (it may hold a password). The same parser as the push: check-config uses it.
[[nodiscard]] std::string push_gateway_problem(const std::string& url);

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
  /// keymig_rows_by_key{target,key}; key: active, rolling_0.., undecryptable (not
  /// acknowledged), acknowledged (undecryptable rows an operator accepted), empty.
  void set_rows_by_key(std::string_view target, std::string_view key, double rows);
  /// keymig_batches_total{target,status} and keymig_batch_duration_seconds;
  /// status: ok (committed), failed (rolled back after its retries).
  void observe_batch(std::string_view target, std::string_view status, double seconds);
  /// keymig_run_progress_ratio and keymig_rows_remaining, and
  /// keymig_run_progress_updated_timestamp_seconds = now: labelled with the target
  /// set_target recorded (none before), so that a dashboard can tell one target's run
  /// from another's and a fresh value from one a Pushgateway has kept since a run ended.
  void set_progress(double ratio, double rows_remaining);
  /// keymig_journal_rows{target} and keymig_journal_oldest_seconds{target}: what
  /// keymig.journal holds for the target (old-key ciphertext, until finalize or purge),
  /// and how long its longest-idle run with journal rows has been idle (0: none).
  void set_journal(std::string_view target, double rows, double oldest_seconds);
  /// keymig_crypto_operations_total{op}; op: classify, decrypt, encrypt, verify.
  void add_crypto_operations(std::string_view op, std::uint64_t n);
  /// keymig_db_retries_total.
  void add_db_retry();
  /// keymig_last_success_timestamp_seconds{command} and keymig_last_run_success{command}
  /// = 1; command: migrate, verify, scan, rollback, finalize, reset_mfa.
  /// (The label is not called `job`: that name belongs to Prometheus and the Pushgateway.)
  ///
  /// The engine records these, at every way out of each command, exceptions included
  /// (app and service only expose them). A run succeeded when it did its job:
  ///   scan     the pass ended (exit 0, or 3: undecryptable rows are data, with their
  ///            own keymig_rows_by_key series and alert, not a failed run);
  ///   migrate  the run completed (exit 0, or 3 with undecryptable rows left); a dry run
  ///            and a run stopped by the stop flag (exit 1, resumable) record neither,
  ///            a dry run that throws records a failure;
  ///   verify   exit 0 or 3; exit 4 (rows need a rolling key, a check failed) is a
  ///            failure; a verify cut short by the stop flag records neither;
  ///   rollback every journal page was handled (exit 0); stopped: neither;
  ///   finalize the journal was deleted (exit 0); not finalized (exit 4) is a failure;
  ///   reset_mfa the users were cleared; a refused plan or a failed write is a failure.
  /// Any exception out of a command is a failure.
  void set_last_success(std::string_view command, double unix_seconds);
  /// keymig_last_run_success{command} = 0: the command's latest run failed.
  void set_last_failure(std::string_view command);
  /// keymig_run_in_progress: 1 while any command is between set_run_in_progress(true) and
  /// its set_run_in_progress(false) (serve may run two at once).
  void set_run_in_progress(bool running);
  /// keymig_throttled{reason} (1 while migrate waits for that reason, else 0) and
  /// keymig_throttled_seconds_total{reason}; reason: flag_file, replica_lag,
  /// active_sessions. Every reason exists at 0 from the start.
  void set_throttled(std::string_view reason, bool throttled);
  void add_throttled_seconds(std::string_view reason, double seconds);
  /// The target the commands of this process run on, as a `target` label value: the
  /// label push(gateway_url) groups by. The engine sets it when a command starts, from
  /// the configuration (an unqualified table taken as `public.`: "public.users.mfa_secret"),
  /// and again with the resolved label once the target was checked, so that a run failing
  /// before it reached the database pushes into the same group as its successful runs.
  /// `replaces`: the configured label this resolved one stands for, which leaves targets().
  void set_target(std::string_view target, std::string_view replaces = {});
  /// The label set_target recorded last; empty when none was.
  [[nodiscard]] std::string target() const;
  /// Every label set_target recorded, first use first: one command over several targets
  /// pushes one group per target.
  [[nodiscard]] std::vector<std::string> targets() const;
  /// The name of the database the commands of this process work on (the session's, or
  /// before one is open the one libpq would connect to; never the DSN): a grouping label
  /// of push(), so that two databases' runs on the same table name do not overwrite
  /// each other's group. Empty: no such label.
  void set_database(std::string_view database);

  /// The Prometheus text exposition format (version 0.0.4).
  [[nodiscard]] std::string serialize() const;
  /// Writes the exposition to `path` atomically (temp file in the same directory +
  /// rename), for node_exporter's textfile collector. Throws MetricsError.
  void write_textfile(const std::string& path) const;
  /// Pushes to a Pushgateway at `gateway_url` (`http[s]://[user:password@]host[:port]`),
  /// job "keymig", grouped by target, by database when set_database recorded one, and,
  /// when this process recorded the result of
  /// exactly one command (set_last_success/set_last_failure), by that command too: a push
  /// replaces whole families of its group, so `keymig verify` pushing after `keymig
  /// migrate` into one group would erase migrate's last-success time. Only the series of
  /// that target and command (and those without these labels) are sent. Bounded by
  /// kPushTimeoutSeconds. Throws keymig::UsageError for a malformed URL, MetricsError when
  /// the push fails (URL and HTTP status or cause). The gateway's reply is discarded.
  void push(const std::string& gateway_url, std::string_view target) const;
  /// As above, grouped by the target set_target recorded: what a one-shot command pushes
  /// at its end, whether it failed or not. Throws MetricsError when no target was recorded.
  void push(const std::string& gateway_url) const;
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
