#pragma once

// The rotation engine as a library: scan, migrate, verify, rollback, finalize and journal
// purge over a target table. `keymig` commands and `keymig serve` both call these.
//
// Every function opens its own connections from Options::connect. All but journal purge
// check the target first (db::TargetError, exit 2, nothing written); all but scan (which
// reads the target alone) create schema keymig if missing (verify only with a run).
// Each records its result in Options::metrics (metrics::Metrics::set_last_success has the
// rule per command), on every way out, exceptions included.
// Errors that stop work are exceptions: db::DbError (exit 1; retryable ones were already
// retried), UsageError (exit 2). Per-row problems are report entries, never exceptions.
// Reports carry ids, counts and key fingerprints: never a key, a token or a plaintext.
// Each call is independent; several may run at once on different threads.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/engine/run_control.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::engine {

/// Progress of a pass, reported from the writer stage (one thread) a few times a second.
struct Progress {
  std::int64_t rows_done = 0;
  std::int64_t rows_total = 0;  // at the start; rows inserted later can exceed it
  double rows_per_second = 0;
  double eta_seconds = -1;  // -1: unknown
  bool last = false;        // the pass's last report (finished, failed or stopped)
  // Why migrate waits, when it does: "paused (flag file)", "waiting: replica lag 3.2s > 1s
  // (standby s1)"; empty while batches go.
  std::string status;
};

struct Options {
  db::ConnectOptions connect;
  config::Target target;  // the one target a call below works on
  // The targets the *_targets calls (keymig/engine/targets.hpp) walk, in order; each call
  // below runs on `target` alone.
  std::vector<config::Target> targets;
  // Configured targets that `--target` left out (names): a run over several targets is
  // one whenever the config has several, and finalize cannot clear a key for the others.
  std::vector<std::string> unselected_targets;
  std::int64_t batch_size = 2000;        // rows per page and per write transaction
  int threads = 0;                       // pipeline threads; 0: all cores
  std::int64_t max_rows_per_second = 0;  // 0: unthrottled
  config::ThrottleSettings throttle;     // migrate: wait before a batch (flag file, lag, load)
  // migrate: pause, rows per second and batch size changed while it runs (serve's
  // /control routes); may be null. Must outlive the call.
  RunControl* control = nullptr;
  bool journal = true;  // keep old tokens for rollback until finalize
  // Journals of the target's finished runs idle for longer are deleted after each
  // completed migrate and by maintain_journal; nullopt: kept until finalize or purge.
  std::optional<std::chrono::seconds> journal_retention;
  bool dry_run = false;     // migrate: count what would change, write nothing
  db::Selection selection;  // ids or usernames; empty: the whole target
  std::string run_id;       // migrate: resume/join this run (created if new); empty: see migrate
  bool resume = true;       // migrate without run_id: resume the newest unfinished run
  /// migrate: write even when the pre-flight refuses (the active key is one an earlier
  /// run rotated away from; more rows would stay undecryptable than the last scan found).
  bool force = false;
  // scan, verify: a whole-target pass is recorded as the target's baseline (keymig.scans).
  // check-config reads with a config not yet deployed, whose baseline it must not become.
  bool record_baseline = true;
  std::int64_t rows_per_chunk = 0;                // id range leased at a time; 0: 10 x batch_size
  std::function<void(const Progress&)> progress;  // may be empty
  // A `progress` log line this often, for a log with no terminal to draw on (a Job's,
  // serve's); 0: none.
  std::chrono::seconds progress_log_every{0};
  /// Set to true (from any thread or a signal handler) to drain: batches in flight
  /// commit, checkpoints are written, the run stays resumable. May be null.
  std::atomic<bool>* stop = nullptr;
  metrics::Metrics* metrics = nullptr;  // may be null
};

/// Options from a config's keyMigration section (dsn, target, batch size, threads, rate,
/// journal, timeouts).
[[nodiscard]] Options options_from_config(const config::Config& config);

struct UndecryptableRow {
  std::string id;
  std::string reason;         // crypto::reason_name
  bool acknowledged = false;  // in keymig.acknowledged: known, reported, fails no run
};

/// Rows per configured key.
struct KeyRows {
  std::string key;  // "active", "rolling_0", ...
  std::string fingerprint;
  std::int64_t rows = 0;
};

/// At most this many undecryptable rows are listed in a report (all are counted).
inline constexpr std::size_t kMaxListedRows = 100000;

/// `keymig scan`: classes by HMAC (and one AES block per row for double_encrypted);
/// nothing written.
struct ScanReport {
  std::string target;
  std::int64_t rows_scanned = 0;
  std::int64_t active = 0;
  std::int64_t rolling = 0;
  std::vector<KeyRows> by_key;  // every configured key, ring order
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t acknowledged = 0;  // of the undecryptable rows, those acknowledged
  std::map<std::string, std::int64_t> undecryptable_by_reason;
  std::int64_t flag_wrong = 0;  // active rows whose flag is not true
  std::vector<UndecryptableRow> undecryptable_rows;
  // Readable rows whose plaintext is itself a Fernet token (a field encrypted twice).
  // Still counted in their key's class; the application reads a token, not its secret.
  std::int64_t double_encrypted = 0;
  std::vector<std::string> double_encrypted_rows;  // ids, at most kMaxListedRows
  // A varchar(n) secret column shorter than the longest canonical token of a readable
  // row: migrate would have rows refused (rejected) for length. -1: no limit.
  std::int64_t secret_column_chars = -1;
  std::int64_t longest_token_chars = 0;
  std::vector<std::string> warnings;
  double seconds = 0;
  /// Whether keymig.scans took this scan as the target's baseline (a whole-target scan
  /// on a database with schema keymig).
  bool recorded = false;
  [[nodiscard]] std::string to_json() const;
  /// 0, or 3 with undecryptable rows that are not acknowledged.
  [[nodiscard]] int exit_code() const noexcept;
};

/// migrate's lockout pre-flight: the classes of the rows it is about to write, by HMAC
/// alone, against the target's baseline (docs/DESIGN.md section 3).
struct PreflightCheck {
  std::int64_t rows_scanned = 0;
  std::int64_t undecryptable = 0;
  std::int64_t acknowledged = 0;  // of those, acknowledged
  std::int64_t unknown_key = 0;   // of those, well-formed and not acknowledged: a key that
                                  // made them is missing
  // What the rule compares with: the unacknowledged undecryptable rows of the last scan
  // or verify (keymig.scans), else of the last completed whole-target run; -1: none.
  std::int64_t baseline = -1;
  std::string baseline_from;  // "scan at ...", "verify at ...", "run ID", or empty
  // Fingerprints earlier scans and runs of this target used that are not configured now.
  std::vector<std::string> missing_fingerprints;
  std::string unknown_key_first;  // ISO 8601 clear-text timestamps of unknown_key tokens
  std::string unknown_key_last;
  bool forced = false;  // refused, and written anyway (--force)
  std::vector<std::string> warnings;
};

/// `keymig migrate`. Counts are this invocation's; run_totals are the run's so far.
struct MigrateReport {
  std::string run_id;  // empty for a dry run
  std::string target;
  bool dry_run = false;
  bool resumed = false;  // continued an earlier run (crash, --run-id)
  std::string state;     // the run's state at the end: completed, running (stopped), ...
  bool stopped = false;  // drained on the stop flag, or on critical load
  // Why it stopped: "signal", or "critical load: 142 active sessions > 100"; empty when
  // it did not.
  std::string stopped_by;
  std::int64_t rows_scanned = 0;
  std::int64_t rotated = 0;  // dry run: would rotate
  std::int64_t already_active = 0;
  std::int64_t flag_fixed = 0;
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t acknowledged = 0;        // of the undecryptable rows, those acknowledged
  std::int64_t conflicts = 0;           // rows changed under us and still changed at the sweep
  std::int64_t conflicts_resolved = 0;  // rows changed under us, handled by the sweep
  std::vector<UndecryptableRow> undecryptable_rows;
  std::vector<std::string> not_found;  // selected ids/usernames with no row
  std::vector<KeyRows> by_key;         // classes of the rows read
  std::optional<db::RunCounts> run_totals;
  double seconds = 0;
  // Rows the database refused (a CHECK, a trigger that raises, a column too short): they
  // keep their old token, which the rolling key reads. Reason: SQLSTATE and message.
  std::int64_t rejected = 0;
  std::vector<UndecryptableRow> rejected_rows;  // id and the database's reason
  // Rows whose stored value is not the token keymig wrote (a BEFORE UPDATE trigger): their
  // journal rows hold what was stored, and finalize keeps them.
  std::int64_t rewritten = 0;
  std::vector<std::string> rewritten_rows;  // ids, at most kMaxListedRows
  // What the lockout pre-flight found before the run wrote (none for a dry run).
  std::optional<PreflightCheck> preflight;
  // keyMigration.journalRetention applied after the run completed: journals deleted.
  std::int64_t journal_purged_runs = 0;
  std::int64_t journal_purged_rows = 0;
  [[nodiscard]] std::string to_json() const;
  /// 1 when stopped by the stop flag (SIGINT/SIGTERM: the run is resumable, not done); else
  /// 4 when rows were rejected or rewritten (they still need the rolling key, or hold what
  /// keymig did not write); else 3 with undecryptable rows left that are not
  /// acknowledged; else 0.
  [[nodiscard]] int exit_code() const noexcept;
  /// The run did its job (docs/DESIGN.md section 6): not a dry run, the run completed,
  /// and no row was rejected or rewritten (exit 0 or 3).
  /// keymig_last_run_success and serve's `succeeded` both follow it.
  [[nodiscard]] bool succeeded() const noexcept;
};

/// `keymig verify [--run ID]`.
struct VerifyReport {
  std::string target;
  std::string run_id;  // empty: no journal check
  std::int64_t rows_scanned = 0;
  std::int64_t ok = 0;             // decrypts under the active key alone
  std::int64_t needs_rolling = 0;  // made by a rolling key
  std::int64_t undecryptable = 0;
  std::int64_t acknowledged = 0;  // of the undecryptable rows, those acknowledged
  std::int64_t empty = 0;
  std::int64_t mismatched = 0;  // active rows whose flag column is not true
  std::int64_t journal_checked = 0;
  std::int64_t journal_failed = 0;   // old and new plaintexts differ, or one does not decrypt
  std::int64_t journal_cleared = 0;  // journaled as cleared (reset-mfa): nothing to compare
  std::vector<UndecryptableRow> undecryptable_rows;
  std::vector<std::string> needs_rolling_rows;   // ids, at most kMaxListedRows
  std::vector<std::string> journal_failed_rows;  // ids, at most kMaxListedRows
  // Readable rows (ok or needs_rolling) whose plaintext is itself a Fernet token.
  std::int64_t double_encrypted = 0;
  std::vector<std::string> double_encrypted_rows;  // ids, at most kMaxListedRows
  double seconds = 0;
  [[nodiscard]] std::string to_json() const;
  bool recorded = false;  // keymig.scans took it as the target's baseline
  // Set by verify_targets (keymig/engine/targets.hpp): no row of any configured target
  // needs a rolling key, every one was read whole (no --target left one out, no
  // selection); and the targets (names) whose rows still need one.
  bool rolling_key_retirable = false;
  std::vector<std::string> targets_needing_rolling;
  /// 4 when rows need a rolling key or a check failed (journal, flag); else 3 with
  /// undecryptable rows that are not acknowledged; else 0.
  [[nodiscard]] int exit_code() const noexcept;
  /// The pass did its job (docs/DESIGN.md section 6): exit 0 or 3.
  [[nodiscard]] bool succeeded() const noexcept;
};

/// `keymig rollback --run ID`.
struct RollbackReport {
  std::string run_id;
  std::string target;
  std::int64_t journal_rows = 0;
  std::int64_t restored = 0;
  std::int64_t left = 0;               // changed since the run (or deleted): not touched
  std::vector<std::string> left_rows;  // ids, at most kMaxListedRows
  std::string state;
  double seconds = 0;
  [[nodiscard]] std::string to_json() const;
  // A rollback that cannot go on throws; a report is a success, rows left included.
  [[nodiscard]] int exit_code() const noexcept { return 0; }
};

/// `keymig finalize --run ID`.
struct FinalizeReport {
  std::string run_id;
  VerifyReport verify;
  bool finalized = false;
  bool rolling_key_retirable = false;
  std::int64_t journal_deleted = 0;
  std::string reason;  // why not finalized, or a note
  // Journaled rows whose table row holds a value the active key does not read (not the
  // run's token, not empty, not deleted): their journal rows are the only readable copy,
  // and finalize refuses while there are any.
  std::int64_t journal_unreadable = 0;
  std::vector<std::string> journal_unreadable_rows;  // ids, at most kMaxListedRows
  // Targets (names) with rows that still need a rolling key.
  std::vector<std::string> targets_needing_rolling;
  [[nodiscard]] std::string to_json() const;
  [[nodiscard]] int exit_code() const noexcept;  // 0 finalized, 4 not
};

struct PurgeReport {
  std::int64_t runs = 0;
  std::int64_t journal_rows = 0;
  std::string run_id;  // `journal purge --run-id`; empty: by age
  [[nodiscard]] std::string to_json() const;
};

/// What maintain_journal did and found for the target.
struct JournalUpkeep {
  std::int64_t purged_runs = 0;  // by journal_retention
  std::int64_t purged_rows = 0;
  std::int64_t rows = 0;  // journal rows of the target's runs left
  double oldest_seconds = 0;
};

/// Counts classes by HMAC, and double encryption by one AES block per readable row,
/// writing nothing, not even schema keymig.
/// Throws as described at the top.
[[nodiscard]] ScanReport scan(const crypto::KeyRing& keys, const Options& options);

/// Rotates every rolling-key token to the active key (docs/DESIGN.md section 2) as a
/// pipeline: keyset pages -> parallel rotate -> one CAS transaction per batch. Without
/// run_id it resumes the newest unfinished run of the same target and selection (when
/// resume and the active key match), else starts a new run. Several processes given
/// the same run_id share its chunks. Killable at any point: a new call resumes.
[[nodiscard]] MigrateReport migrate(const crypto::KeyRing& keys, const Options& options);

/// Decrypts every row under the active key alone; with run_id, also checks every
/// journaled row: old token under its rolling key and new under the active key give the
/// same plaintext.
[[nodiscard]] VerifyReport verify(const crypto::KeyRing& keys, const Options& options,
                                  const std::string& run_id = {});

/// Writes the run's journaled old tokens and flags back where rows still hold the new
/// ones (CAS); state rolled_back. UsageError: no such run, no journal, run finalized,
/// another worker still on it, or a different target.
[[nodiscard]] RollbackReport rollback(const Options& options, const std::string& run_id);

/// Verifies (with the run's journal); when no row needs a rolling key, deletes the
/// journal and sets state finalized.
[[nodiscard]] FinalizeReport finalize(const crypto::KeyRing& keys, const Options& options,
                                      const std::string& run_id);

/// Deletes the journals of runs whose last activity in keymig.runs is older than
/// older_than. Touches no target (and records no command metrics).
[[nodiscard]] PurgeReport purge_journals(const Options& options, std::chrono::seconds older_than);

/// `journal purge --run-id`: deletes the journal of a rolled-back run (whose rows are
/// back under their old tokens, so the journal only keeps old-key ciphertext) and sets
/// its journal_purged_at. UsageError (nothing deleted) for no such run, a run in another
/// state (finalize a completed one; roll back a running or failed one first), or one a
/// migrate or rollback holds. Touches no target row.
[[nodiscard]] PurgeReport purge_run_journal(const Options& options, const std::string& run_id);

/// The journal upkeep of the configured target: with journal_retention, deletes the
/// journals of its completed and rolled-back runs idle for longer (at least 1h, never a
/// running or failed run), then sets keymig_journal_rows and
/// keymig_journal_oldest_seconds. Migrate does it after each run it completes; serve
/// calls it periodically. Throws as described at the top.
JournalUpkeep maintain_journal(const Options& options);

}  // namespace keymig::engine
