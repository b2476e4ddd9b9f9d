// `keymig migrate` as the sequence of its steps: open the reader (the other sessions open
// in the background), check the target, plan or resume the run, run the lanes, sweep the
// conflicts, complete the run, report.

#include <exception>

#include "command_record.hpp"
#include "conflict_sweep.hpp"
#include "connect.hpp"
#include "journal_runs.hpp"
#include "key_rows.hpp"
#include "keymig/db/acknowledged.hpp"
#include "keymig/db/batch.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/log.hpp"
#include "keymig/redact.hpp"
#include "lanes.hpp"
#include "migrate_preflight.hpp"
#include "migrate_steps.hpp"
#include "progress.hpp"
#include "run_plan.hpp"

namespace keymig::engine {

using namespace detail;

namespace {

// A failed migration marks its run failed on a fresh session (the failing one may be
// gone); a run left "running" resumes all the same, so a failure here is not reported.
void fail_run(const Options& options, const std::optional<db::Run>& run, const std::exception& e) {
  if (!run) return;
  try {
    db::Connection conn = open_connection(options.connect, nullptr);
    // DbErrors are scrubbed where they are made; anything else is scrubbed here, since
    // keymig.runs.error outlives the process and is read by whoever may read the table.
    db::set_run_state(conn, run->run_id, "failed", scrub_tokens(e.what()));
  } catch (const std::exception&) {
    // The run stays "running"; a later migrate resumes it all the same.
  }
}

void fill_report(MigrateReport& report, Outcome& out, const crypto::KeyRing& keys) {
  report.stopped = out.stopped;
  report.rows_scanned = out.tally.rows;
  report.rotated = out.rotated;
  report.already_active = out.already_active;
  report.flag_fixed = out.flag_fixed;
  report.empty = out.tally.empty;
  report.undecryptable = out.tally.undecryptable;
  report.acknowledged = out.tally.acknowledged;
  report.conflicts = out.conflicts;
  report.undecryptable_rows = std::move(out.undecryptable_rows);
  report.rejected = out.rejected;
  report.rejected_rows = std::move(out.rejected_rows);
  report.rewritten = out.rewritten;
  report.rewritten_rows = std::move(out.rewritten_rows);
  report.by_key = key_rows(keys, out.tally.by_key);
}

// Completes the run unless it was stopped (or other workers still hold chunks), and
// reads back its state and cumulative counts.
void finish_run(db::Connection& reader, const db::Run& run, const Options& options,
                MigrateReport& report) {
  bool done = false;
  if (!report.stopped)
    done = db::with_retry(
        reader, [&] { return db::complete_run_if_done(reader, run.run_id); },
        retry_hook(options.metrics, "complete"));
  auto final_run = db::load_run(reader, run.run_id);
  report.state = final_run ? final_run->state : "unknown";
  if (final_run) report.run_totals = final_run->counts;
  KEYMIG_LOG(info, "engine", done ? "run_completed" : "run_left", {"run_id", run.run_id},
             {"state", report.state}, {"rotated", report.rotated}, {"conflicts", report.conflicts},
             {"undecryptable", report.undecryptable}, {"acknowledged", report.acknowledged});
  if (report.rejected > 0)
    KEYMIG_LOG(warn, "engine", "rows_rejected", {"run_id", run.run_id}, {"rows", report.rejected},
               {"note",
                "the database refused these rows (see rejected_rows); they keep their old token, "
                "which the rolling key still reads: fix the cause, then run keymig migrate again"});
  if (report.rewritten > 0)
    KEYMIG_LOG(warn, "engine", "rows_rewritten", {"run_id", run.run_id}, {"rows", report.rewritten},
               {"note",
                "the database stored something other than the token keymig wrote (a BEFORE UPDATE "
                "trigger?); their journal rows are kept: investigate, or roll the run back"});
}

}  // namespace

namespace detail {

MigratePrep check_migrate(db::Connection& reader, const Options& options) {
  // A refused target (missing, a view, hidden by row security, a privilege short) leaves
  // no trace, not even schema keymig. A dry run writes nothing, the schema included.
  MigratePrep prep{db::check_target(reader, target_spec(options.target)), {}, {}, {}};
  db::check_privileges(reader, prep.table, options.dry_run ? db::Access::read : db::Access::write);
  // A selection of only unknown users is refused here too, before anything is made.
  prep.not_found = selected_not_found(reader, prep.table, options.selection);
  return prep;
}

void preflight_migrate(db::Connection& reader, const crypto::KeyRing& keys, const Options& options,
                       MigratePrep& prep) {
  prep.acknowledged = db::acknowledged_ids(reader, prep.table.label());
  // Before the run is made or a row written: a swapped or short config is refused here
  // (exit 2), with the likely missing key named. A dry run writes nothing to refuse.
  if (!options.dry_run)
    prep.preflight = migrate_preflight(reader, prep.table, keys, options, prep.acknowledged);
}

MigrateReport run_migrate(const crypto::KeyRing& keys, const Options& options,
                          db::Connection& reader, LaneSessions& sessions, MigratePrep prep,
                          CommandRecord& record) {
  const auto start = std::chrono::steady_clock::now();
  const db::Table& table = prep.table;
  const AcknowledgedIds& acknowledged = prep.acknowledged;
  MigrateReport report;
  report.dry_run = options.dry_run;
  report.target = table.label();
  report.not_found = std::move(prep.not_found);
  report.preflight = std::move(prep.preflight);

  Options opts = options;  // the selection and journal may come from the resumed run
  const RunPlan plan = plan_run(reader, table, keys, opts, sessions.max_lanes());
  report.resumed = plan.resumed;
  if (plan.run) report.run_id = plan.run->run_id;

  ProgressMeter meter(opts, plan.total, plan.run ? plan.run->counts.rows_scanned : 0);
  const auto throttle = std::make_shared<Throttle>(opts);
  throttle->on_status([&meter](const std::string& status) { meter.set_status(status); });
  Outcome out;
  try {
    out = run_lanes(sessions, reader, table, keys, opts, plan.run, meter, &acknowledged, throttle);
    // A run stopped for critical load leaves its conflicts to the run that resumes it.
    if (!out.conflict_ids.empty() && !opts.dry_run && !throttle->critical())
      report.conflicts_resolved = sweep_conflicts(sessions.writer(), table, keys, opts,
                                                  plan.run->run_id, out, &acknowledged, *throttle);
  } catch (const std::exception& e) {
    throttle->finish();
    fail_run(opts, plan.run, e);
    throw;
  }
  throttle->finish();
  meter.finish();

  fill_report(report, out, keys);
  if (throttle->critical()) {
    report.stopped = true;
    report.stopped_by = "critical load: " + throttle->critical_reason();
    KEYMIG_LOG(warn, "engine", "run_stopped", {"run_id", report.run_id},
               {"reason", report.stopped_by},
               {"note", "the run is resumable: run keymig migrate again once the load is down"});
  } else if (report.stopped) {
    report.stopped_by = "signal";
  }
  if (plan.run)
    finish_run(reader, *plan.run, opts, report);
  else
    report.state = "dry_run";
  if (plan.run) {
    // After the run's own end, so that its completion stands whatever the upkeep meets;
    // only a completed run applies the retention (a stopped one is still under way).
    JournalUpkeep upkeep;
    upkeep_journal_after(reader, report.target, opts, report.state == "completed", &upkeep);
    report.journal_purged_runs = upkeep.purged_runs;
    report.journal_purged_rows = upkeep.purged_rows;
  }
  report.seconds = seconds_since(start);
  publish_rows_by_key(opts.metrics, report.target, report.by_key, report.undecryptable,
                      report.acknowledged, report.empty);
  // Stopped, left to other workers, or a dry run: neither success nor failure.
  if (report.succeeded())
    record.succeeded();
  else
    record.unfinished();
  return report;
}

}  // namespace detail

MigrateReport migrate(const crypto::KeyRing& keys, const Options& options) {
  CommandRecord record(options.metrics, "migrate", options.target);
  const auto start = std::chrono::steady_clock::now();
  db::Connection reader = open_connection(options.connect, options.metrics);
  LaneSessions sessions(options);
  MigratePrep prep = check_migrate(reader, options);
  if (!options.dry_run) db::ensure_schema(reader);
  record.on_target(prep.table.label());
  preflight_migrate(reader, keys, options, prep);
  MigrateReport report = run_migrate(keys, options, reader, sessions, std::move(prep), record);
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace keymig::engine
