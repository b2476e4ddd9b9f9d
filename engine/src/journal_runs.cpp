// The commands on a run's journal: rollback, finalize and journal purge.

#include "journal_runs.hpp"

#include <algorithm>
#include <tuple>

#include "command_record.hpp"
#include "connect.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/error.hpp"
#include "keymig/db/journal.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/log.hpp"
#include "progress.hpp"
#include "read_passes.hpp"

namespace keymig::engine {

using namespace detail;

RollbackReport rollback(const Options& options, const std::string& run_id) {
  CommandRecord record(options.metrics, "rollback", options.target);
  const auto start = std::chrono::steady_clock::now();
  if (run_id.empty()) throw UsageError("rollback needs --run ID");
  db::Connection conn = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(conn, target_spec(options.target));
  db::check_privileges(conn, table, db::Access::write);
  db::ensure_schema(conn);
  record.on_target(table.label());
  // Held until the session ends: no migrate of this run starts (or resumes) while its
  // journal is put back, and none that is working on it now lets us in.
  const auto take_lock = [&] {
    return db::with_retry(
        conn, [&] { return db::try_lock_run(conn, run_id, /*exclusive=*/true); },
        retry_hook(options.metrics, "rollback"));
  };
  if (!take_lock())
    throw UsageError("run " + run_id +
                     " is being migrated right now: stop that migrate (or let it complete), "
                     "then roll back");
  auto run = db::load_run(conn, run_id);
  if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
  if (run->target != table.label())
    throw UsageError("run " + run_id + " is on " + run->target + ", not the configured target " +
                     table.label());
  if (run->state == "finalized")
    throw UsageError("run " + run_id +
                     " is finalized: its journal was deleted, nothing to roll back");
  if (!run->journal) throw UsageError("run " + run_id + " kept no journal (journal: false)");
  if (!run->journal_purged_at.empty())
    throw UsageError("run " + run_id + "'s journal was deleted by `keymig journal purge` at " +
                     run->journal_purged_at +
                     ": its rows cannot be rolled back (restore them from a backup)");
  if (db::live_foreign_leases(conn, run_id) > 0)
    throw UsageError("run " + run_id + " is still being migrated by a live worker: stop it first");
  // A `running` run that no migrate holds (the lock) was stopped or crashed: every batch
  // it committed journaled its rows in the same transaction, so its journal is complete
  // for what it changed, and rolling it back is what an operator who stopped a run in
  // trouble needs. Once rolled back, migrate refuses to resume it (run_plan).

  RollbackReport report;
  report.run_id = run_id;
  report.target = table.label();
  std::optional<std::string> after;
  const std::int64_t page = std::max<std::int64_t>(1, options.batch_size);
  while (true) {
    if (options.stop && options.stop->load()) break;
    // A lost session lost the lock with it: take it again, or stop if a migrate got in.
    if (!take_lock())
      throw Error("rollback of run " + run_id + " stopped after restoring " +
                  std::to_string(report.restored) +
                  " rows: a migrate of the run started meanwhile; let it complete, then run "
                  "rollback again");
    auto p = db::with_retry(
        conn, [&] { return db::rollback_page(conn, table, run_id, after, page); },
        retry_hook(options.metrics, "rollback"));
    if (p.rows == 0) break;
    report.journal_rows += p.rows;
    report.restored += static_cast<std::int64_t>(p.restored.size());
    report.left += static_cast<std::int64_t>(p.left.size());
    for (auto& id : p.left)
      if (report.left_rows.size() < kMaxListedRows) report.left_rows.push_back(std::move(id));
    after = p.last;
    if (p.rows < page) break;
  }
  const bool stopped = options.stop && options.stop->load();
  if (!stopped)
    db::with_retry(
        conn, [&] { db::set_run_state(conn, run_id, "rolled_back"); },
        retry_hook(options.metrics, "rollback"));
  report.state = stopped ? run->state : "rolled_back";
  upkeep_journal_after(conn, table.label(), options, /*apply_retention=*/false);
  report.seconds = seconds_since(start);
  KEYMIG_LOG(info, "engine", "rollback_done", {"run_id", run_id}, {"restored", report.restored},
             {"left", report.left});
  // Stopped before the last page: the run is still to be rolled back, neither.
  if (stopped)
    record.unfinished();
  else
    record.succeeded();
  return report;
}

namespace {

// The journaled rows whose table row now holds something the active key does not read:
// neither the run's token nor a later legitimate change (empty, deleted, re-encrypted
// under the active key). For those the journal's old token is the only readable copy.
void count_unreadable_journaled(const crypto::KeyRing& keys, const Options& options,
                                const std::string& run_id, FinalizeReport& report) {
  db::Connection conn = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(conn, target_spec(options.target));
  const auto on_retry = retry_hook(options.metrics, "finalize");
  const std::int64_t page = std::max<std::int64_t>(1, options.batch_size);
  std::optional<std::string> after;
  while (true) {
    auto entries = db::with_retry(
        conn, [&] { return db::read_journal(conn, run_id, after, page); }, on_retry);
    if (entries.empty()) break;
    std::vector<std::string> ids;
    ids.reserve(entries.size());
    for (auto& e : entries) {
      ids.push_back(e.row_id);
      e.old_token.wipe();
      e.new_token.wipe();
    }
    auto rows = db::with_retry(
        conn, [&] { return db::read_rows(conn, table, ids); }, on_retry);
    for (auto& row : rows) {
      const bool readable =
          row.is_null || row.token.empty() || keys.decrypt_active(row.token.view()).ok();
      row.token.wipe();
      if (readable) continue;
      ++report.journal_unreadable;
      if (report.journal_unreadable_rows.size() < kMaxListedRows)
        report.journal_unreadable_rows.push_back(row.id);
    }
    crypto::forget_key_schedules();
    after = entries.back().row_id;
    if (static_cast<std::int64_t>(entries.size()) < page) break;
  }
}

}  // namespace

namespace detail {

FinalizeReport check_finalize(const crypto::KeyRing& keys, const Options& options,
                              const std::string& run_id, CommandRecord* record) {
  if (run_id.empty()) throw UsageError("finalize needs --run ID");
  FinalizeReport report;
  report.run_id = run_id;
  std::string state;
  {
    db::Connection conn = open_connection(options.connect, options.metrics);
    db::ensure_schema(conn);
    auto run = db::load_run(conn, run_id);
    if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
    state = run->state;
  }
  if (state == "rolled_back")
    throw UsageError("run " + run_id +
                     " was rolled back: nothing to finalize (its journal holds only old-key "
                     "ciphertext now: `keymig journal purge --run-id " +
                     run_id + "` deletes it)");
  report.verify = verify_pass(keys, options, state == "finalized" ? std::string() : run_id, record);
  report.verify.run_id = run_id;
  if (report.verify.needs_rolling > 0)
    report.targets_needing_rolling.push_back(options.target.name);
  if (state != "completed" && state != "finalized") {
    report.reason = "run " + run_id + " is " + state +
                    ", not completed: run `keymig migrate --run-id " + run_id + "` first";
    return report;
  }
  if (report.verify.needs_rolling > 0) {
    report.reason = std::to_string(report.verify.needs_rolling) +
                    " rows still need a rolling key: run `keymig migrate`, then finalize again";
    return report;
  }
  if (state != "finalized") count_unreadable_journaled(keys, options, run_id, report);
  if (report.journal_unreadable > 0) {
    report.reason = std::to_string(report.journal_unreadable) +
                    " journaled rows no longer hold the run's token nor anything the active key "
                    "reads (changed since, or stored differently than written): the journal "
                    "keeps their only readable copy. Roll back (`keymig rollback --run " +
                    run_id + "`) or investigate; nothing was deleted";
    return report;
  }
  if (report.verify.journal_failed > 0) {
    report.reason = std::to_string(report.verify.journal_failed) +
                    " journaled rows failed the old/new plaintext check: keep the journal and "
                    "investigate (see `keymig verify --run " +
                    run_id + "`)";
    return report;
  }
  return report;
}

void commit_finalize(const Options& options, FinalizeReport& report, CommandRecord& record) {
  const std::string& run_id = report.run_id;
  db::Connection conn = open_connection(options.connect, options.metrics);
  const auto on_retry = retry_hook(options.metrics, "finalize");
  report.journal_deleted = db::with_retry(
      conn, [&] { return db::delete_journal(conn, run_id); }, on_retry);
  db::with_retry(
      conn, [&] { db::set_run_state(conn, run_id, "finalized"); }, on_retry);
  upkeep_journal_after(conn, report.verify.target, options, /*apply_retention=*/false);
  report.finalized = true;
  report.rolling_key_retirable = true;
  report.reason = report.verify.undecryptable > 0
                      ? "no row needs a rolling key; the rolling key can be retired (" +
                            std::to_string(report.verify.undecryptable) +
                            " rows are undecryptable by every configured key)"
                      : "no row needs a rolling key; the rolling key can be retired";
  KEYMIG_LOG(info, "engine", "run_finalized", {"run_id", run_id},
             {"journal_deleted", report.journal_deleted});
  record.succeeded();
}

}  // namespace detail

FinalizeReport finalize(const crypto::KeyRing& keys, const Options& options,
                        const std::string& run_id) {
  CommandRecord record(options.metrics, "finalize", options.target);
  // Not finalized (exit 4) is a failed finalize: the record's default.
  FinalizeReport report = check_finalize(keys, options, run_id, &record);
  if (report.reason.empty()) commit_finalize(options, report, record);
  return report;
}

namespace {

// A run idle for less may still be resumed, finalized or rolled back by an operator who
// has not got to it yet; purging by age is for journals nobody needs any more.
constexpr std::chrono::hours kMinimumAge{1};

}  // namespace

PurgeReport purge_journals(const Options& options, std::chrono::seconds older_than) {
  if (older_than < kMinimumAge)
    throw UsageError(
        "journal purge: --older-than must be at least 1h (a run idle for less may "
        "still be resumed or rolled back)");
  db::Connection conn = open_connection(options.connect, options.metrics);
  db::ensure_schema(conn);
  auto [runs, rows] = db::with_retry(
      conn, [&] { return db::purge_journals(conn, older_than); },
      retry_hook(options.metrics, "purge"));
  KEYMIG_LOG(info, "engine", "journal_purged", {"runs", runs}, {"rows", rows},
             {"older_than_seconds", static_cast<std::int64_t>(older_than.count())});
  return PurgeReport{runs, rows, {}};
}

PurgeReport purge_run_journal(const Options& options, const std::string& run_id) {
  if (run_id.empty()) throw UsageError("journal purge: --run-id needs a run id");
  db::Connection conn = open_connection(options.connect, options.metrics);
  db::ensure_schema(conn);
  const auto on_retry = retry_hook(options.metrics, "purge");
  // Held until the session ends: no rollback or migrate of the run is under way, and none
  // starts while its journal goes.
  if (!db::with_retry(
          conn, [&] { return db::try_lock_run(conn, run_id, /*exclusive=*/true); }, on_retry))
    throw UsageError("run " + run_id +
                     " is being migrated or rolled back right now: let that end, then purge");
  auto run = db::with_retry(
      conn, [&] { return db::load_run(conn, run_id); }, on_retry);
  if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
  // Only a rolled-back run: its rows hold their old tokens again, so its journal keeps
  // nothing but old-key ciphertext. A completed run's journal may hold the only readable
  // copy of a row (finalize checks that first); a running or failed one is still to be
  // resumed or rolled back.
  if (run->state == "completed")
    throw UsageError("run " + run_id + " is completed: `keymig finalize --run " + run_id +
                     "` verifies it and deletes its journal; nothing was deleted");
  if (run->state != "rolled_back" && run->state != "finalized")
    throw UsageError("run " + run_id + " is " + run->state +
                     ": roll it back (`keymig rollback --run " + run_id +
                     "`) or let it complete first; nothing was deleted");
  PurgeReport report;
  report.run_id = run_id;
  db::PurgeScope scope;
  scope.run_id = run_id;
  std::tie(report.runs, report.journal_rows) = db::with_retry(
      conn, [&] { return db::purge_journals(conn, std::chrono::seconds(0), scope); }, on_retry);
  KEYMIG_LOG(info, "engine", "journal_purged", {"run_id", run_id}, {"state", run->state},
             {"rows", report.journal_rows});
  return report;
}

namespace detail {

JournalUpkeep upkeep_journal(db::Connection& conn, const std::string& target,
                             const Options& options, bool apply_retention) {
  JournalUpkeep upkeep;
  const auto on_retry = retry_hook(options.metrics, "journal upkeep");
  if (apply_retention && options.journal_retention) {
    if (*options.journal_retention < kMinimumAge)
      throw UsageError("keyMigration.journalRetention must be at least 1h");
    // Completed and rolled-back runs only: a failed run is resumed by the next migrate,
    // and its journal is what a rollback of it needs.
    db::PurgeScope scope;
    scope.target = target;
    scope.keep_failed = true;
    std::tie(upkeep.purged_runs, upkeep.purged_rows) = db::with_retry(
        conn, [&] { return db::purge_journals(conn, *options.journal_retention, scope); },
        on_retry);
    if (upkeep.purged_runs > 0)
      KEYMIG_LOG(
          info, "engine", "journal_retention_purged", {"target", target},
          {"runs", upkeep.purged_runs}, {"rows", upkeep.purged_rows},
          {"retention_seconds", static_cast<std::int64_t>(options.journal_retention->count())});
  }
  const auto stats = db::with_retry(
      conn, [&] { return db::journal_stats(conn, target); }, on_retry);
  upkeep.rows = stats.rows;
  upkeep.oldest_seconds = stats.oldest_seconds;
  if (options.metrics)
    options.metrics->set_journal(target, static_cast<double>(stats.rows), stats.oldest_seconds);
  return upkeep;
}

void upkeep_journal_after(db::Connection& conn, const std::string& target, const Options& options,
                          bool apply_retention, JournalUpkeep* out) noexcept {
  try {
    auto upkeep = upkeep_journal(conn, target, options, apply_retention);
    if (out) *out = upkeep;
  } catch (const std::exception& e) {
    // The command did its job; the next one (or serve's next round) tries again.
    KEYMIG_LOG(warn, "engine", "journal_upkeep_failed", {"target", target}, {"error", e.what()});
  }
}

}  // namespace detail

JournalUpkeep maintain_journal(const Options& options) {
  db::Connection conn = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(conn, target_spec(options.target));
  db::ensure_schema(conn);
  return upkeep_journal(conn, table.label(), options, /*apply_retention=*/true);
}

}  // namespace keymig::engine
