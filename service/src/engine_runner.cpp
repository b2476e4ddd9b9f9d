// The bridge from service jobs to keymig::engine. Kept apart from the event loop so that
// service tests can run the loop with a fake runner.

#include <nlohmann/json.hpp>

#include "keymig/db/connection.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/service/service.hpp"

namespace keymig::service {

namespace {

engine::Options engine_options(const Job& job, const Settings& settings, std::atomic<bool>& stop,
                               metrics::Metrics& metrics) {
  engine::Options options = engine::options_from_config(settings.config);
  options.connect.dsn = settings.dsn;
  options.selection = job.selection;
  options.stop = &stop;
  options.metrics = &metrics;
  return options;
}

RunOutcome from_report(int exit_code, std::string summary, bool stopped) {
  RunOutcome out;
  out.exit_code = exit_code;
  out.interrupted = stopped;
  out.ok = !stopped && exit_code == kExitOk;
  out.summary_json = std::move(summary);
  if (stopped) out.error = "stopped by shutdown before the end; the run is resumable";
  return out;
}

RunOutcome reset(const Job& job, const Settings& settings, metrics::Metrics& metrics) {
  // The request queue is an admin surface: plan_reset_mfa refuses what the CLI refuses
  // (an empty selection, patterns), before any write, and records the refusal.
  const db::Selection& selection = job.selection;
  db::ConnectOptions connect;
  connect.dsn = settings.dsn;
  connect.lock_timeout = settings.config.migration.lock_timeout;
  connect.statement_timeout = settings.config.migration.statement_timeout;
  db::Connection conn(connect);
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
  return from_report(kExitOk, summary.dump(), false);
}

}  // namespace

Runner engine_runner() {
  return [](const Job& job, const Settings& settings, std::atomic<bool>& stop,
            metrics::Metrics& metrics) -> RunOutcome {
    switch (job.kind) {
      case JobKind::migrate: {
        auto report = engine::migrate(*settings.keys, engine_options(job, settings, stop, metrics));
        return from_report(report.exit_code(), report.to_json(), report.stopped);
      }
      case JobKind::verify: {
        auto report = engine::verify(*settings.keys, engine_options(job, settings, stop, metrics),
                                     job.run_id);
        // Verify reads only; a drain mid-way leaves nothing to resume, so it is not a
        // partial success.
        bool stopped = stop.load();
        return from_report(report.exit_code(), report.to_json(), stopped);
      }
      case JobKind::reset_mfa:
        return reset(job, settings, metrics);
    }
    throw ServiceError("unknown job kind");
  };
}

}  // namespace keymig::service
