// The service's lifecycle: construction, run, signals (SIGTERM/SIGINT drain, SIGHUP
// reload) and stop. The roles it starts live in listener.cpp, scheduler.cpp, worker.cpp
// and status.cpp.

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <csignal>
#include <cstdlib>

#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "service_impl.hpp"

namespace keymig::service {

using std::chrono::system_clock;

namespace {

std::string default_instance() {
  std::string name = host_name();
  if (name.size() > 40) name.resize(40);
  return name + ":" + std::to_string(::getpid()) + ":" + random_hex(6);
}

}  // namespace

void Service::Impl::await_signal() {
  signals.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;  // operation_aborted: shutting down
    if (signo == SIGHUP) {
      reload();
    } else if (!stop_begun) {
      KEYMIG_LOG(info, "service", "signal_received",
                 {"signal", signo == SIGINT ? "SIGINT" : "SIGTERM"});
      begin_stop();
    } else {
      // The operator insists: every batch is its own transaction, so leaving now loses
      // nothing that was committed and the run resumes from its checkpoint.
      KEYMIG_LOG(warn, "service", "second_signal_exit_now");
      std::_Exit(kExitRuntime);
    }
    await_signal();
  });
}

void Service::Impl::begin_stop() {
  if (stop_begun) return;
  stop_begun = true;
  KEYMIG_LOG(info, "service", "draining", {"run_in_progress", !current_is_null()});
  stop_flag = true;
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  // Timers that would start new work go now; HTTP and signals stay until the worker
  // has drained, so /metrics and a second SIGTERM still work meanwhile.
  poll_timer.cancel();
  busy_timer.cancel();
  every_timer.cancel();
  at_timer.cancel();
  journal_timer.cancel();
  reconnect_timer.cancel();
}

void Service::Impl::finish_stop() {
  if (finished) return;
  finished = true;
  if (http) http->stop();
  signals.cancel();
  close_listener();
  reconnect_timer.cancel();
}

void Service::Impl::reload() {
  KEYMIG_LOG(info, "service", "config_reload_requested");
  std::shared_ptr<const Settings> fresh;
  try {
    fresh = loader();
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lock(settings_mu);
      last_reload_error = one_line(e.what());
    }
    KEYMIG_LOG(error, "service", "config_reload_refused", {"error", one_line(e.what())},
               {"kept_generation", generation});
    return;
  }
  bool dsn_changed = false;
  {
    std::lock_guard<std::mutex> lock(settings_mu);
    dsn_changed = fresh->dsn != settings->dsn;
    if (fresh->config.migration.metrics.listen != settings->config.migration.metrics.listen &&
        options.metrics_listen.empty())
      KEYMIG_LOG(warn, "service", "metrics_listen_change_needs_restart",
                 {"listen", fresh->config.migration.metrics.listen});
    settings = fresh;
    ++generation;
    loaded_at = system_clock::now();
    last_reload_error.clear();
  }
  arm_schedule(/*at_start=*/false);
  std::string next_run;
  {
    std::lock_guard<std::mutex> lock(status_mu);
    if (next_scheduled) next_run = iso8601_utc(*next_scheduled);
  }
  // Say what a reload does and does not do: operators sent SIGHUP expecting a run (or
  // feared one), and the log is where they look.
  KEYMIG_LOG(
      info, "service", "config_reloaded", {"generation", generation},
      {"active_key", fresh->fingerprints.empty() ? std::string() : fresh->fingerprints[0]},
      {"rolling_keys",
       static_cast<std::int64_t>(fresh->fingerprints.empty() ? 0 : fresh->fingerprints.size() - 1)},
      {"run_started", false}, {"next_run_at", next_run.empty() ? "none" : next_run},
      {"applies_to", "the next run and the next request; a run in progress keeps its keys"});
  if (dsn_changed) connect_listener();
}

Service::Service(SettingsLoader loader, Runner runner, metrics::Metrics& metrics,
                 ServiceOptions options)
    : impl_(std::make_unique<Impl>(std::move(loader), std::move(runner), metrics,
                                   std::move(options))) {
  auto& d = *impl_;
  d.instance = d.options.instance.empty() ? default_instance() : d.options.instance;
  d.settings = d.loader();
  if (!d.settings) throw ServiceError("no settings loaded");
  d.generation = 1;
  d.loaded_at = system_clock::now();
  std::string listen = d.options.metrics_listen.empty()
                           ? d.settings->config.migration.metrics.listen
                           : d.options.metrics_listen;
  d.control = d.options.control ? d.options.control : std::make_shared<engine::RunControl>();
  http::HttpLimits limits;
  limits.allow_post = true;  // POST /control/*; the handler answers 405 elsewhere
  d.http = std::make_unique<HttpServer>(
      d.io, listen, [&d](const HttpRequest& r) { return d.handle(r); }, limits);
}

Service::~Service() {
  if (impl_->main_lane.thread.joinable()) {
    impl_->begin_stop();
    impl_->main_lane.thread.join();  // which joins the selected lane
  }
  impl_->close_listener();
}

int Service::run() {
  auto& d = *impl_;
  if (d.options.handle_signals) {
    d.signals.add(SIGINT);
    d.signals.add(SIGTERM);
    d.signals.add(SIGHUP);
    d.await_signal();
  }
  d.http->start();
  KEYMIG_LOG(info, "service", "service_started", {"instance", d.instance},
             {"http", d.http->local_address()},
             {"target", d.current_settings()->config.migration.targets.front().table});
  d.selected_lane.thread = std::thread([&d] { d.lane_main(d.selected_lane); });
  d.main_lane.thread = std::thread([&d] { d.lane_main(d.main_lane); });
  asio::post(d.io, [&d] {
    d.connect_listener();
    d.arm_poll();
    d.arm_schedule(/*at_start=*/true);
    d.arm_journal(std::chrono::milliseconds(0));
  });
  d.io.run();
  if (d.main_lane.thread.joinable()) d.main_lane.thread.join();
  d.close_listener();
  KEYMIG_LOG(info, "service", "service_stopped");
  return kExitOk;
}

void Service::request_stop() {
  asio::post(impl_->io, [d = impl_.get()] { d->begin_stop(); });
}

void Service::request_reload() {
  asio::post(impl_->io, [d = impl_.get()] { d->reload(); });
}

std::uint16_t Service::http_port() const noexcept {
  return impl_->http->port();
}

std::string Service::status_json() const {
  return impl_->status();
}

}  // namespace keymig::service
