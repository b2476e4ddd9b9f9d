#pragma once

// service internals: the state of one Service and the methods that work on it, split by
// role across listener.cpp (LISTEN on the event loop), scheduler.cpp (timers),
// worker.cpp (the worker lanes' threads), status.cpp (HTTP) and service.cpp (lifecycle).
// Each member notes the thread that owns it.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "keymig/db/connection.hpp"
#include "keymig/db/listener.hpp"
#include "keymig/db/lock.hpp"
#include "keymig/db/requests.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/engine/run_control.hpp"
#include "keymig/service/service.hpp"
#include "keymig/text.hpp"

namespace keymig::service {

namespace asio = boost::asio;
using json = nlohmann::json;
using http::HttpRequest;
using http::HttpResponse;
using http::HttpServer;
using http::metrics_handler;

inline constexpr const char* kChannel = "keymig_requests";

struct Service::Impl {
  Impl(SettingsLoader l, Runner r, metrics::Metrics& m, ServiceOptions o)
      : loader(std::move(l)), runner(std::move(r)), metrics(m), options(std::move(o)) {}

  // --- fixed ---
  SettingsLoader loader;
  Runner runner;
  metrics::Metrics& metrics;
  ServiceOptions options;
  std::string instance;
  // Pause and retune: outlives every run (a pause holds the next one too). Thread-safe.
  std::shared_ptr<engine::RunControl> control;
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();

  // --- io thread ---
  asio::io_context io;
  asio::signal_set signals{io};
  std::unique_ptr<HttpServer> http;
  db::ListenSession listen{kChannel, "keymig-serve-listen"};
  asio::posix::stream_descriptor listen_socket{io};  // our dup() of libpq's socket
  asio::steady_timer reconnect_timer{io};
  asio::steady_timer connect_deadline{io};
  int reconnect_attempt = 0;
  int listen_generation = 0;  // bumped by close_listener: stale callbacks see a new value
  bool listen_up = false;     // connected and LISTENing
  std::string listen_dsn;     // the DSN the listener is connected with
  asio::steady_timer poll_timer{io};
  asio::steady_timer busy_timer{io};
  asio::steady_timer every_timer{io};
  asio::steady_timer at_timer{io};
  asio::steady_timer journal_timer{io};
  // When the every timer fires next, on the timer's clock and on the wall clock (/status).
  std::optional<
      std::pair<std::chrono::steady_clock::time_point, std::chrono::system_clock::time_point>>
      every_due;
  bool stop_begun = false;
  bool finished = false;

  // --- settings: swapped on the io thread, read anywhere ---
  mutable std::mutex settings_mu;
  std::shared_ptr<const Settings> settings;
  int generation = 0;
  std::chrono::system_clock::time_point loaded_at;
  std::string last_reload_error;

  // --- worker lanes (worker.cpp): each one thread, which owns the lane's session ---
  struct Lane {
    Lane(const char* n, bool s) : name(n), selected(s) {}
    const char* name;  // "main", "selected": in logs and /status
    bool selected;     // takes only selected-user requests, and runs them beside main
    std::thread thread;
    bool drain_wanted = false;             // under mu
    std::unique_ptr<db::Connection> conn;  // stable while a TargetLock refers to it
    std::string dsn;
    bool named = false;  // application_name set on the current session
    bool table_missing_logged = false;
    json current = nullptr;  // under status_mu: the job it runs
  };

  // --- worker hand-off ---
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool run_wanted = false;      // the main lane's
  bool journal_wanted = false;  // the main lane's
  std::atomic<bool> stop_flag{false};
  Lane main_lane{"main", false};
  Lane selected_lane{"selected", true};

  // --- status, shared ---
  std::atomic<bool> db_up{false};  // listen_up, and the schema exists for the listener's DSN
  std::string schema_ok_dsn;       // under status_mu: ensure_schema() done for this DSN
  mutable std::mutex status_mu;
  json last = json::object();
  std::int64_t requests_done = 0;
  std::int64_t requests_failed = 0;
  std::int64_t requests_requeued = 0;
  std::optional<std::chrono::system_clock::time_point> next_scheduled;

  [[nodiscard]] std::shared_ptr<const Settings> current_settings() const {
    std::lock_guard<std::mutex> lock(settings_mu);
    return settings;
  }

  // service.cpp: lifecycle (io thread)
  void await_signal();
  void begin_stop();
  void finish_stop();
  void reload();

  // listener.cpp (io thread)
  void connect_listener();
  void close_listener();
  void begin_attempt(db::ListenStep first);
  void advance(db::ListenStep step);
  void await_socket(bool readable, std::function<void()> next);
  void connect_failed(const std::string& why);
  void on_listening();
  void await_readable();
  void on_readable();
  void listener_lost(const std::string& why);
  void schedule_reconnect();
  [[nodiscard]] bool schema_ok_for(const std::string& dsn) const;
  void update_ready();

  // scheduler.cpp (io thread; want_* from any thread)
  void arm_poll();
  void retry_drain_later();
  // at_start: an `every` schedule runs at once; a reload keeps the time already due.
  void arm_schedule(bool at_start);
  void arm_every(std::chrono::milliseconds delay, std::chrono::seconds every, int gen);
  void arm_at(int minute_of_day, int gen);
  void want_drain();
  void want_run(const char* why);
  void arm_journal(std::chrono::milliseconds delay);
  void journal_round();  // main lane thread

  // worker.cpp (each lane's thread)
  struct TargetGuard {
    bool busy = false;                  // another keymig serve holds a target's table
    std::vector<db::TargetLock> locks;  // one per configured table that exists
  };
  void lane_main(Lane& lane);
  template <typename Work>
  auto on_worker_session(Lane& lane, const char* what, Work&& work, bool while_stopping = false);
  TargetGuard lock_target(Lane& lane, const Settings& s);
  static std::vector<std::string> target_tables(const Settings& s);  // distinct, config order
  db::Connection& work(Lane& lane, const Settings& s);
  [[nodiscard]] db::RetryHook retry_hook(Lane& lane, const char* what, bool while_stopping);
  void scheduled_run();  // main lane
  void drain_requests(Lane& lane);
  void table_missing(Lane& lane);
  // Returns where the request went.
  db::RequestEnd process(Lane& lane, const db::ClaimedRequest& claimed,
                         std::shared_ptr<const Settings> s);
  void write_result(Lane& lane, std::int64_t id, db::RequestEnd end, const std::string& result);
  // database_lost: set when the job was cut short by a lost or unavailable database.
  RunOutcome execute(Lane& lane, const Job& job, const std::shared_ptr<const Settings>& s,
                     bool* database_lost = nullptr);

  // status.cpp (io thread; status() from any thread)
  [[nodiscard]] HttpResponse handle(const HttpRequest& request);
  // control.cpp (io thread; control_json() from any thread)
  [[nodiscard]] HttpResponse handle_control(const HttpRequest& request);
  [[nodiscard]] json control_json() const;
  [[nodiscard]] std::string status() const;
  [[nodiscard]] bool current_is_null() const;
  [[nodiscard]] static json result_json(const RunOutcome& out);
};

}  // namespace keymig::service
