// `keymig serve`: the long-running service. Parses flags, builds the settings loader that
// SIGHUP calls again, and hands over to keymig::service.

#include <cstdlib>
#include <memory>

#include "command.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/engine/keys.hpp"
#include "keymig/metrics/metrics.hpp"
#include "keymig/service/service.hpp"

namespace keymig::app {
namespace {

constexpr const char* kServeHelp = R"(
Runs until SIGTERM/SIGINT, on one event loop:

  Schedule   keyMigration.schedule.every ("6h": once at start, then every 6 hours) and/or
             .at ("02:00", daily, UTC) run migrate, then verify of that run. Whole-table
             runs never overlap: one at a time in this process, and a PostgreSQL advisory
             lock per target keeps other `keymig serve` processes off the same target
             meanwhile. Selected-user requests (ids/usernames, at most 1000, and rollback)
             have a lane of their own and run beside such a run.
  Requests   rows of keymig.requests (kind migrate | verify | reset_mfa | status, params
             {"ids": [...]} or {"usernames": [...]}; empty = whole target, which reset_mfa
             refuses; kind rollback (of a reset_mfa run) | finalize, params
             {"run_id": "..."}; target = the table, e.g. 'public.users': a row without one
             fails; requested_by and reason are logged and echoed in result.request)
             followed by NOTIFY keymig_requests. The service LISTENs, claims each row
             naming its own target table with FOR UPDATE SKIP LOCKED, moves state
             queued -> running -> done|failed and writes the summary JSON into result. It also looks every --poll-interval
             seconds, and claims everything queued whenever it (re)connects, so requests
             queued while it was down or the database restarted are not lost. A request
             cut short by SIGTERM or by a database outage goes back to queued (migrate
             resumes from its checkpoint).
  HTTP       on --metrics-listen (default keyMigration.metrics.listen, 127.0.0.1:9464):
             /metrics  Prometheus text format (keymig_rows_total, ...)
             /healthz  200 while the process runs
             /readyz   200 once requests can be queued (LISTENing, keymig schema made), else 503
             /status   JSON: current run, last result per kind, schedule, config generation
  Signals    SIGTERM/SIGINT drain: the batch in flight commits, the checkpoint is written,
             exit 0 (a second signal exits at once; the run is still resumable).
             SIGHUP re-reads the config files and keys; a bad config is refused with an
             error log line and the old one stays. The next run uses the new keys. A
             reload starts no run: the schedule keeps its next time (config_reloaded
             logs run_started=false and next_run_at).

Logs: one line per event on stderr (--log-format json for machines); never a key, a token
or a plaintext. Keys come from the config files or KEYMIG_ACTIVE_KEY/KEYMIG_ROLLING_KEYS,
as for every command.)";

struct ServeFlags {
  std::string metrics_listen;
  double poll_interval = 30;
  std::string instance;
};

std::shared_ptr<const service::Settings> load_settings(const Common& common) {
  auto settings = std::make_shared<service::Settings>();
  settings->config = load_config(common);
  settings->keys = std::make_shared<const crypto::KeyRing>(load_keyring(settings->config));
  for (const auto& key : engine::describe_keys(settings->config))
    settings->fingerprints.push_back(key.fingerprint);
  settings->dsn = effective_dsn(common, settings->config);
  // A DSN libpq cannot parse is a config error at start (exit 2) and a refused SIGHUP
  // reload, not a database that is down: no reconnect loop echoing libpq's message.
  db::check_dsn(settings->dsn);
  return settings;
}

std::function<int()> setup_serve(CLI::App& sub, Common& common) {
  sub.footer(kServeHelp);
  add_config_flags(sub, common);
  add_db_flags(sub, common);
  add_log_flags(sub, common);
  auto flags = std::make_shared<ServeFlags>();
  sub.add_option("--metrics-listen", flags->metrics_listen,
                 "HOST:PORT for /metrics, /healthz, /readyz, /status; default "
                 "keyMigration.metrics.listen (127.0.0.1:9464). Port 0 picks a free one")
      ->type_name("ADDR");
  sub.add_option("--poll-interval", flags->poll_interval,
                 "seconds between queue checks without a NOTIFY (the fallback)")
      ->check(CLI::Range(0.1, 86400.0))
      ->type_name("SECONDS");
  sub.add_option("--instance", flags->instance,
                 "name written to keymig.requests.claimed_by; default host:pid:random")
      ->type_name("NAME");
  return [&common, flags] {
    // Bounds a blocking connect to an unreachable server, unless the operator chose.
    ::setenv("PGCONNECT_TIMEOUT", "10", /*overwrite=*/0);
    service::ServiceOptions options;
    options.metrics_listen = flags->metrics_listen;
    options.instance = flags->instance;
    options.journal_keeper = service::engine_journal_keeper();
    options.fallback_poll =
        std::chrono::milliseconds(static_cast<std::int64_t>(flags->poll_interval * 1000));
    // One for the process: the runs obey it, the HTTP routes change it.
    options.control = std::make_shared<engine::RunControl>();
    metrics::Metrics metrics;
    service::Service service([&common] { return load_settings(common); },
                             service::engine_runner(options.control), metrics, options);
    return service.run();
  };
}

const Registrar kServe{CommandSpec{
    "serve",
    "the service: scheduled runs, the request queue, metrics over HTTP, signals",
    290,
    setup_serve,
    {},
    "  keymig serve --config values.yaml --config serve.yaml   schedule, queue and /metrics\n"
    "  kill -HUP PID                                           reload the config and keys"}};

}  // namespace
}  // namespace keymig::app
