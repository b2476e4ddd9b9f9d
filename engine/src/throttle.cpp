#include "throttle.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "connect.hpp"
#include "keymig/log.hpp"

namespace keymig::engine::detail {

namespace {

using Clock = std::chrono::steady_clock;

// "1s", "0.5s", "3.2s": the progress line's and the log's spelling of a lag.
std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", s);
  return std::string(buf) + "s";
}

// "3.2ms": a commit's latency.
std::string millis_text(std::chrono::microseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3gms", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

// Between the baseline's canaries: apart enough that one slow fsync is one sample.
constexpr std::chrono::milliseconds kBaselineSpacing{20};

bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

}  // namespace

Throttle::Throttle(const Options& options) : options_(options) {
  // An operator who watches the server chose what to watch; a dry run writes nothing.
  if (options_.throttle.adaptive && !options_.dry_run && !watches_server()) start_canary();
}

Throttle::~Throttle() {
  finish();
}

void Throttle::start_canary() {
  // Before the first page is read: the baseline is the server without keymig's load.
  std::optional<db::Connection> conn;
  try {
    // One attempt: a server short of connections is no reason to delay the run.
    conn.emplace(options_.connect);
    for (int i = 0; !canary_.ready(); ++i) {
      if (i > 0) std::this_thread::sleep_for(kBaselineSpacing);
      (void)canary_.observe(db::commit_canary(*conn));
    }
  } catch (const std::exception& e) {
    KEYMIG_LOG(warn, "engine", "throttle_canary_failed", {"error", e.what()},
               {"note",
                "the adaptive throttle judges by keymig's batches alone: it may not see the "
                "load keymig itself puts on the server"});
    return;
  }
  KEYMIG_LOG(info, "engine", "throttle_canary",
             {"baseline_ms", canary_.baseline().count() / 1000.0},
             {"target_ms", canary_.target().count() / 1000.0});
  canary_on_ = true;
  canary_thread_ = std::thread([this, c = std::move(*conn)]() mutable { run_canary(c); });
}

void Throttle::run_canary(db::Connection& conn) {
  std::unique_lock<std::mutex> sleep(canary_sleep_mutex_);
  while (!canary_wake_.wait_for(sleep, CommitCanary::kInterval, [this] { return canary_stop_; })) {
    sleep.unlock();
    try {
      const auto latency = db::commit_canary(conn);
      std::lock_guard<std::mutex> lock(mutex_);
      const auto before = canary_.gap();
      const auto gap = canary_.observe(latency);
      if (gap != before)
        KEYMIG_LOG(debug, "engine", "throttle_canary_gap", {"commit_ms", latency.count() / 1000.0},
                   {"median_ms", canary_.recent().count() / 1000.0},
                   {"gap_ms", static_cast<long long>(gap.count())});
    } catch (const std::exception& e) {
      // The batches' own sessions report a lost database; without its canary the
      // throttle still has the batches' rule.
      KEYMIG_LOG(warn, "engine", "throttle_canary_failed", {"error", e.what()});
      std::lock_guard<std::mutex> lock(mutex_);
      canary_on_ = false;
      return;
    }
    sleep.lock();
  }
}

void Throttle::stop_canary() {
  {
    std::lock_guard<std::mutex> lock(canary_sleep_mutex_);
    canary_stop_ = true;
  }
  canary_wake_.notify_all();
  if (canary_thread_.joinable()) canary_thread_.join();
}

void Throttle::pace(std::int64_t rows, const std::function<bool()>& stopping) {
  // Read at each call: a retune over /control/throttle applies to the next page.
  const std::int64_t rate = rows_per_second();
  if (rate <= 0) return;
  Clock::time_point due;
  {
    std::lock_guard<std::mutex> lock(pace_mutex_);
    // From now at the earliest: a lane that waited (paused, or on the database) must not
    // make up for it with a burst of pages at the end of the wait.
    due = std::max(next_read_, Clock::now());
    next_read_ = due + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                           static_cast<double>(rows) / static_cast<double>(rate)));
  }
  while (Clock::now() < due) {
    if (stopping()) return;
    std::this_thread::sleep_for(
        std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(100)));
  }
}

bool Throttle::watches_server() const noexcept {
  const auto& t = options_.throttle;
  return t.max_replica_lag.count() > 0 || t.max_active_sessions > 0 ||
         t.critical_active_sessions > 0;
}

std::int64_t Throttle::rows_per_second() const noexcept {
  return options_.control ? options_.control->rows_per_second(options_.max_rows_per_second)
                          : options_.max_rows_per_second;
}

bool Throttle::adaptive_on() const noexcept {
  // An operator who set a limit chose the pace; the adaptive default is for one who did not.
  const auto& t = options_.throttle;
  return t.adaptive && rows_per_second() <= 0 && t.max_replica_lag.count() <= 0 &&
         t.max_active_sessions <= 0;
}

void Throttle::committed(std::chrono::microseconds latency) {
  if (!adaptive_on()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto wait = adaptive_.observe(latency);
  const auto gap = canary_on_ ? canary_.gap() : std::chrono::milliseconds(0);
  if (wait.count() <= 0 && gap.count() <= 0) return;
  // Lanes share the server: one lane's slow commit holds them all back, and overlapping
  // waits extend rather than add up.
  const auto now = Clock::now();
  if (wait >= gap) {
    adaptive_until_ = std::max(adaptive_until_, now + wait);
    adaptive_status_ =
        "backing off: batch " + seconds_text(std::chrono::duration<double>(latency).count()) +
        " > " + std::to_string(static_cast<int>(AdaptiveBackoff::kFactor)) + "x median " +
        seconds_text(std::chrono::duration<double>(adaptive_.judged_median()).count());
  } else {
    adaptive_until_ = std::max(adaptive_until_, now + gap);
    adaptive_status_ = "backing off: commits " + millis_text(canary_.recent()) + " > " +
                       millis_text(canary_.target()) + " (idle " + millis_text(canary_.baseline()) +
                       ")";
  }
}

void Throttle::admit(const std::function<bool()>& stopping) {
  const auto& t = options_.throttle;
  if (t.flag_file.empty() && !watches_server() && options_.control == nullptr && !adaptive_on())
    return;
  while (!stopping()) {
    Verdict v;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      v = evaluate();
      enter(v);
    }
    if (v.reason.empty() || critical_.load()) return;
    Clock::duration nap = std::chrono::milliseconds(100);
    if (v.reason == "adaptive") {
      std::lock_guard<std::mutex> lock(mutex_);
      nap = std::min(nap, std::max<Clock::duration>(adaptive_until_ - Clock::now(),
                                                    std::chrono::milliseconds(1)));
    }
    std::this_thread::sleep_for(nap);
  }
}

void Throttle::probe() {
  const auto now = Clock::now();
  if (load_ && now - probed_at_ < kProbeInterval) return;
  probed_at_ = now;
  const auto& t = options_.throttle;
  try {
    if (!probe_conn_) probe_conn_.emplace(open_connection(options_.connect, options_.metrics));
    load_ = db::read_server_load(*probe_conn_, t.max_replica_lag.count() > 0,
                                 t.max_active_sessions > 0 || t.critical_active_sessions > 0);
    if (!load_->visible && !warned_invisible_) {
      warned_invisible_ = true;
      KEYMIG_LOG(warn, "engine", "throttle_blind",
                 {"note",
                  "this role may not read other roles' rows of pg_stat_replication and "
                  "pg_stat_activity: the replica lag and active sessions the throttle sees "
                  "may be short (GRANT pg_monitor TO the keymig role)"});
    }
  } catch (const std::exception& e) {
    // The batches' own sessions report a lost database; the throttle keeps its last view.
    probe_conn_.reset();
    KEYMIG_LOG(warn, "engine", "throttle_probe_failed", {"error", e.what()});
  }
}

double Throttle::effective_lag(const db::StandbyLag& s, Clock::time_point now) {
  if (s.replay_bytes <= 0) {
    behind_since_.erase(s.name);
    return 0;
  }
  if (s.replay_seconds) {
    behind_since_.erase(s.name);
    return *s.replay_seconds;
  }
  // Behind, with no replay_lag yet (the standby was idle when this burst of WAL began):
  // the time since it was first seen behind is the least it lags by.
  const auto since = behind_since_.emplace(s.name, now).first->second;
  return std::chrono::duration<double>(now - since).count();
}

Throttle::Verdict Throttle::evaluate() {
  const auto& t = options_.throttle;
  if (options_.control && options_.control->paused()) return {"paused", "paused (operator)"};
  if (!t.flag_file.empty() && file_exists(t.flag_file)) return {"flag_file", "paused (flag file)"};
  if (!watches_server()) return adaptive_verdict();
  probe();
  if (!load_) return current_;  // no view of the server yet: as before
  const auto sessions = load_->active_sessions;
  if (t.critical_active_sessions > 0 && sessions > t.critical_active_sessions && !critical_) {
    critical_reason_ = std::to_string(sessions) + " active sessions > " +
                       std::to_string(t.critical_active_sessions);
    critical_ = true;
    KEYMIG_LOG(error, "engine", "critical_load", {"active_sessions", sessions},
               {"limit", t.critical_active_sessions},
               {"note", "stopping: batches in flight commit, the run stays resumable"});
    return {};
  }
  if (t.max_replica_lag.count() > 0) {
    const auto now = Clock::now();
    const double limit = std::chrono::duration<double>(t.max_replica_lag).count();
    double worst = 0;
    std::string who;
    for (const auto& s : load_->standbys) {
      const double lag = effective_lag(s, now);
      if (lag > worst) {
        worst = lag;
        who = s.name;
      }
    }
    if (worst > limit)
      return {"replica_lag", "waiting: replica lag " + seconds_text(worst) + " > " +
                                 seconds_text(limit) + " (standby " + who + ")"};
  }
  if (t.max_active_sessions > 0 && sessions > t.max_active_sessions)
    return {"active_sessions", "waiting: " + std::to_string(sessions) + " active sessions > " +
                                   std::to_string(t.max_active_sessions)};
  return adaptive_verdict();
}

Throttle::Verdict Throttle::adaptive_verdict() const {
  if (Clock::now() < adaptive_until_) return {"adaptive", adaptive_status_};
  return {};
}

void Throttle::enter(const Verdict& v) {
  const auto now = Clock::now();
  auto* m = options_.metrics;
  // Wall time, once however many lanes wait: counted as it passes, so a scrape during
  // a long pause sees it grow.
  if (!current_.reason.empty() && m)
    m->add_throttled_seconds(current_.reason,
                             std::chrono::duration<double>(now - counted_to_).count());
  counted_to_ = now;
  if (v.reason != current_.reason) {
    if (!current_.reason.empty()) {
      if (m) m->set_throttled(current_.reason, false);
      KEYMIG_LOG(info, "engine", "throttle_cleared", {"reason", current_.reason},
                 {"seconds", std::chrono::duration<double>(now - entered_at_).count()});
    }
    if (!v.reason.empty()) {
      if (m) m->set_throttled(v.reason, true);
      KEYMIG_LOG(info, "engine", "throttled", {"reason", v.reason}, {"status", v.status});
    }
    entered_at_ = now;
  }
  const bool status_changed = v.status != current_.status;
  current_ = v;
  if (status_changed && on_status_) on_status_(v.status);
}

std::string Throttle::critical_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return critical_reason_;
}

void Throttle::on_status(std::function<void(const std::string&)> f) {
  std::lock_guard<std::mutex> lock(mutex_);
  on_status_ = std::move(f);
}

void Throttle::finish() {
  // Not under mutex_: the canary takes it to record what it measured.
  stop_canary();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!current_.reason.empty()) enter({});
  on_status_ = nullptr;
}

}  // namespace keymig::engine::detail
