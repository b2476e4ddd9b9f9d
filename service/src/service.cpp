#include "keymig/service/service.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <string_view>
#include <thread>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::service {

namespace asio = boost::asio;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::system_clock;

namespace {

constexpr const char* kChannel = "keymig_requests";
// Session-level advisory lock key per target: held by the worker connection for the whole
// run, so that two `serve` processes never run on one target at once. A lost connection
// releases it, which is the behaviour we want from a crashed process.
constexpr const char* kLockPrefix = "keymig serve run: ";

double unix_seconds(system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::string default_instance() {
  std::string name = host_name();
  if (name.size() > 40) name.resize(40);
  return name + ":" + std::to_string(::getpid()) + ":" + random_hex(6);
}

// libpq messages end with a newline and may span lines; logs want one line.
std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

struct Claimed {
  std::int64_t id = 0;
  std::string kind;
  std::string params;
  double wait_ms = 0;  // created_at -> claim, as the database clock sees it
};

}  // namespace

struct Service::Impl {
  Impl(SettingsLoader l, Runner r, metrics::Metrics& m, ServiceOptions o)
      : loader(std::move(l)), runner(std::move(r)), metrics(m), options(std::move(o)) {}

  // --- fixed ---
  SettingsLoader loader;
  Runner runner;
  metrics::Metrics& metrics;
  ServiceOptions options;
  std::string instance;
  system_clock::time_point started_at = system_clock::now();

  // --- io thread ---
  asio::io_context io;
  asio::signal_set signals{io};
  std::unique_ptr<HttpServer> http;
  PGconn* listen_conn = nullptr;
  asio::posix::stream_descriptor listen_socket{io};  // our dup() of libpq's socket
  asio::steady_timer reconnect_timer{io};
  asio::steady_timer connect_deadline{io};
  int reconnect_attempt = 0;
  int listen_generation = 0;  // bumped by close_listener: stale callbacks see a new value
  using ConnParams = std::vector<std::pair<std::string, std::string>>;  // keyword, value
  std::vector<ConnParams> host_attempts;  // one connect per host of a multi-host DSN
  std::size_t host_attempt = 0;
  bool listen_up = false;  // connected and LISTENing
  asio::steady_timer poll_timer{io};
  asio::steady_timer busy_timer{io};
  asio::steady_timer every_timer{io};
  asio::steady_timer at_timer{io};
  bool stop_begun = false;
  bool finished = false;
  std::string listen_dsn;  // the DSN the listener is connected with

  // --- settings: swapped on the io thread, read anywhere ---
  mutable std::mutex settings_mu;
  std::shared_ptr<const Settings> settings;
  int generation = 0;
  system_clock::time_point loaded_at;
  std::string last_reload_error;

  // --- worker hand-off ---
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool drain_wanted = false;
  bool run_wanted = false;
  std::atomic<bool> stop_flag{false};
  std::thread worker;

  // --- worker thread only ---
  std::unique_ptr<pqxx::connection> work_conn;
  std::string work_dsn;
  bool table_missing_logged = false;

  // --- status, shared ---
  std::atomic<bool> db_up{false};  // listen_up, and the schema exists for the listener's DSN
  std::string schema_ok_dsn;       // under status_mu: ensure_schema() done for this DSN
  mutable std::mutex status_mu;
  json current = nullptr;
  json last = json::object();
  std::int64_t requests_done = 0;
  std::int64_t requests_failed = 0;
  std::int64_t requests_requeued = 0;
  std::optional<system_clock::time_point> next_scheduled;

  std::shared_ptr<const Settings> current_settings() const {
    std::lock_guard<std::mutex> lock(settings_mu);
    return settings;
  }

  // ---------------------------------------------------------------- event loop
  void await_signal() {
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

  void begin_stop() {
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
    reconnect_timer.cancel();
  }

  void finish_stop() {
    if (finished) return;
    finished = true;
    if (http) http->stop();
    signals.cancel();
    close_listener();
    reconnect_timer.cancel();
  }

  void reload() {
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
    KEYMIG_LOG(
        info, "service", "config_reloaded", {"generation", generation},
        {"active_key", fresh->fingerprints.empty() ? std::string() : fresh->fingerprints[0]},
        {"rolling_keys", static_cast<std::int64_t>(
                             fresh->fingerprints.empty() ? 0 : fresh->fingerprints.size() - 1)});
    arm_schedule();
    if (dsn_changed) connect_listener();
  }

  // ---------------------------------------------------------------- LISTEN
  void close_listener() {
    ++listen_generation;
    connect_deadline.cancel();
    boost::system::error_code ignored;
    if (listen_socket.is_open()) {
      listen_socket.cancel(ignored);
      listen_socket.close(ignored);
    }
    if (listen_conn) {
      PQfinish(listen_conn);
      listen_conn = nullptr;
    }
    listen_up = false;
    db_up = false;
  }

  void listener_lost(const std::string& why) {
    KEYMIG_LOG(warn, "service", "listen_connection_lost", {"error", why});
    close_listener();
    schedule_reconnect();
  }

  void schedule_reconnect() {
    if (stop_begun) return;
    auto delay =
        db::backoff_delay(reconnect_attempt++, options.reconnect_min, options.reconnect_max);
    reconnect_timer.expires_after(delay);
    reconnect_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) connect_listener();
    });
  }

  // The connect, the LISTEN and every wait in between run on the event loop without
  // blocking it: a database that drops packets (a failover, a partition) used to hold the
  // loop for connect_timeout at every attempt, and with it /metrics, /healthz and SIGTERM,
  // just when the operator is watching. PQconnectPoll does not apply connect_timeout
  // itself, so the deadline timer does.
  void connect_listener() {
    if (stop_begun) return;
    close_listener();
    listen_dsn = current_settings()->dsn;
    host_attempts = split_hosts(listen_dsn);
    host_attempt = 0;
    start_connect();
  }

  void start_connect() {
    if (host_attempts.empty()) {
      listen_conn = PQconnectStart(listen_dsn.c_str());
    } else {
      std::vector<const char*> keywords, values;
      for (const auto& [k, v] : host_attempts[host_attempt]) {
        keywords.push_back(k.c_str());
        values.push_back(v.c_str());
      }
      keywords.push_back(nullptr);
      values.push_back(nullptr);
      listen_conn = PQconnectStartParams(keywords.data(), values.data(), 0);
    }
    if (!listen_conn || PQstatus(listen_conn) == CONNECTION_BAD) {
      connect_failed(listen_conn ? one_line(PQerrorMessage(listen_conn)) : "out of memory");
      return;
    }
    const int generation = listen_generation;
    connect_deadline.expires_after(connect_timeout(listen_conn));
    connect_deadline.async_wait([this, generation](const boost::system::error_code& ec) {
      if (ec || generation != listen_generation || listen_up) return;
      connect_failed("no answer within the connect timeout");
    });
    // libpq: after PQconnectStart, wait as if PQconnectPoll had returned WRITING.
    await_socket(PGRES_POLLING_WRITING, [this] { poll_connect(); });
  }

  // One connect per host of a multi-host DSN (host=a,b, as HA setups list them), in
  // order. PQconnectPoll applies no connect_timeout, so within one connect a silent first
  // host would use up the deadline and the next never be tried; libpq's blocking connect
  // gave each host connect_timeout, and so does this. Empty for a single host: the DSN is
  // used as it is (a DSN libpq cannot parse is reported by that connect).
  static std::vector<ConnParams> split_hosts(const std::string& dsn) {
    char* error = nullptr;
    PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
    if (error) PQfreemem(error);
    if (!options) return {};
    ConnParams common;
    std::string host, hostaddr, port;
    for (auto* o = options; o->keyword; ++o) {
      if (!o->val) continue;
      const std::string_view k = o->keyword;
      if (k == "host")
        host = o->val;
      else if (k == "hostaddr")
        hostaddr = o->val;
      else if (k == "port")
        port = o->val;
      else
        common.emplace_back(o->keyword, o->val);
    }
    PQconninfoFree(options);
    auto from_env = [](std::string& value, const char* name) {
      const char* v = std::getenv(name);
      if (value.empty() && v) value = v;
    };
    from_env(host, "PGHOST");
    from_env(hostaddr, "PGHOSTADDR");
    from_env(port, "PGPORT");
    auto split = [](const std::string& list) {
      return list.empty() ? std::vector<std::string>() : engine::split_list(list);
    };
    const auto hosts = split(host), addrs = split(hostaddr), ports = split(port);
    const std::size_t n = std::max(hosts.size(), addrs.size());
    if (n <= 1) return {};
    std::vector<ConnParams> attempts;
    for (std::size_t i = 0; i < n; ++i) {
      ConnParams p = common;
      if (i < hosts.size()) p.emplace_back("host", hosts[i]);
      if (i < addrs.size()) p.emplace_back("hostaddr", addrs[i]);
      if (ports.size() == 1)
        p.emplace_back("port", ports[0]);
      else if (i < ports.size())
        p.emplace_back("port", ports[i]);
      attempts.push_back(std::move(p));
    }
    return attempts;
  }

  static std::chrono::seconds connect_timeout(PGconn* conn) {
    // connect_timeout from the DSN or PGCONNECT_TIMEOUT (serve sets 10 s when unset).
    long seconds = 0;
    if (PQconninfoOption* info = PQconninfo(conn)) {
      for (auto* o = info; o->keyword; ++o)
        if (std::string_view(o->keyword) == "connect_timeout" && o->val && *o->val)
          seconds = std::strtol(o->val, nullptr, 10);
      PQconninfoFree(info);
    }
    // libpq treats 0 as "wait forever"; a connect that never ends would never be retried.
    return std::chrono::seconds(seconds >= 2 ? seconds : (seconds > 0 ? 2 : 10));
  }

  // Waits until libpq's current socket is readable or writable, then runs `next`. libpq
  // may open a new socket between polls (another address, another host), so each wait
  // takes a fresh dup() of whatever PQsocket is now.
  template <typename Next>
  void await_socket(PostgresPollingStatusType want, Next next) {
    boost::system::error_code ignored;
    if (listen_socket.is_open()) listen_socket.close(ignored);
    const int fd = PQsocket(listen_conn) >= 0 ? ::dup(PQsocket(listen_conn)) : -1;
    if (fd < 0) {
      connect_failed("the connection has no socket");
      return;
    }
    listen_socket.assign(fd);
    const int generation = listen_generation;
    listen_socket.async_wait(
        want == PGRES_POLLING_READING ? asio::posix::stream_descriptor::wait_read
                                      : asio::posix::stream_descriptor::wait_write,
        [this, generation, next](const boost::system::error_code& ec) {
          if (ec == asio::error::operation_aborted || generation != listen_generation) return;
          if (ec) {
            connect_failed(ec.message());
            return;
          }
          next();
        });
  }

  void poll_connect() {
    switch (PQconnectPoll(listen_conn)) {
      case PGRES_POLLING_OK:
        send_listen();
        return;
      case PGRES_POLLING_READING:
        await_socket(PGRES_POLLING_READING, [this] { poll_connect(); });
        return;
      case PGRES_POLLING_WRITING:
        await_socket(PGRES_POLLING_WRITING, [this] { poll_connect(); });
        return;
      default:
        connect_failed(one_line(PQerrorMessage(listen_conn)));
    }
  }

  void send_listen() {
    if (!PQsendQuery(listen_conn,
                     "SET application_name = 'keymig-serve-listen'; LISTEN keymig_requests")) {
      connect_failed(one_line(PQerrorMessage(listen_conn)));
      return;
    }
    await_socket(PGRES_POLLING_READING, [this] { read_listen_reply(); });
  }

  void read_listen_reply() {
    if (!PQconsumeInput(listen_conn)) {
      connect_failed(one_line(PQerrorMessage(listen_conn)));
      return;
    }
    if (PQisBusy(listen_conn)) {
      await_socket(PGRES_POLLING_READING, [this] { read_listen_reply(); });
      return;
    }
    bool ok = true;
    std::string why;
    while (PGresult* res = PQgetResult(listen_conn)) {
      if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        ok = false;
        why = one_line(PQresultErrorMessage(res));
      }
      PQclear(res);
    }
    if (!ok) {
      connect_failed(why);
      return;
    }
    connect_deadline.cancel();
    listen_up = true;
    reconnect_attempt = 0;
    KEYMIG_LOG(info, "service", "listening_for_requests", {"channel", kChannel});
    // Ready once keymig.requests exists too, so that the application can queue requests:
    // the worker creates the schema (ensure_schema) before it drains, which this asks for,
    // along with whatever was queued while we were away (or before we started).
    update_ready();
    want_drain();
    await_readable();
  }

  void connect_failed(const std::string& why) {
    KEYMIG_LOG(warn, "service", "listen_connect_failed", {"error", why},
               {"attempt", reconnect_attempt},
               {"host", host_attempts.empty() ? std::string() : host_label()});
    close_listener();
    if (host_attempt + 1 < host_attempts.size()) {
      ++host_attempt;  // the next host at once; the backoff is for a round of them all
      start_connect();
      return;
    }
    schedule_reconnect();
  }

  std::string host_label() const {
    std::string label;
    for (const auto& [k, v] : host_attempts[host_attempt])
      if (k == "host" || k == "hostaddr" || k == "port")
        label += (label.empty() ? "" : " ") + k + "=" + v;
    return label;
  }

  bool schema_ok_for(const std::string& dsn) const {
    std::lock_guard<std::mutex> lock(status_mu);
    return schema_ok_dsn == dsn;
  }

  void update_ready() { db_up = listen_up && schema_ok_for(listen_dsn); }

  void await_readable() {
    listen_socket.async_wait(asio::posix::stream_descriptor::wait_read,
                             [this](const boost::system::error_code& ec) {
                               if (ec == asio::error::operation_aborted) return;
                               if (ec) {
                                 listener_lost(ec.message());
                                 return;
                               }
                               on_readable();
                             });
  }

  void on_readable() {
    if (!PQconsumeInput(listen_conn)) {
      listener_lost(one_line(PQerrorMessage(listen_conn)));
      return;
    }
    int count = 0;
    while (PGnotify* n = PQnotifies(listen_conn)) {
      ++count;
      PQfreemem(n);
    }
    if (PQstatus(listen_conn) == CONNECTION_BAD) {
      listener_lost(one_line(PQerrorMessage(listen_conn)));
      return;
    }
    if (count > 0) {
      KEYMIG_LOG(debug, "service", "notified", {"notifications", count});
      want_drain();
    }
    await_readable();
  }

  // ---------------------------------------------------------------- timers
  void arm_poll() {
    poll_timer.expires_after(options.fallback_poll);
    poll_timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      // The fallback for a lost NOTIFY (e.g. sent while we were reconnecting).
      if (listen_up) want_drain();
      arm_poll();
    });
  }

  void retry_drain_later() {
    asio::post(io, [this] {
      if (stop_begun) return;
      busy_timer.expires_after(options.busy_retry);
      busy_timer.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) want_drain();
      });
    });
  }

  void arm_schedule() {
    every_timer.cancel();
    at_timer.cancel();
    auto s = current_settings();
    const auto& schedule = s->config.migration.schedule;
    std::optional<system_clock::time_point> next;
    if (schedule.every) {
      // First run at start: a fresh deployment converges (and fills the metrics) at once.
      arm_every(milliseconds(0), *schedule.every, generation);
      next = system_clock::now();
    }
    if (schedule.at_minute_of_day) {
      auto at = next_daily_run(system_clock::now(), *schedule.at_minute_of_day);
      arm_at(*schedule.at_minute_of_day, generation);
      if (!next || at < *next) next = at;
    }
    std::lock_guard<std::mutex> lock(status_mu);
    next_scheduled = next;
  }

  void arm_every(milliseconds delay, std::chrono::seconds every, int gen) {
    every_timer.expires_after(delay);
    every_timer.async_wait([this, every, gen](const boost::system::error_code& ec) {
      if (ec || gen != generation) return;
      want_run("every");
      {
        std::lock_guard<std::mutex> lock(status_mu);
        next_scheduled = system_clock::now() + every;
      }
      arm_every(std::chrono::duration_cast<milliseconds>(every), every, gen);
    });
  }

  void arm_at(int minute_of_day, int gen) {
    auto now = system_clock::now();
    auto at = next_daily_run(now, minute_of_day);
    at_timer.expires_after(std::chrono::duration_cast<milliseconds>(at - now));
    at_timer.async_wait([this, minute_of_day, gen](const boost::system::error_code& ec) {
      if (ec || gen != generation) return;
      want_run("at");
      arm_at(minute_of_day, gen);
    });
  }

  void want_drain() {
    {
      std::lock_guard<std::mutex> lock(mu);
      drain_wanted = true;
    }
    cv.notify_all();
  }

  void want_run(const char* why) {
    KEYMIG_LOG(info, "service", "scheduled_run_due", {"trigger", why});
    {
      std::lock_guard<std::mutex> lock(mu);
      run_wanted = true;
    }
    cv.notify_all();
  }

  bool current_is_null() const {
    std::lock_guard<std::mutex> lock(status_mu);
    return current.is_null();
  }

  // ---------------------------------------------------------------- worker
  void worker_main() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [this] { return stopping || drain_wanted || run_wanted; });
      if (stopping) break;
      bool run = std::exchange(run_wanted, false);
      bool drain = std::exchange(drain_wanted, false);
      lock.unlock();
      try {
        if (run) scheduled_run();
        if (drain) drain_requests();
      } catch (const pqxx::broken_connection& e) {
        KEYMIG_LOG(warn, "service", "database_unavailable", {"error", one_line(e.what())});
        work_conn.reset();
      } catch (const db::DbError& e) {
        KEYMIG_LOG(warn, "service", "database_unavailable", {"error", one_line(e.what())},
                   {"sqlstate", e.sqlstate()});
        work_conn.reset();
      } catch (const std::exception& e) {
        KEYMIG_LOG(error, "service", "worker_error", {"error", one_line(e.what())});
        work_conn.reset();
      }
      lock.lock();
    }
    lock.unlock();
    work_conn.reset();
    asio::post(io, [this] { finish_stop(); });
  }

  pqxx::connection& work(const Settings& s) {
    if (work_conn && (work_dsn != s.dsn || !work_conn->is_open())) work_conn.reset();
    if (!schema_ok_for(s.dsn)) {
      // keymig.requests must exist before the application can queue anything, so the
      // service creates the schema up front rather than at its first run.
      db::ConnectOptions connect;
      connect.dsn = s.dsn;
      connect.max_retries = 0;
      db::Connection conn(connect);
      db::ensure_schema(conn);
      {
        std::lock_guard<std::mutex> lock(status_mu);
        schema_ok_dsn = s.dsn;
      }
      asio::post(io, [this] { update_ready(); });
    }
    if (!work_conn) {
      work_conn = std::make_unique<pqxx::connection>(s.dsn);
      work_dsn = s.dsn;
      pqxx::nontransaction tx(*work_conn);
      // claimed_by names this connection, so other instances can tell a live claim from
      // the leftovers of a crashed process.
      tx.exec0("SET application_name = " + tx.quote(app_name()));
    }
    return *work_conn;
  }

  std::string app_name() const {
    std::string name = "keymig-serve " + instance;
    if (name.size() > 63) name.resize(63);
    return name;
  }

  bool try_lock(pqxx::connection& c, const Settings& s) {
    pqxx::nontransaction tx(c);
    return tx
        .exec_params1("SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                      kLockPrefix + s.config.migration.target.table)[0]
        .as<bool>();
  }

  void unlock(pqxx::connection& c, const Settings& s) noexcept {
    try {
      pqxx::nontransaction tx(c);
      tx.exec_params1("SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                      kLockPrefix + s.config.migration.target.table);
    } catch (const std::exception& e) {
      // A broken connection released the lock already.
      KEYMIG_LOG(warn, "service", "unlock_failed", {"error", one_line(e.what())});
      work_conn.reset();
    }
  }

  void scheduled_run() {
    auto s = current_settings();
    auto& c = work(*s);
    if (!try_lock(c, *s)) {
      KEYMIG_LOG(info, "service", "scheduled_run_skipped",
                 {"reason", "another keymig serve is running on the target"});
      return;
    }
    Job migrate;
    migrate.kind = JobKind::migrate;
    migrate.source = "schedule";
    RunOutcome out = execute(migrate, s);
    if (!out.interrupted && (out.exit_code == kExitOk || out.exit_code == kExitUndecryptable)) {
      Job verify = migrate;
      verify.kind = JobKind::verify;
      json summary = json::parse(out.summary_json, nullptr, false);
      if (summary.is_object() && summary.contains("run_id") && summary["run_id"].is_string())
        verify.run_id = summary["run_id"].get<std::string>();
      execute(verify, s);
    }
    unlock(c, *s);
  }

  void drain_requests() {
    auto s = current_settings();
    pqxx::connection* c = nullptr;
    try {
      c = &work(*s);
      recover_stale(*c);
    } catch (const pqxx::undefined_table&) {
      table_missing();
      return;
    }
    if (!try_lock(*c, *s)) {
      KEYMIG_LOG(info, "service", "requests_deferred",
                 {"reason", "another keymig serve is running on the target"});
      retry_drain_later();
      return;
    }
    try {
      while (!stop_flag) {
        auto claimed = claim(*c);
        if (!claimed) break;
        process(*c, *claimed, s);
        s = current_settings();  // a SIGHUP between requests applies to the next one
      }
    } catch (const pqxx::undefined_table&) {
      table_missing();
    } catch (...) {
      unlock(*c, *s);
      throw;
    }
    if (work_conn) unlock(*work_conn, *s);
  }

  void table_missing() {
    if (!table_missing_logged)
      KEYMIG_LOG(warn, "service", "requests_table_missing", {"table", "keymig.requests"},
                 {"hint", "run any keymig command once to create the keymig schema"});
    table_missing_logged = true;
  }

  // Requests left `running` by an instance whose connection is gone (crash, kill -9).
  void recover_stale(pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec0(
        "UPDATE keymig.requests SET state = 'queued', claimed_by = NULL, started_at = NULL "
        "WHERE state = 'running' AND claimed_by IS NOT NULL AND 'keymig-serve ' || claimed_by "
        "NOT IN (SELECT application_name FROM pg_stat_activity WHERE application_name LIKE "
        "'keymig-serve %')");
    tx.commit();
    if (r.affected_rows() > 0)
      KEYMIG_LOG(warn, "service", "stale_requests_requeued",
                 {"count", static_cast<std::int64_t>(r.affected_rows())});
  }

  std::optional<Claimed> claim(pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "UPDATE keymig.requests SET state = 'running', claimed_by = $1, "
        "started_at = clock_timestamp() "
        "WHERE id = (SELECT id FROM keymig.requests WHERE state = 'queued' "
        "            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING id, kind, COALESCE(params::text, ''), "
        "          extract(epoch FROM started_at - created_at) * 1000",
        instance);
    tx.commit();
    if (r.empty()) return std::nullopt;
    Claimed out;
    out.id = r[0][0].as<std::int64_t>();
    out.kind = r[0][1].is_null() ? "" : r[0][1].as<std::string>();
    out.params = r[0][2].as<std::string>();
    out.wait_ms = r[0][3].is_null() ? 0.0 : r[0][3].as<double>();
    return out;
  }

  void process(pqxx::connection& c, const Claimed& claimed, std::shared_ptr<const Settings> s) {
    KEYMIG_LOG(info, "service", "request_claimed", {"request_id", claimed.id},
               {"kind", claimed.kind.substr(0, 32)}, {"queued_ms", claimed.wait_ms});
    ParsedRequest parsed = parse_request(claimed.kind, claimed.params);
    RunOutcome out;
    if (!parsed.job) {
      out.exit_code = kExitUsage;
      out.error = parsed.error;
    } else {
      parsed.job->request_id = claimed.id;
      out = execute(*parsed.job, s);
    }
    json result = result_json(out);
    result["claimed_by"] = instance;
    const char* state = out.interrupted ? "queued" : out.ok ? "done" : "failed";
    write_result(c, claimed.id, state, result.dump());
    {
      std::lock_guard<std::mutex> lock(status_mu);
      if (out.interrupted)
        ++requests_requeued;
      else if (out.ok)
        ++requests_done;
      else
        ++requests_failed;
    }
    KEYMIG_LOG(info, "service",
               out.interrupted ? "request_requeued"
               : out.ok        ? "request_done"
                               : "request_failed",
               {"request_id", claimed.id}, {"exit_code", out.exit_code}, {"error", out.error});
  }

  // The outcome must reach the row even across a short database outage; bounded so that
  // shutdown does not hang on a database that is gone for good.
  void write_result(pqxx::connection& first, std::int64_t id, const char* state,
                    const std::string& result) {
    pqxx::connection* c = &first;
    for (int attempt = 0;; ++attempt) {
      try {
        pqxx::work tx(*c);
        if (std::string(state) == "queued")
          tx.exec_params0(
              "UPDATE keymig.requests SET state = 'queued', claimed_by = NULL, "
              "started_at = NULL, result = $2::jsonb WHERE id = $1",
              id, result);
        else
          tx.exec_params0(
              "UPDATE keymig.requests SET state = $2, finished_at = clock_timestamp(), "
              "result = $3::jsonb WHERE id = $1",
              id, state, result);
        tx.commit();
        return;
      } catch (const pqxx::broken_connection& e) {
        if (attempt >= 6) {
          KEYMIG_LOG(error, "service", "request_result_lost", {"request_id", id},
                     {"error", one_line(e.what())});
          throw;
        }
        std::this_thread::sleep_for(
            db::backoff_delay(attempt, milliseconds(250), milliseconds(4000)));
        work_conn.reset();
        try {
          c = &work(*current_settings());
        } catch (const pqxx::broken_connection&) {
        }
      }
    }
  }

  static json result_json(const RunOutcome& out) {
    json result = json::object();
    if (!out.summary_json.empty()) {
      json summary = json::parse(out.summary_json, nullptr, false);
      if (summary.is_object()) result = std::move(summary);
    }
    result["succeeded"] = out.ok;  // not "ok": verify reports an "ok" row count
    result["exit_code"] = out.exit_code;
    if (out.interrupted) result["interrupted"] = true;
    if (!out.error.empty()) result["error"] = out.error;
    return result;
  }

  RunOutcome execute(const Job& job, const std::shared_ptr<const Settings>& s) {
    auto start = system_clock::now();
    const char* kind = job_kind_name(job.kind);
    {
      std::lock_guard<std::mutex> lock(status_mu);
      current = {{"kind", kind},
                 {"source", job.source},
                 {"started_at", iso8601_utc(start)},
                 {"selected_ids", job.selection.ids.size()},
                 {"selected_usernames", job.selection.usernames.size()}};
      if (job.request_id) current["request_id"] = job.request_id;
    }
    metrics.set_run_in_progress(true);
    KEYMIG_LOG(info, "service", "run_started", {"kind", kind}, {"source", job.source},
               {"request_id", job.request_id});
    RunOutcome out;
    try {
      out = runner(job, *s, stop_flag, metrics);
    } catch (const std::exception& e) {
      out = RunOutcome{};
      out.exit_code = dynamic_cast<const keymig::UsageError*>(&e) ? kExitUsage : kExitRuntime;
      out.error = one_line(e.what());
    }
    if (stop_flag && !out.ok && out.error.empty()) out.interrupted = true;
    auto end = system_clock::now();
    metrics.set_run_in_progress(false);
    if (out.ok)
      metrics.set_last_success(kind, unix_seconds(end));
    else if (!out.interrupted)
      metrics.set_last_failure(kind);  // drives the "last run failed" alert
    double seconds = std::chrono::duration<double>(end - start).count();
    KEYMIG_LOG(info, "service", "run_finished", {"kind", kind}, {"source", job.source},
               {"ok", out.ok}, {"exit_code", out.exit_code}, {"interrupted", out.interrupted},
               {"seconds", seconds});
    json record = result_json(out);
    record["source"] = job.source;
    if (job.request_id) record["request_id"] = job.request_id;
    record["started_at"] = iso8601_utc(start);
    record["finished_at"] = iso8601_utc(end);
    record["duration_seconds"] = seconds;
    std::lock_guard<std::mutex> lock(status_mu);
    current = nullptr;
    last[kind] = std::move(record);
    return out;
  }

  // ---------------------------------------------------------------- HTTP
  HttpResponse handle(const HttpRequest& request) {
    if (request.path == "/metrics")
      return {200, std::string(kPrometheusContentType), metrics.serialize()};
    if (request.path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (request.path == "/readyz") {
      if (!db_up) return {503, "text/plain; charset=utf-8", "not ready: database unreachable\n"};
      return {200, "text/plain; charset=utf-8", "ready\n"};
    }
    if (request.path == "/status") return {200, "application/json", status() + "\n"};
    if (request.path == "/")
      return {200, "text/plain; charset=utf-8",
              "keymig serve: /metrics /healthz /readyz /status\n"};
    return {404, "text/plain; charset=utf-8", "not found\n"};
  }

  std::string status() const {
    json doc;
    {
      std::lock_guard<std::mutex> lock(settings_mu);
      const auto& m = settings->config.migration;
      json schedule = json::object();
      if (m.schedule.every) schedule["every_seconds"] = m.schedule.every->count();
      if (m.schedule.at_minute_of_day) {
        char at[16];
        std::snprintf(at, sizeof at, "%02d:%02d", *m.schedule.at_minute_of_day / 60,
                      *m.schedule.at_minute_of_day % 60);
        schedule["at_utc"] = at;
      }
      doc["config"] = {{"generation", generation},
                       {"loaded_at", iso8601_utc(loaded_at)},
                       {"files", settings->config.files},
                       {"target", m.target.table},
                       {"key_fingerprints", settings->fingerprints}};
      if (!last_reload_error.empty()) doc["config"]["last_reload_error"] = last_reload_error;
      doc["schedule"] = schedule;
    }
    std::lock_guard<std::mutex> lock(status_mu);
    doc["instance"] = instance;
    doc["started_at"] = iso8601_utc(started_at);
    doc["ready"] = db_up.load();
    doc["database"] = db_up ? "up" : "down";
    doc["draining"] = stop_flag.load();
    doc["current_run"] = current;
    doc["last"] = last;
    if (next_scheduled) doc["schedule"]["next_run_at"] = iso8601_utc(*next_scheduled);
    doc["requests"] = {
        {"done", requests_done}, {"failed", requests_failed}, {"requeued", requests_requeued}};
    return doc.dump();
  }
};

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
  d.http = std::make_unique<HttpServer>(d.io, listen,
                                        [&d](const HttpRequest& r) { return d.handle(r); });
}

Service::~Service() {
  if (impl_->worker.joinable()) {
    impl_->begin_stop();
    impl_->worker.join();
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
             {"target", d.current_settings()->config.migration.target.table});
  d.worker = std::thread([&d] { d.worker_main(); });
  asio::post(d.io, [&d] {
    d.connect_listener();
    d.arm_poll();
    d.arm_schedule();
  });
  d.io.run();
  if (d.worker.joinable()) d.worker.join();
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
