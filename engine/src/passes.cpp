// scan, verify, rollback, finalize and journal purge.

#include <oneapi/tbb/parallel_for.h>

#include "keymig/db/chunks.hpp"
#include "keymig/db/journal.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/log.hpp"
#include "pipeline.hpp"

namespace keymig::engine {

using namespace detail;

Options options_from_config(const config::Config& config) {
  const auto& m = config.migration;
  Options o;
  o.connect.dsn = m.dsn;
  o.connect.lock_timeout = m.lock_timeout;
  o.connect.statement_timeout = m.statement_timeout;
  o.target = m.target;
  o.batch_size = m.batch_size;
  o.threads = m.threads;
  o.max_rows_per_second = m.max_rows_per_second;
  o.journal = m.journal;
  return o;
}

namespace {

// The read-only passes (scan, verify): every selected row through `mode`, with progress;
// `sink` sees each batch in order after it is counted. Returns the totals.
Tally read_pass(const crypto::KeyRing& keys, const Options& options, db::Connection& reader,
                const db::Table& table, Mode mode, std::vector<UndecryptableRow>& undecryptable,
                const std::function<void(Batch&)>& sink) {
  const std::int64_t total =
      db::count_rows(reader, table, options.selection.empty() ? nullptr : &options.selection);
  PageSource source(reader, table, options);
  ProgressMeter meter(options, total, 0);
  Tally sum;
  run_pipeline(
      options.threads, [&] { return source.next(); },
      [&](Batch& b) { transform(b, keys, mode, table.has_flag()); },
      [&](std::unique_ptr<Batch> b) {
        sum.add(b->tally);
        for (auto& r : b->undecryptable)
          if (undecryptable.size() < kMaxListedRows) undecryptable.push_back(std::move(r));
        sink(*b);
        meter.add(b->tally.rows);
      });
  meter.finish();
  return sum;
}

}  // namespace

ScanReport scan(const crypto::KeyRing& keys, const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  db::Connection reader = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(reader, target_spec(options.target));
  ScanReport report;
  report.target = table.label();
  const Tally sum =
      read_pass(keys, options, reader, table, Mode::scan, report.undecryptable_rows, [&](Batch& b) {
        if (options.metrics)
          options.metrics->add_crypto_operations("classify", b.tally.classify_ops);
      });
  report.rows_scanned = sum.rows;
  report.active = sum.active;
  report.rolling = sum.rolling;
  report.by_key = key_rows(keys, sum.by_key);
  report.empty = sum.empty;
  report.undecryptable = sum.undecryptable;
  report.undecryptable_by_reason = sum.by_reason;
  report.flag_wrong = sum.flag_wrong;
  report.seconds = seconds_since(start);
  publish_rows_by_key(options.metrics, report.target, report.by_key, report.undecryptable,
                      report.empty);
  KEYMIG_LOG(info, "engine", "scan_done", {"target", report.target}, {"rows", report.rows_scanned},
             {"active", report.active}, {"rolling", report.rolling},
             {"undecryptable", report.undecryptable});
  return report;
}

namespace {

// Old token under its rolling key and new token under the active key must give the
// same plaintext.
bool journal_entry_ok(const crypto::KeyRing& keys, const db::JournalEntry& e) {
  if (e.old_null) return false;
  auto c = keys.classify(e.old_token.view());
  if (c.reason != crypto::Reason::ok || c.key_index < 0) return false;
  auto before = keys.decrypt_with(e.old_token.view(), c.key_index);
  auto after = keys.decrypt_active(e.new_token.view());
  if (!before.ok() || !after.ok()) return false;
  return before.plaintext.view() == after.plaintext.view();
}

}  // namespace

VerifyReport verify(const crypto::KeyRing& keys, const Options& options,
                    const std::string& run_id) {
  const auto start = std::chrono::steady_clock::now();
  db::Connection reader = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(reader, target_spec(options.target));
  VerifyReport report;
  report.target = table.label();
  report.run_id = run_id;
  if (!run_id.empty()) {
    db::ensure_schema(reader);
    auto run = db::load_run(reader, run_id);
    if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
    if (run->target != table.label())
      throw UsageError("run " + run_id + " is on " + run->target + ", not " + table.label());
  }
  const Tally sum = read_pass(keys, options, reader, table, Mode::verify, report.undecryptable_rows,
                              [&](Batch& b) {
                                for (auto& id : b.needs_rolling)
                                  if (report.needs_rolling_rows.size() < kMaxListedRows)
                                    report.needs_rolling_rows.push_back(std::move(id));
                                if (auto* m = options.metrics) {
                                  m->add_crypto_operations("verify", b.tally.decrypt_ops);
                                  m->add_crypto_operations("classify", b.tally.classify_ops);
                                }
                              });
  report.rows_scanned = sum.rows;
  report.ok = sum.verified_ok;
  report.needs_rolling = sum.rolling;
  report.undecryptable = sum.undecryptable;
  report.empty = sum.empty;
  report.mismatched = sum.flag_wrong;

  if (!run_id.empty()) {
    std::optional<std::string> after;
    const std::int64_t page = std::max<std::int64_t>(1, options.batch_size);
    while (true) {
      auto entries = db::with_retry(
          reader, [&] { return db::read_journal(reader, run_id, after, page); },
          retry_hook(options.metrics, "verify"));
      if (entries.empty()) break;
      std::vector<char> ok(entries.size(), 0);
      tbb::parallel_for(std::size_t{0}, entries.size(), [&](std::size_t i) {
        if (!entries[i].new_null) ok[i] = journal_entry_ok(keys, entries[i]) ? 1 : 0;
      });
      for (std::size_t i = 0; i < entries.size(); ++i) {
        if (entries[i].new_null) {
          ++report.journal_cleared;
          continue;
        }
        ++report.journal_checked;
        if (!ok[i]) {
          ++report.journal_failed;
          if (report.journal_failed_rows.size() < kMaxListedRows)
            report.journal_failed_rows.push_back(entries[i].row_id);
        }
      }
      after = entries.back().row_id;
    }
  }
  report.seconds = seconds_since(start);
  if (auto* m = options.metrics) {
    m->set_rows_by_key(report.target, "active", static_cast<double>(report.ok));
    m->set_rows_by_key(report.target, "undecryptable", static_cast<double>(report.undecryptable));
    m->set_rows_by_key(report.target, "empty", static_cast<double>(report.empty));
    for (std::size_t i = 1; i < sum.by_key.size(); ++i)
      m->set_rows_by_key(report.target, crypto::KeyRing::key_label(static_cast<int>(i)),
                         static_cast<double>(sum.by_key[i]));
    if (report.exit_code() != kExitNeedsRolling)
      m->set_last_success("verify", std::chrono::duration<double>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
  }
  KEYMIG_LOG(info, "engine", "verify_done", {"target", report.target},
             {"rows", report.rows_scanned}, {"ok", report.ok},
             {"needs_rolling", report.needs_rolling}, {"undecryptable", report.undecryptable},
             {"mismatched", report.mismatched}, {"journal_checked", report.journal_checked},
             {"journal_failed", report.journal_failed});
  return report;
}

RollbackReport rollback(const Options& options, const std::string& run_id) {
  const auto start = std::chrono::steady_clock::now();
  if (run_id.empty()) throw UsageError("rollback needs --run ID");
  db::Connection conn = open_connection(options.connect, options.metrics);
  db::ensure_schema(conn);
  const db::Table table = db::check_target(conn, target_spec(options.target));
  auto run = db::load_run(conn, run_id);
  if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
  if (run->target != table.label())
    throw UsageError("run " + run_id + " is on " + run->target + ", not the configured target " +
                     table.label());
  if (run->state == "finalized")
    throw UsageError("run " + run_id +
                     " is finalized: its journal was deleted, nothing to roll back");
  if (!run->journal) throw UsageError("run " + run_id + " kept no journal (journal: false)");
  if (db::live_foreign_leases(conn, run_id) > 0)
    throw UsageError("run " + run_id + " is still being migrated by a live worker: stop it first");

  RollbackReport report;
  report.run_id = run_id;
  report.target = table.label();
  std::optional<std::string> after;
  const std::int64_t page = std::max<std::int64_t>(1, options.batch_size);
  while (true) {
    if (options.stop && options.stop->load()) break;
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
  if (!stopped) db::with_retry(conn, [&] { db::set_run_state(conn, run_id, "rolled_back"); });
  report.state = stopped ? run->state : "rolled_back";
  report.seconds = seconds_since(start);
  KEYMIG_LOG(info, "engine", "rollback_done", {"run_id", run_id}, {"restored", report.restored},
             {"left", report.left});
  return report;
}

FinalizeReport finalize(const crypto::KeyRing& keys, const Options& options,
                        const std::string& run_id) {
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
    throw UsageError("run " + run_id + " was rolled back: nothing to finalize");
  report.verify = verify(keys, options, state == "finalized" ? std::string() : run_id);
  report.verify.run_id = run_id;
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
  if (report.verify.journal_failed > 0) {
    report.reason = std::to_string(report.verify.journal_failed) +
                    " journaled rows failed the old/new plaintext check: keep the journal and "
                    "investigate (see `keymig verify --run " +
                    run_id + "`)";
    return report;
  }
  db::Connection conn = open_connection(options.connect, options.metrics);
  report.journal_deleted = db::with_retry(conn, [&] { return db::delete_journal(conn, run_id); });
  db::with_retry(conn, [&] { db::set_run_state(conn, run_id, "finalized"); });
  report.finalized = true;
  report.rolling_key_retirable = true;
  report.reason = report.verify.undecryptable > 0
                      ? "no row needs a rolling key; the rolling key can be retired (" +
                            std::to_string(report.verify.undecryptable) +
                            " rows are undecryptable by every configured key)"
                      : "no row needs a rolling key; the rolling key can be retired";
  KEYMIG_LOG(info, "engine", "run_finalized", {"run_id", run_id},
             {"journal_deleted", report.journal_deleted});
  return report;
}

PurgeReport purge_journals(const Options& options, std::chrono::seconds older_than) {
  db::Connection conn = open_connection(options.connect, options.metrics);
  db::ensure_schema(conn);
  auto [runs, rows] = db::with_retry(conn, [&] { return db::purge_journals(conn, older_than); });
  KEYMIG_LOG(info, "engine", "journal_purged", {"runs", runs}, {"rows", rows},
             {"older_than_seconds", static_cast<std::int64_t>(older_than.count())});
  return PurgeReport{runs, rows};
}

}  // namespace keymig::engine
