// The read-only passes, scan and verify: the one pipeline over every selected row, a
// transform per mode, counts and reports; verify also checks a run's journal.

#include "read_passes.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <nlohmann/json.hpp>

#include "command_record.hpp"
#include "connect.hpp"
#include "key_rows.hpp"
#include "keymig/db/acknowledged.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/journal.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/scans.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "page_source.hpp"
#include "pipeline.hpp"
#include "progress.hpp"
#include "transform.hpp"
#include "tsan_handoff.hpp"

namespace keymig::engine {

using namespace detail;

Options options_from_config(const config::Config& config) {
  const auto& m = config.migration;
  Options o;
  o.connect.dsn = m.dsn;
  o.connect.lock_timeout = m.lock_timeout;
  o.connect.statement_timeout = m.statement_timeout;
  o.targets = m.targets;
  o.target = m.targets.front();
  o.batch_size = m.batch_size;
  o.threads = m.threads;
  o.max_rows_per_second = m.max_rows_per_second;
  o.throttle = m.throttle;
  o.journal = m.journal;
  o.journal_retention = m.journal_retention;
  return o;
}

namespace {

void keep_ids(std::vector<std::string>& kept, std::vector<std::string>& batch) {
  for (auto& id : batch)
    if (kept.size() < kMaxListedRows) kept.push_back(std::move(id));
}

}  // namespace

namespace detail {

Tally read_pass(const crypto::KeyRing& keys, const Options& options, db::Connection& reader,
                const db::Table& table, Mode mode, std::vector<UndecryptableRow>& undecryptable,
                const std::function<void(Batch&)>& sink, const AcknowledgedIds* acknowledged) {
  const std::int64_t total =
      db::count_rows(reader, table, options.selection.empty() ? nullptr : &options.selection);
  PageSource source(reader, table, options);
  ProgressMeter meter(options, total, 0);
  Tally sum;
  run_pipeline(
      options.threads, [&] { return source.next(); },
      [&](Batch& b) { transform(b, keys, mode, table.has_flag(), acknowledged); },
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

std::string unix_time_text(std::uint64_t seconds) {
  return seconds == 0 ? std::string() : iso8601_utc(static_cast<std::int64_t>(seconds));
}

}  // namespace detail

namespace {

// A whole-target pass that ran to its end becomes the target's baseline in keymig.scans
// (migrate's pre-flight compares against it). Best effort: scan and verify need no write
// privilege, and a role without one still gets its report.
bool record_baseline(db::Connection& reader, const db::Table& table, const crypto::KeyRing& keys,
                     const Options& options, const char* command, const Tally& sum) {
  if (!options.record_baseline || !options.selection.empty() ||
      (options.stop && options.stop->load()))
    return false;
  db::ScanRecord rec;
  rec.target = table.label();
  rec.command = command;
  rec.rows_scanned = sum.rows;
  rec.undecryptable = sum.undecryptable;
  rec.acknowledged = sum.acknowledged;
  nlohmann::json by_key = nlohmann::json::array();
  for (const auto& k : key_rows(keys, sum.by_key))
    by_key.push_back({{"key", k.key}, {"fingerprint", k.fingerprint}, {"rows", k.rows}});
  rec.counts_json = nlohmann::json{{"by_key", by_key},
                                   {"empty", sum.empty},
                                   {"by_reason", sum.by_reason},
                                   {"unknown_key_first", unix_time_text(sum.unknown_key_first)},
                                   {"unknown_key_last", unix_time_text(sum.unknown_key_last)}}
                        .dump();
  rec.active_fingerprint = keys.fingerprint(0);
  rec.rolling_fingerprints = rolling_fingerprints(keys);
  try {
    return db::record_scan(reader, rec);
  } catch (const db::DbError& e) {
    KEYMIG_LOG(warn, "engine", "baseline_not_recorded", {"target", rec.target},
               {"command", command}, {"sqlstate", e.sqlstate()}, {"error", e.what()});
    return false;
  }
}

}  // namespace

ScanReport scan(const crypto::KeyRing& keys, const Options& options) {
  CommandRecord record(options.metrics, "scan", options.target);
  const auto start = std::chrono::steady_clock::now();
  db::Connection reader = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(reader, target_spec(options.target));
  // A schema or table the role may not read fails the first page otherwise, as a runtime
  // error deep in the pass rather than a target error naming the grant.
  db::check_privileges(reader, table, db::Access::read);
  record.on_target(table.label());
  (void)selected_not_found(reader, table, options.selection);
  ScanReport report;
  report.target = table.label();
  const AcknowledgedIds acknowledged = db::acknowledged_ids(reader, table.label());
  const Tally sum = read_pass(
      keys, options, reader, table, Mode::scan, report.undecryptable_rows,
      [&](Batch& b) {
        keep_ids(report.double_encrypted_rows, b.double_encrypted);
        if (options.metrics)
          options.metrics->add_crypto_operations("classify", b.tally.classify_ops);
      },
      &acknowledged);
  report.rows_scanned = sum.rows;
  report.active = sum.active;
  report.rolling = sum.rolling;
  report.by_key = key_rows(keys, sum.by_key);
  report.empty = sum.empty;
  report.undecryptable = sum.undecryptable;
  report.acknowledged = sum.acknowledged;
  report.undecryptable_by_reason = sum.by_reason;
  report.flag_wrong = sum.flag_wrong;
  report.double_encrypted = sum.double_encrypted;
  report.secret_column_chars = table.secret_max_chars;
  report.longest_token_chars = static_cast<std::int64_t>(sum.longest_token);
  if (table.secret_max_chars >= 0 && report.longest_token_chars > table.secret_max_chars) {
    report.warnings.push_back(
        "secret column " + table.label() + " is varchar(" + std::to_string(table.secret_max_chars) +
        ") but rows hold tokens whose canonical text " + "(what migrate writes) is " +
        std::to_string(report.longest_token_chars) +
        " characters: migrate would reject them; widen the column first");
    KEYMIG_LOG(warn, "engine", "secret_column_too_short", {"target", report.target},
               {"column_chars", report.secret_column_chars},
               {"longest_token_chars", report.longest_token_chars});
  }
  report.recorded = record_baseline(reader, table, keys, options, "scan", sum);
  report.seconds = seconds_since(start);
  publish_rows_by_key(options.metrics, report.target, report.by_key, report.undecryptable,
                      report.acknowledged, report.empty);
  KEYMIG_LOG(info, "engine", "scan_done", {"target", report.target}, {"rows", report.rows_scanned},
             {"active", report.active}, {"rolling", report.rolling},
             {"undecryptable", report.undecryptable}, {"acknowledged", report.acknowledged},
             {"double_encrypted", report.double_encrypted});
  // Undecryptable rows (exit 3) are data, not a failed scan; a scan cut short is neither.
  if (options.stop && options.stop->load())
    record.unfinished();
  else
    record.succeeded();
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

namespace detail {

VerifyReport verify_pass(const crypto::KeyRing& keys, const Options& options,
                         const std::string& run_id, CommandRecord* record) {
  const auto start = std::chrono::steady_clock::now();
  db::Connection reader = open_connection(options.connect, options.metrics);
  const db::Table table = db::check_target(reader, target_spec(options.target));
  db::check_privileges(reader, table, db::Access::read);
  if (record) record->on_target(table.label());
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
  const AcknowledgedIds acknowledged = db::acknowledged_ids(reader, table.label());
  const Tally sum = read_pass(
      keys, options, reader, table, Mode::verify, report.undecryptable_rows,
      [&](Batch& b) {
        keep_ids(report.needs_rolling_rows, b.needs_rolling);
        keep_ids(report.double_encrypted_rows, b.double_encrypted);
        if (auto* m = options.metrics) {
          m->add_crypto_operations("verify", b.tally.decrypt_ops);
          m->add_crypto_operations("classify", b.tally.classify_ops);
        }
      },
      &acknowledged);
  report.rows_scanned = sum.rows;
  report.ok = sum.verified_ok;
  report.needs_rolling = sum.rolling;
  report.undecryptable = sum.undecryptable;
  report.acknowledged = sum.acknowledged;
  report.empty = sum.empty;
  report.mismatched = sum.flag_wrong;
  report.double_encrypted = sum.double_encrypted;

  if (!run_id.empty()) {
    std::optional<std::string> after;
    const std::int64_t page = std::max<std::int64_t>(1, options.batch_size);
    while (true) {
      auto entries = db::with_retry(
          reader, [&] { return db::read_journal(reader, run_id, after, page); },
          retry_hook(options.metrics, "verify"));
      if (entries.empty()) break;
      std::vector<char> ok(entries.size(), 0);
      // TSan does not see TBB hand the parts to workers and wait for them (tsan_handoff.hpp).
      const TsanRun run;
      run.call([&] {
        tbb::parallel_for(tbb::blocked_range<std::size_t>(0, entries.size()), [&](const auto& r) {
          const TsanRun::Invocation in(run);
          for (std::size_t i = r.begin(); i != r.end(); ++i)
            if (!entries[i].new_null) ok[i] = journal_entry_ok(keys, entries[i]) ? 1 : 0;
          crypto::forget_key_schedules();  // on the thread that ran this part
        });
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
  // A finalize's verify is a pass over the same rows: it is a baseline as much as a
  // verify of its own.
  report.recorded = record_baseline(reader, table, keys, options, "verify", sum);
  report.seconds = seconds_since(start);
  publish_rows_by_key(options.metrics, report.target, key_rows(keys, sum.by_key),
                      report.undecryptable, report.acknowledged, report.empty);
  KEYMIG_LOG(info, "engine", "verify_done", {"target", report.target},
             {"rows", report.rows_scanned}, {"ok", report.ok},
             {"needs_rolling", report.needs_rolling}, {"undecryptable", report.undecryptable},
             {"acknowledged", report.acknowledged}, {"mismatched", report.mismatched},
             {"journal_checked", report.journal_checked}, {"journal_failed", report.journal_failed},
             {"double_encrypted", report.double_encrypted});
  return report;
}

}  // namespace detail

VerifyReport verify(const crypto::KeyRing& keys, const Options& options,
                    const std::string& run_id) {
  CommandRecord record(options.metrics, "verify", options.target);
  VerifyReport report = verify_pass(keys, options, run_id, &record);
  // A drain mid-way leaves nothing to resume and proves nothing: neither.
  if (options.stop && options.stop->load())
    record.unfinished();
  else if (report.succeeded())
    record.succeeded();  // 0, or 3: undecryptable rows are data (their own alert)
  return report;
}

}  // namespace keymig::engine
