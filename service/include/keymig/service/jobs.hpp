#pragma once

// What `keymig serve` runs: jobs from the schedule and from rows of keymig.requests.
// Pure functions, so the parsing and timing rules are unit-tested without a database.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keymig/db/rows.hpp"

namespace keymig::service {

enum class JobKind { migrate, verify, reset_mfa, rollback, finalize, status };

/// "migrate", "verify", "reset_mfa", "rollback", "finalize", "status".
[[nodiscard]] const char* job_kind_name(JobKind kind) noexcept;

/// One unit of work for the runner.
struct Job {
  JobKind kind = JobKind::migrate;
  db::Selection
      selection;  // ids as text (the id column may be any orderable type); empty: the whole target
  std::string source;           // "schedule", "request"
  std::int64_t request_id = 0;  // keymig.requests.id when source == "request"
  std::string run_id;  // verify: also check this run's journal; rollback, finalize: the run
  // params.targets: the configured targets (names) a migrate, verify or finalize covers;
  // empty: all of them.
  std::vector<std::string> targets;
  // From keymig.requests, for the audit trail (results, logs, /status); "" when NULL.
  // The application's text: shown scrubbed and cut, never trusted.
  std::string requested_by;
  std::string reason;
};

/// Whether a job reads or writes only the users it names, so that it may run beside a
/// whole-table run: a selection of at most kMaxSelectedUsers, or a rollback (a queued
/// rollback undoes a reset_mfa, whose journal holds only the users it cleared).
inline constexpr std::size_t kMaxSelectedUsers = 1000;
[[nodiscard]] bool is_selected_job(const Job& job) noexcept;

/// A request row turned into a job, or the reason it is refused (the row goes to
/// `failed` with that reason).
struct ParsedRequest {
  std::optional<Job> job;
  std::string error;
};

/// `kind` and `params` (JSON text; empty = none) of a keymig.requests row. Accepts
/// {"ids": [1, "2"]} and/or {"usernames": ["a"]} for migrate, verify, reset_mfa and status
/// (`reset_mfa` refuses an empty selection), and {"run_id": "..."} for verify, rollback
/// (required) and finalize (required, as `keymig finalize --run`). Never throws.
[[nodiscard]] ParsedRequest parse_request(std::string_view kind, std::string_view params_json);

/// The next "HH:MM" (UTC, minute_of_day) strictly after `now`.
[[nodiscard]] std::chrono::system_clock::time_point next_daily_run(
    std::chrono::system_clock::time_point now, int minute_of_day);

}  // namespace keymig::service
