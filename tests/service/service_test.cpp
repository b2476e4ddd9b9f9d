// The service loop against a real PostgreSQL, with a fake runner standing in for the
// engine: LISTEN/NOTIFY wake-up, claims, results, reload and drain.

#include "keymig/service/service.hpp"

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

using namespace keymig::service;
using namespace std::chrono;
using json = nlohmann::json;

namespace {

std::string shell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  ::pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// A database of our own in the test cluster; empty when there is no cluster.
std::string test_database() {
  const char* dsn = std::getenv("KEYMIG_TEST_DSN");
  if (!dsn || !*dsn) return {};
  return shell(std::string(KEYMIG_SOURCE_DIR) + "/scripts/pg newdb h5_service_unit 2>/dev/null");
}

std::string quote_shell(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string psql(const std::string& dsn, const std::string& sql) {
  return shell("psql " + quote_shell(dsn) + " -v ON_ERROR_STOP=1 -Atq -c " + quote_shell(sql) +
               " 2>&1");
}

// Inserts a request and notifies, as the application does; returns the request id.
std::string enqueue(const std::string& dsn, const std::string& insert) {
  return shell("psql " + quote_shell(dsn) + " -v ON_ERROR_STOP=1 -Atq -c " +
               quote_shell(insert + " RETURNING id") + " -c 'NOTIFY keymig_requests' 2>&1");
}

std::string http_get(std::uint16_t port, const std::string& path) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return {};
  asio::write(socket, asio::buffer("GET " + path + " HTTP/1.1\r\n\r\n"), ec);
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

std::shared_ptr<const Settings> make_settings(const std::string& dsn) {
  auto s = std::make_shared<Settings>();
  s->dsn = dsn;
  s->keys = std::make_shared<const keymig::crypto::KeyRing>(keymig::crypto::Key::generate(),
                                                            std::vector<keymig::crypto::Key>{});
  s->fingerprints = {s->keys->fingerprint(0)};
  return s;
}

struct FakeRunner {
  std::mutex mu;
  std::vector<Job> jobs;
  milliseconds duration{0};
  Runner runner() {
    return [this](const Job& job, const Settings&, std::atomic<bool>& stop,
                  keymig::metrics::Metrics& metrics) {
      {
        std::lock_guard<std::mutex> lock(mu);
        jobs.push_back(job);
      }
      auto end = steady_clock::now() + duration;
      while (steady_clock::now() < end && !stop) std::this_thread::sleep_for(milliseconds(5));
      RunOutcome out;
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
};

}  // namespace

TEST_CASE("the service claims NOTIFY'd requests at once and writes their results",
          "[service][db]") {
  std::string dsn = test_database();
  if (dsn.empty()) {
    WARN("KEYMIG_TEST_DSN not set: database test skipped");
    return;
  }
  FakeRunner fake;
  keymig::metrics::Metrics metrics;
  int loads = 0;
  bool fail_next_load = false;
  ServiceOptions options;
  options.metrics_listen = "127.0.0.1:0";
  options.handle_signals = false;
  options.fallback_poll = seconds(60);  // so only NOTIFY (or connect) can wake it
  options.instance = "unit-test";
  Service service(
      [&] {
        ++loads;
        if (fail_next_load) throw keymig::UsageError("values.yaml:3: secretStore.activeKey: bad");
        return make_settings(dsn);
      },
      fake.runner(), metrics, options);
  int exit_code = -1;
  std::thread loop([&] { exit_code = service.run(); });
  // A failed REQUIRE unwinds through here: stop the loop so the thread can be joined.
  struct Joiner {
    Service& service;
    std::thread& loop;
    ~Joiner() {
      if (loop.joinable()) {
        service.request_stop();
        loop.join();
      }
    }
  } joiner{service, loop};
  auto port = service.http_port();
  REQUIRE(wait_for([&] { return http_get(port, "/readyz").find("200 OK") != std::string::npos; },
                   seconds(10)));
  // ensure_schema ran: the queue exists.
  REQUIRE(wait_for(
      [&] { return psql(dsn, "SELECT to_regclass('keymig.requests') IS NOT NULL") == "t"; },
      seconds(10)));

  SECTION("a migrate request is claimed within a second and done") {
    auto start = steady_clock::now();
    std::string id = enqueue(dsn,
                             "INSERT INTO keymig.requests(kind, params) VALUES ('migrate', "
                             "'{\"ids\": [1, 2]}')");
    REQUIRE(wait_for(
        [&] { return psql(dsn, "SELECT state FROM keymig.requests WHERE id = " + id) == "done"; },
        seconds(5)));
    double claim_ms = std::stod(psql(dsn,
                                     "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                                     "FROM keymig.requests WHERE id = " +
                                         id));
    WARN("NOTIFY-to-claim latency "
         << claim_ms << " ms; round trip to done "
         << duration_cast<milliseconds>(steady_clock::now() - start).count() << " ms");
    CHECK(claim_ms < 1000);
    auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
    CHECK(result["succeeded"] == true);
    CHECK(result["run_id"] == "fake-run");
    CHECK(result["claimed_by"] == "unit-test");
    REQUIRE(fake.count() == 1);
    CHECK(fake.jobs[0].selection.ids == std::vector<std::string>{"1", "2"});
    auto status = json::parse(service.status_json());
    CHECK(status["last"]["migrate"]["succeeded"] == true);
    CHECK(status["requests"]["done"] == 1);
    CHECK(http_get(port, "/metrics").find("keymig_rows_total") != std::string::npos);
  }

  SECTION("a reset_mfa request without a selection fails with the reason, runner untouched") {
    std::string id = enqueue(dsn, "INSERT INTO keymig.requests(kind) VALUES ('reset_mfa')");
    REQUIRE(wait_for(
        [&] { return psql(dsn, "SELECT state FROM keymig.requests WHERE id = " + id) == "failed"; },
        seconds(5)));
    auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
    CHECK(result["error"].get<std::string>().find("never resets everyone") != std::string::npos);
    CHECK(result["exit_code"] == 2);
    CHECK(fake.count() == 0);
  }

  SECTION("a bad config on reload is refused and the old one stays") {
    fail_next_load = true;
    service.request_reload();
    REQUIRE(wait_for(
        [&] { return json::parse(service.status_json())["config"].contains("last_reload_error"); },
        seconds(5)));
    auto status = json::parse(service.status_json());
    CHECK(status["config"]["generation"] == 1);
    fail_next_load = false;
    service.request_reload();
    REQUIRE(
        wait_for([&] { return json::parse(service.status_json())["config"]["generation"] == 2; },
                 seconds(5)));
    CHECK(http_get(port, "/readyz").find("200 OK") != std::string::npos);
  }

  SECTION("stop during a run drains it and puts the request back in the queue") {
    fake.duration = seconds(30);
    std::string id = enqueue(dsn, "INSERT INTO keymig.requests(kind) VALUES ('migrate')");
    REQUIRE(wait_for([&] { return fake.count() == 1; }, seconds(5)));
    CHECK(json::parse(service.status_json())["current_run"]["kind"] == "migrate");
    auto stop_at = steady_clock::now();
    service.request_stop();
    loop.join();
    CHECK(exit_code == 0);
    CHECK(steady_clock::now() - stop_at < seconds(5));
    CHECK(psql(dsn, "SELECT state FROM keymig.requests WHERE id = " + id) == "queued");
    auto result = json::parse(psql(dsn, "SELECT result FROM keymig.requests WHERE id = " + id));
    CHECK(result["interrupted"] == true);
    return;
  }

  service.request_stop();
  loop.join();
  CHECK(exit_code == 0);
}
