// The schedule (keyMigration.schedule.every / .at), the fallback poll of the request
// queue and the journal upkeep: timers on the event loop that only hand work to the
// worker.

#include <algorithm>
#include <boost/asio/post.hpp>

#include "keymig/log.hpp"
#include "service_impl.hpp"

namespace keymig::service {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

void Service::Impl::arm_poll() {
  poll_timer.expires_after(options.fallback_poll);
  poll_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    // The fallback for a lost NOTIFY (e.g. sent while we were reconnecting).
    if (listen_up) want_drain();
    arm_poll();
  });
}

void Service::Impl::retry_drain_later() {
  asio::post(io, [this] {
    if (stop_begun) return;
    busy_timer.expires_after(options.busy_retry);
    busy_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) want_drain();
    });
  });
}

void Service::Impl::arm_schedule(bool at_start) {
  every_timer.cancel();
  at_timer.cancel();
  auto s = current_settings();
  const auto& schedule = s->config.migration.schedule;
  std::optional<system_clock::time_point> next;
  if (schedule.every) {
    // First run at start: a fresh deployment converges (and fills the metrics) at once.
    // A reload keeps the run that was due (sooner, if the new interval is shorter): a
    // SIGHUP that started a whole-table run no one asked for took the database's cores
    // in the middle of the day.
    const auto now = steady_clock::now();
    const auto wall = system_clock::now();
    if (at_start) {
      arm_every(milliseconds(0), *schedule.every, generation);
    } else if (every_due && every_due->first < now + *schedule.every) {
      const auto kept = *every_due;
      arm_every(std::chrono::duration_cast<milliseconds>(std::max(kept.first, now) - now),
                *schedule.every, generation);
      every_due = kept;  // the same time, to the second /status shows
    } else {
      arm_every(std::chrono::duration_cast<milliseconds>(*schedule.every), *schedule.every,
                generation);
    }
    next = std::max(every_due->second, wall);
  } else {
    every_due.reset();
  }
  if (schedule.at_minute_of_day) {
    auto at = next_daily_run(system_clock::now(), *schedule.at_minute_of_day);
    arm_at(*schedule.at_minute_of_day, generation);
    if (!next || at < *next) next = at;
  }
  std::lock_guard<std::mutex> lock(status_mu);
  next_scheduled = next;
}

void Service::Impl::arm_every(milliseconds delay, std::chrono::seconds every, int gen) {
  every_due.emplace(steady_clock::now() + delay, system_clock::now() + delay);
  every_timer.expires_after(delay);
  every_timer.async_wait([this, every, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation) return;
    want_run("every");
    arm_every(std::chrono::duration_cast<milliseconds>(every), every, gen);
    std::lock_guard<std::mutex> lock(status_mu);
    next_scheduled = every_due->second;
  });
}

void Service::Impl::arm_at(int minute_of_day, int gen) {
  auto now = system_clock::now();
  auto at = next_daily_run(now, minute_of_day);
  at_timer.expires_after(std::chrono::duration_cast<milliseconds>(at - now));
  at_timer.async_wait([this, minute_of_day, gen](const boost::system::error_code& ec) {
    if (ec || gen != generation) return;
    want_run("at");
    arm_at(minute_of_day, gen);
  });
}

void Service::Impl::arm_journal(milliseconds delay) {
  if (!options.journal_keeper || stop_begun) return;
  journal_timer.expires_after(delay);
  journal_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      journal_wanted = true;
    }
    cv.notify_all();
    arm_journal(options.journal_every);
  });
}

// On the main lane's thread, between jobs, so that it never races a run of this serve for the
// database. Its own session: a failure here must not cost the worker its session (and
// the claims it marks as live).
void Service::Impl::journal_round() {
  // Not while the database is away: a connect that never answers would hold the worker,
  // and with it SIGTERM. Again soon, so that the first round follows the first connect.
  if (!db_up) {
    asio::post(io, [this] { arm_journal(std::chrono::seconds(1)); });
    return;
  }
  auto s = current_settings();
  try {
    options.journal_keeper(*s, metrics);
  } catch (const std::exception& e) {
    KEYMIG_LOG(warn, "service", "journal_upkeep_failed", {"error", one_line(e.what())});
  }
}

void Service::Impl::want_drain() {
  {
    std::lock_guard<std::mutex> lock(mu);
    main_lane.drain_wanted = true;
    selected_lane.drain_wanted = true;
  }
  cv.notify_all();
}

void Service::Impl::want_run(const char* why) {
  KEYMIG_LOG(info, "service", "scheduled_run_due", {"trigger", why});
  {
    std::lock_guard<std::mutex> lock(mu);
    run_wanted = true;
  }
  cv.notify_all();
}

}  // namespace keymig::service
