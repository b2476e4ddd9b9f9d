#pragma once

// The one place that records a command's result in the run metrics
// (metrics::Metrics::set_last_success documents the rule per command). Every engine entry
// point holds one for its whole call, so that every way out is recorded, exceptions
// included.

#include <string>

#include "keymig/config/config.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::engine::detail {

/// The target label of a configured target before the database resolved it: the table
/// as configured, an unqualified one taken as `public.` (the default search_path), then
/// the secret column. "users" -> "public.users.mfa_secret".
[[nodiscard]] std::string configured_label(const config::Target& target);

/// Sets keymig_run_in_progress and the target for the command's whole life; records a
/// failure unless succeeded() or unfinished() was called first. Not thread-safe: one per
/// command call. A null Metrics records nothing.
class CommandRecord {
 public:
  CommandRecord(metrics::Metrics* metrics, const char* command, const config::Target& target);
  ~CommandRecord();
  CommandRecord(const CommandRecord&) = delete;
  CommandRecord& operator=(const CommandRecord&) = delete;

  /// The label the target resolved to (db::Table::label()), once check_target passed.
  void on_target(const std::string& label);
  /// The command did its job: keymig_last_run_success 1 and the timestamp, now.
  void succeeded();
  /// The command ended in a way that is neither (stopped, a dry run): nothing recorded.
  void unfinished() noexcept { settled_ = true; }

 private:
  metrics::Metrics* metrics_;
  const char* command_;
  std::string configured_;  // the label set before the target was resolved
  bool settled_ = false;
};

}  // namespace keymig::engine::detail
