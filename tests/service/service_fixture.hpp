#pragma once

// Shared by the service tests: a Service running its loop on a thread against a database
// of its own in the test cluster, with a fake runner standing in for the engine, and the
// ways the application talks to it (psql, NOTIFY, HTTP).

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "keymig/metrics/metrics.hpp"
#include "keymig/service/service.hpp"

namespace keymig::testing {

using namespace std::chrono;
using json = nlohmann::json;

inline std::string shell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  ::pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// A fresh database `name` in the test cluster; empty when there is no cluster.
inline std::string test_database(const std::string& name) {
  const char* dsn = std::getenv("KEYMIG_TEST_DSN");
  if (!dsn || !*dsn) return {};
  return shell(std::string(KEYMIG_SOURCE_DIR) + "/scripts/pg newdb " + name + " 2>/dev/null");
}

inline std::string quote_shell(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

inline std::string psql(const std::string& dsn, const std::string& sql) {
  return shell("psql " + quote_shell(dsn) + " -v ON_ERROR_STOP=1 -Atq -c " + quote_shell(sql) +
               " 2>&1");
}

// Inserts a request and notifies, as the application does; returns the request id. The
// INSERT names the target ("users" for a RunningService with the default settings).
inline std::string enqueue(const std::string& dsn, const std::string& insert) {
  return shell("psql " + quote_shell(dsn) + " -v ON_ERROR_STOP=1 -Atq -c " +
               quote_shell(insert + " RETURNING id") + " -c 'NOTIFY keymig_requests' 2>&1");
}

inline std::string request_state(const std::string& dsn, const std::string& id) {
  return psql(dsn, "SELECT state FROM keymig.requests WHERE id = " + id);
}

inline std::string http_get(std::uint16_t port, const std::string& path) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  // Connection: close, or the read to EOF waits out the keep-alive idle timeout (15 s).
  asio::write(socket, asio::buffer("GET " + path + " HTTP/1.1\r\nConnection: close\r\n\r\n"), ec);
  std::string out;
  asio::read(socket, asio::dynamic_buffer(out), ec);
  return out;
}

template <typename Pred>
bool wait_for(Pred pred, milliseconds limit) {
  auto end = steady_clock::now() + limit;
  while (steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return pred();
}

inline std::shared_ptr<service::Settings> make_settings(const std::string& dsn) {
  auto s = std::make_shared<service::Settings>();
  s->dsn = dsn;
  s->keys =
      std::make_shared<const crypto::KeyRing>(crypto::Key::generate(), std::vector<crypto::Key>{});
  s->fingerprints = {s->keys->fingerprint(0)};
  return s;
}

struct FakeRunner {
  std::mutex mu;
  std::vector<service::Job> jobs;
  milliseconds duration{0};
  // Called with the 0-based number of the call before the job "runs"; may throw what an
  // engine run would.
  std::function<void(std::size_t)> on_call;
  service::Runner runner() {
    return [this](const service::Job& job, const service::Settings&, std::atomic<bool>& stop,
                  metrics::Metrics& metrics, const service::ProgressSink&) {
      std::size_t call = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        call = jobs.size();
        jobs.push_back(job);
      }
      if (on_call) on_call(call);
      auto end = steady_clock::now() + duration;
      while (steady_clock::now() < end && !stop) std::this_thread::sleep_for(milliseconds(5));
      service::RunOutcome out;
      out.interrupted = stop.load();
      out.ok = !out.interrupted;
      metrics.add_rows("users", "rotated", 3);
      out.summary_json = json{{"run_id", "fake-run"}, {"rows_scanned", 3}}.dump();
      return out;
    };
  }
  std::size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return jobs.size();
  }
  std::vector<service::Job> snapshot() {
    std::lock_guard<std::mutex> lock(mu);
    return jobs;
  }
};

/// A Service on its own loop thread, ready (LISTENing, schema made) once constructed.
/// `settings` is what the loader returns; fail_next_load makes it throw instead.
class RunningService {
 public:
  explicit RunningService(std::string dsn, std::function<void(service::Settings&)> adjust = {})
      : dsn_(std::move(dsn)), adjust_(std::move(adjust)) {
    options.metrics_listen = "127.0.0.1:0";
    options.handle_signals = false;
    options.fallback_poll = seconds(60);  // so only NOTIFY (or connect) can wake it
    options.instance = "unit-test";
  }

  /// Starts the loop and waits until /readyz answers 200 and keymig.requests exists.
  /// The default target exists, so that requests naming it are this service's.
  void start() {
    psql(dsn_, "CREATE TABLE IF NOT EXISTS public.users(id int PRIMARY KEY)");
    service_ = std::make_unique<service::Service>(
        [this] {
          ++loads;
          if (fail_next_load) throw UsageError("values.yaml:3: secretStore.activeKey: bad");
          auto s = make_settings(dsn_);
          if (adjust_) adjust_(*s);
          return std::shared_ptr<const service::Settings>(std::move(s));
        },
        fake.runner(), metrics, options);
    loop_ = std::thread([this] { exit_code = service_->run(); });
    REQUIRE(
        wait_for([&] { return http_get(port(), "/readyz").find("200 OK") != std::string::npos; },
                 seconds(10)));
    // ensure_schema ran: the queue exists.
    REQUIRE(wait_for(
        [&] { return psql(dsn_, "SELECT to_regclass('keymig.requests') IS NOT NULL") == "t"; },
        seconds(10)));
  }

  /// Stops the loop (a drain) and joins it.
  void stop() {
    if (!loop_.joinable()) return;
    service_->request_stop();
    loop_.join();
  }

  // A failed REQUIRE unwinds through here: stop the loop so the thread can be joined.
  ~RunningService() { stop(); }

  service::Service& service() { return *service_; }
  std::uint16_t port() const { return service_->http_port(); }
  json status() const { return json::parse(service_->status_json()); }

  FakeRunner fake;
  metrics::Metrics metrics;
  service::ServiceOptions options;
  std::atomic<int> loads{0};
  std::atomic<bool> fail_next_load{false};
  int exit_code = -1;

 private:
  std::string dsn_;
  std::function<void(service::Settings&)> adjust_;
  std::unique_ptr<service::Service> service_;
  std::thread loop_;
};

}  // namespace keymig::testing

#define KEYMIG_SERVICE_DB(name)                                   \
  const std::string dsn = ::keymig::testing::test_database(name); \
  if (dsn.empty()) {                                              \
    WARN("KEYMIG_TEST_DSN not set: database test skipped");       \
    return;                                                       \
  }
