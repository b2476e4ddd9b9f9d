#pragma once

// The one home of "may the next batch go, or wait, and why" (docs/DESIGN.md section 2,
// keyMigration.maxRowsPerSecond and keyMigration.throttle): the rate at which pages leave
// the sources, and, before a migrate batch commits, the flag file, the standbys' replay
// lag and the server's other active sessions. The lanes of one migrate share one.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keymig/db/connection.hpp"
#include "keymig/db/load.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/run_control.hpp"

namespace keymig::engine::detail {

/// Thread-safe: every lane's source and writer call it.
class Throttle {
 public:
  explicit Throttle(const Options& options);
  ~Throttle();
  Throttle(const Throttle&) = delete;
  Throttle& operator=(const Throttle&) = delete;

  /// Waits until `rows` more rows may be read at options.max_rows_per_second (the
  /// process's rate, whatever the number of lanes); returns early once `stopping()`.
  /// Time spent waiting (a pause, a slow database) earns no burst afterwards.
  void pace(std::int64_t rows, const std::function<bool()>& stopping);

  /// Before a migrate batch commits: waits while the flag file exists, a standby lags
  /// more than maxReplicaLag, or more than maxActiveSessions other sessions are active
  /// (probed at most every kProbeInterval). Returns at once once `stopping()`, and when
  /// more than criticalActiveSessions are active (then critical() is true: the run must
  /// stop). Never throws: a probe that fails is logged and retried at the next probe.
  void admit(const std::function<bool()>& stopping);

  /// After a migrate batch committed in `latency`: with the adaptive default on (no rate
  /// and no server limit set, keyMigration.throttle.adaptive), a batch far slower than
  /// the running median makes every lane's next admit() wait (reason "adaptive"), and so
  /// does the canary's gap while its commits are slower than the server's before the run.
  void committed(std::chrono::microseconds latency);

  /// The rate pace() keeps now: the run control's override, else the config's.
  [[nodiscard]] std::int64_t rows_per_second() const noexcept;

  /// criticalActiveSessions was exceeded: the sources end, the run stays resumable.
  [[nodiscard]] bool critical() const noexcept { return critical_.load(); }
  /// Why critical() is true, for the report ("142 active sessions > 100").
  [[nodiscard]] std::string critical_reason() const;

  /// Called with the progress line's status ("paused (flag file)", "" when clear) each
  /// time it changes.
  void on_status(std::function<void(const std::string&)> f);

  /// Ends a throttled interval still open (its seconds counted, its gauge 0) and stops
  /// the canary.
  void finish();

  static constexpr std::chrono::milliseconds kProbeInterval{250};

 private:
  struct Verdict {
    // metric label: paused, flag_file, replica_lag, active_sessions, adaptive; "": go
    std::string reason;
    std::string status;  // for the progress line and the log
  };
  [[nodiscard]] bool watches_server() const noexcept;
  [[nodiscard]] bool adaptive_on() const noexcept;
  Verdict evaluate();                              // under mutex_
  [[nodiscard]] Verdict adaptive_verdict() const;  // under mutex_
  void probe();                                    // under mutex_
  void start_canary();                    // in the constructor: the baseline, then the thread
  void run_canary(db::Connection& conn);  // the canary's thread
  void stop_canary();
  void enter(const Verdict& v);  // under mutex_
  [[nodiscard]] double effective_lag(const db::StandbyLag& s,
                                     std::chrono::steady_clock::time_point now);

  const Options& options_;
  std::mutex pace_mutex_;
  std::chrono::steady_clock::time_point next_read_{};

  mutable std::mutex mutex_;
  std::optional<db::Connection> probe_conn_;
  std::optional<db::ServerLoad> load_;
  std::chrono::steady_clock::time_point probed_at_{};
  bool warned_invisible_ = false;
  // Standbys behind us with no replay_lag measured yet: since when.
  std::map<std::string, std::chrono::steady_clock::time_point> behind_since_;
  Verdict current_;
  std::chrono::steady_clock::time_point counted_to_{};  // throttled seconds counted up to
  std::chrono::steady_clock::time_point entered_at_{};
  std::function<void(const std::string&)> on_status_;
  AdaptiveBackoff adaptive_;                                // under mutex_
  std::chrono::steady_clock::time_point adaptive_until_{};  // under mutex_: back off till
  std::string adaptive_status_;                             // under mutex_
  // The commit canary (CommitCanary): its own session and thread, on
  // for a migrate that writes with the adaptive default on and no server limit.
  CommitCanary canary_;     // under mutex_
  bool canary_on_ = false;  // under mutex_: false once it fails
  std::mutex canary_sleep_mutex_;
  std::condition_variable canary_wake_;
  bool canary_stop_ = false;  // under canary_sleep_mutex_
  std::thread canary_thread_;
  std::atomic<bool> critical_{false};
  std::string critical_reason_;
};

}  // namespace keymig::engine::detail
