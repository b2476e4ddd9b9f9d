#pragma once

// `keymig serve`: one boost::asio::io_context for signals, schedule timers, the LISTEN
// socket and HTTP; engine runs on two worker lanes, so the event loop never blocks on a
// migration: the main lane runs scheduled and whole-table work one job at a time, the
// selected lane only selected-user requests (service::is_selected_job), beside it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/run_control.hpp"
#include "keymig/error.hpp"
#include "keymig/http/server.hpp"
#include "keymig/service/jobs.hpp"

namespace keymig::metrics {
class Metrics;
}

namespace keymig::service {

/// A runtime failure of the service (the HTTP listener's is an http::HttpError).
class ServiceError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

/// Everything a run needs from config: swapped as a whole on SIGHUP, so a run keeps the
/// settings it started with and the next run uses the new ones.
struct Settings {
  config::Config config;
  std::shared_ptr<const crypto::KeyRing> keys;
  std::string dsn;                        // effective DSN ("" = libpq env vars)
  std::vector<std::string> fingerprints;  // active first, then rolling: for logs and /status
};

/// Loads config and keys afresh. Throws (config::ConfigError, crypto::KeyError, ...) when
/// they are not usable; the message never holds a key.
using SettingsLoader = std::function<std::shared_ptr<const Settings>()>;

/// What a job did.
struct RunOutcome {
  bool ok = false;           // exit code 0
  int exit_code = 0;         // as the one-shot command would exit (DESIGN.md section 3)
  bool interrupted = false;  // stopped by the stop flag before it finished
  std::string summary_json;  // a JSON object: run_id, counts, ... (the --json fields)
  std::string error;         // one line when it failed; never a secret
};

/// Runs one job to the end or until `*stop` becomes true (then drains: the batch in flight
/// commits, the checkpoint is written). Called on the worker thread. May throw; the
/// service turns an exception into a failed outcome. `progress` (may be empty) takes the
/// engine's progress reports, from the job's threads: /status shows the latest.
using ProgressSink = std::function<void(const engine::Progress&)>;
using Runner =
    std::function<RunOutcome(const Job& job, const Settings& settings, std::atomic<bool>& stop,
                             metrics::Metrics& metrics, const ProgressSink& progress)>;

/// The real runner: keymig::engine's migrate, verify (with the job's run_id: also that
/// run's journal) and reset_mfa (plan, then the journaled reset).
/// `control` (may be null) is every run's Options::control: serve's pause and retune.
[[nodiscard]] Runner engine_runner(std::shared_ptr<engine::RunControl> control = nullptr);

/// The journal upkeep of the settings' target (keyMigration.journalRetention, the journal
/// gauges). Called on the worker thread; may throw (the service logs it and tries again
/// at the next round).
using JournalKeeper = std::function<void(const Settings& settings, metrics::Metrics& metrics)>;

/// The real one: keymig::engine::maintain_journal.
[[nodiscard]] JournalKeeper engine_journal_keeper();

struct ServiceOptions {
  std::string metrics_listen;                      // empty: keyMigration.metrics.listen
  std::string instance;                            // keymig.requests.claimed_by; empty: "host:pid"
  std::chrono::milliseconds fallback_poll{30000};  // re-check the queue without a NOTIFY
  std::chrono::milliseconds reconnect_min{250};
  std::chrono::milliseconds reconnect_max{30000};
  std::chrono::milliseconds busy_retry{5000};  // another process holds the target
  bool handle_signals = true;                  // SIGTERM/SIGINT drain, SIGHUP reload
  // Journal upkeep at start and then this often (between jobs); empty keeper: none.
  JournalKeeper journal_keeper;
  std::chrono::milliseconds journal_every{std::chrono::minutes(5)};
  // Pause and retune (POST /control/*): share it with engine_runner(control) so that the
  // runs obey it. Null: the service makes its own (its runs then ignore it).
  std::shared_ptr<engine::RunControl> control;
};

/// The service. Construct, then run() on the thread that should own the event loop.
class Service {
 public:
  /// Loads the settings once (throws what the loader throws: exit 2) and binds the HTTP
  /// listener (throws UsageError / http::HttpError).
  Service(SettingsLoader loader, Runner runner, metrics::Metrics& metrics,
          ServiceOptions options = {});
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  /// Serves until SIGTERM/SIGINT or request_stop(); drains the worker and returns 0.
  int run();
  /// Thread-safe: what SIGTERM does.
  void request_stop();
  /// Thread-safe: what SIGHUP does.
  void request_reload();
  /// The bound HTTP port (valid after construction).
  [[nodiscard]] std::uint16_t http_port() const noexcept;
  /// The /status document (JSON). Thread-safe.
  [[nodiscard]] std::string status_json() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::service
