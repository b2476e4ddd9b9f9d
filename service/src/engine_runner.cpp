// The bridge from service jobs to keymig::engine. Kept apart from the event loop so that
// service tests can run the loop with a fake runner.

#include <nlohmann/json.hpp>

#include "keymig/db/connection.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/engine/targets.hpp"
#include "keymig/service/service.hpp"

namespace keymig::service {

namespace {

engine::Options engine_options(const Job& job, const Settings& settings, std::atomic<bool>& stop,
                               metrics::Metrics& metrics, const ProgressSink& progress,
                               engine::RunControl* control = nullptr) {
  engine::Options options = engine::options_from_config(settings.config);
  options.connect.dsn = settings.dsn;
  options.selection = job.selection;
  engine::select_targets(options, job.targets);
  options.stop = &stop;
  options.metrics = &metrics;
  options.control = control;
  options.progress = progress;
  // serve's log has no terminal: a progress line now and then shows a long run moving.
  options.progress_log_every = std::chrono::seconds(30);
  return options;
}

// `succeeded`: the engine's verdict (MigrateReport::succeeded, VerifyReport::succeeded),
// the one keymig_last_run_success follows, so that a request's result and /status say
// what the metric says of the same outcome.
RunOutcome from_report(int exit_code, std::string summary, bool stopped, bool succeeded) {
  RunOutcome out;
  out.exit_code = exit_code;
  out.interrupted = stopped;
  out.ok = !stopped && succeeded;
  out.summary_json = std::move(summary);
  if (stopped) out.error = "stopped by shutdown before the end; the run is resumable";
  return out;
}

db::Connection admin_connection(const Settings& settings) {
  db::ConnectOptions connect;
  connect.dsn = settings.dsn;
  connect.lock_timeout = settings.config.migration.lock_timeout;
  connect.statement_timeout = settings.config.migration.statement_timeout;
  return db::Connection(connect);
}

RunOutcome reset(const Job& job, const Settings& settings, metrics::Metrics& metrics) {
  // The request queue is an admin surface: plan_reset_mfa refuses what the CLI refuses
  // (an empty selection, patterns), before any write, and records the refusal.
  const db::Selection& selection = job.selection;
  db::Connection conn = admin_connection(settings);
  auto plan =
      engine::plan_reset_mfa(conn, settings.config, settings.keys.get(), selection, &metrics);
  auto result = engine::reset_mfa(conn, settings.config, settings.keys.get(), plan, &metrics);
  nlohmann::json users = nlohmann::json::array();
  for (const auto& u : result.users)
    users.push_back({{"id", u.id}, {"username", u.username}, {"had_mfa", u.mfa}});
  nlohmann::json summary = {{"run_id", result.run_id},
                            {"target", result.target},
                            {"reset", result.users.size()},
                            {"users", users}};
  return from_report(kExitOk, summary.dump(), false, true);
}

// The admin UI's undo of "Remove MFA": the engine's rollback, for reset_mfa runs only. A
// migrate run's rollback puts every rotated secret back under the old key (after an
// incident, the compromised one): that stays an operator's `keymig rollback`.
RunOutcome rollback(const Job& job, const Settings& settings, std::atomic<bool>& stop,
                    metrics::Metrics& metrics, const ProgressSink& progress) {
  {
    db::Connection conn = admin_connection(settings);
    auto run = db::load_run(conn, job.run_id);
    if (!run) throw UsageError("no run " + job.run_id + " in keymig.runs");
    if (run->kind != "reset_mfa")
      throw UsageError("run " + job.run_id + " is a " + run->kind +
                       " run: the queue rolls back reset_mfa runs only (use `keymig rollback "
                       "--run " +
                       job.run_id + "`)");
  }
  auto report =
      engine::rollback(engine_options(job, settings, stop, metrics, progress), job.run_id);
  // Stopped before its last page, the run is still to be rolled back: the request goes
  // back to the queue and the next claim finishes it.
  const bool done = report.state == "rolled_back";
  return from_report(kExitOk, report.to_json(), !done, done);
}

RunOutcome status(const Job& job, const Settings& settings) {
  // What `keymig status --json` prints, for the same selection.
  engine::StatusOptions options;
  options.selection = job.selection;
  options.threads = settings.config.migration.threads;
  engine::validate_selection(options.selection, /*allow_empty=*/true);
  db::Connection conn = admin_connection(settings);
  auto report = engine::mfa_status(conn, settings.config, *settings.keys, options);
  return from_report(kExitOk, report.to_json(), false, true);
}

}  // namespace

Runner engine_runner(std::shared_ptr<engine::RunControl> control) {
  return [control](const Job& job, const Settings& settings, std::atomic<bool>& stop,
                   metrics::Metrics& metrics, const ProgressSink& progress) -> RunOutcome {
    switch (job.kind) {
      case JobKind::migrate: {
        const auto all = engine::migrate_targets(
            *settings.keys, engine_options(job, settings, stop, metrics, progress, control.get()));
        const auto& report = all.total;
        // A stop on critical load is the run's own verdict, not serve's shutdown: requeued
        // like one, the request would be claimed again at once, against a database that
        // had just asked keymig to back off. It fails; the run stays resumable.
        const bool shutdown = report.stopped && report.stopped_by == "signal";
        RunOutcome out = from_report(all.exit_code(), all.to_json(), shutdown,
                                     !report.stopped && report.succeeded());
        if (report.stopped && !shutdown)
          out.error = "stopped on " + report.stopped_by +
                      "; the run is resumable: queue a migrate again once the load is down";
        return out;
      }
      case JobKind::verify: {
        const auto all = engine::verify_targets(
            *settings.keys, engine_options(job, settings, stop, metrics, progress), job.run_id);
        // Verify reads only; a drain mid-way leaves nothing to resume, so it is not a
        // partial success.
        bool stopped = stop.load();
        return from_report(all.exit_code(), all.to_json(), stopped, all.total.succeeded());
      }
      case JobKind::reset_mfa:
        return reset(job, settings, metrics);
      case JobKind::rollback:
        return rollback(job, settings, stop, metrics, progress);
      case JobKind::finalize: {
        const auto all = engine::finalize_targets(
            *settings.keys, engine_options(job, settings, stop, metrics, progress), job.run_id);
        // Stopped before it deleted the journal: the next claim finalizes it.
        return from_report(all.exit_code(), all.to_json(), stop.load() && !all.total.finalized,
                           all.exit_code() == kExitOk);
      }
      case JobKind::status:
        return status(job, settings);
    }
    throw ServiceError("unknown job kind");
  };
}

JournalKeeper engine_journal_keeper() {
  return [](const Settings& settings, metrics::Metrics& metrics) {
    std::atomic<bool> never{false};
    engine::Options options = engine_options(Job{}, settings, never, metrics, {});
    // One attempt: the next round is minutes away, and a worker waiting out retries on
    // a database that went away holds up the jobs and SIGTERM.
    options.connect.max_retries = 0;
    engine::maintain_journal(options);
  };
}

}  // namespace keymig::service
