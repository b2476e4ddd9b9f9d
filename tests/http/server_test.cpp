#include "keymig/http/server.hpp"

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "keymig/metrics/metrics.hpp"

using namespace keymig::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

struct Response {
  std::string head;  // status line and headers
  std::string body;
  [[nodiscard]] int status() const { return head.size() > 12 ? std::stoi(head.substr(9, 3)) : 0; }
  [[nodiscard]] bool has(const std::string& header_line) const {
    return head.find("\r\n" + header_line + "\r\n") != std::string::npos;
  }
};

// One client connection, read response by response (Content-Length framing), so that
// keep-alive and pipelining can be seen.
class Client {
 public:
  explicit Client(std::uint16_t port) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  void send(const std::string& raw) { asio::write(socket_, asio::buffer(raw)); }

  // An empty head: the server closed the connection first.
  Response read(bool head_request = false) {
    Response r;
    boost::system::error_code ec;
    auto n = asio::read_until(socket_, asio::dynamic_buffer(buffer_), "\r\n\r\n", ec);
    if (ec) return r;
    r.head = buffer_.substr(0, n);
    buffer_.erase(0, n);
    std::size_t length = 0;
    auto at = r.head.find("Content-Length: ");
    if (at != std::string::npos) length = std::stoul(r.head.substr(at + 16));
    if (head_request) length = 0;
    if (buffer_.size() < length)
      asio::read(socket_, asio::dynamic_buffer(buffer_),
                 asio::transfer_exactly(length - buffer_.size()), ec);
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, std::min(length, buffer_.size()));
    return r;
  }

  // True when the server has closed: reads until EOF (or a reset), ignoring data.
  bool closed_by_server() {
    boost::system::error_code ec;
    std::string rest;
    asio::read(socket_, asio::dynamic_buffer(rest), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  std::string buffer_;
};

Response roundtrip(std::uint16_t port, const std::string& raw) {
  Client c(port);
  c.send(raw);
  return c.read(raw.rfind("HEAD", 0) == 0);
}

Response get(std::uint16_t port, const std::string& path) {
  return roundtrip(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

template <typename Predicate>
bool eventually(Predicate p, std::chrono::milliseconds timeout = 5s) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (!p()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace

TEST_CASE("listen addresses are numeric host and port", "[http]") {
  auto a = parse_listen_address("127.0.0.1:9464");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 9464);
  CHECK(parse_listen_address(":80").host == "0.0.0.0");
  CHECK(parse_listen_address("[::1]:0").host == "::1");
  CHECK(parse_listen_address("localhost:1").host == "127.0.0.1");
  for (const char* bad :
       {"", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:9x", "example.com:80",
        "::1:80", "[::1]80", "nonsense", "[::1:9464", "1.2.3.4:x"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_listen_address(bad), keymig::UsageError);
  }
}

TEST_CASE("request heads are parsed by the server's parser and limits", "[http]") {
  HttpRequest r;
  CHECK(parse_request_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", r) == 0);
  CHECK(r.method == "GET");
  CHECK(r.path == "/metrics");
  CHECK(r.query == "x=1");
  CHECK(parse_request_head("HEAD / HTTP/1.0\r\n\r\n", r) == 0);
  CHECK(r.method == "HEAD");
  CHECK(parse_request_head("POST /metrics HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", r) == 405);
  CHECK(parse_request_head("get / HTTP/1.1\r\n\r\n", r) == 405);  // methods are case-sensitive
  CHECK(parse_request_head("GET /x HTTP/2\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET x HTTP/1.1\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET http://h/x HTTP/1.1\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET / HTTP/1.1\r\nNo colon\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET / HTTP/1.1\r\nHost: a\r\n", r) == 400);  // unfinished
  CHECK(parse_request_head("\x16\x03\x01 binary\r\n\r\n", r) == 400);
  CHECK(parse_request_head("GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", r) == 413);
  CHECK(parse_request_head("GET /" + std::string(3000, 'a') + " HTTP/1.1\r\n\r\n", r) == 414);
  CHECK(parse_request_head("GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", r) == 414);
  CHECK(parse_request_head("GET / HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", r) ==
        431);
}

TEST_CASE("the metrics server answers /metrics, /healthz and refuses the rest", "[http]") {
  keymig::metrics::Metrics metrics;
  metrics.add_rows("users", "rotated", 7);
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics));
  server.start();
  REQUIRE(server.port() != 0);
  const auto port = server.port();

  SECTION("/metrics is the Prometheus text format") {
    auto r = get(port, "/metrics");
    CHECK(r.status() == 200);
    CHECK(r.has("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    CHECK(r.has("Connection: close"));
    CHECK(r.body.find("keymig_rows_total{") != std::string::npos);
    CHECK(r.has("Content-Length: " + std::to_string(r.body.size())));
  }
  SECTION("/healthz") {
    CHECK(get(port, "/healthz").status() == 200);
  }
  SECTION("HEAD has the length of GET's body and no body") {
    Client c(port);
    c.send("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    auto head = c.read(true);
    auto full = c.read();
    CHECK(head.status() == 200);
    CHECK(full.status() == 200);
    CHECK(head.body.empty());
    CHECK(head.has("Content-Length: " + std::to_string(full.body.size())));
  }
  SECTION("unknown path: 404") {
    CHECK(get(port, "/nope").status() == 404);
  }
  SECTION("other methods: 405 with Allow") {
    Client c(port);
    c.send("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    auto r = c.read();
    CHECK(r.status() == 405);
    CHECK(r.has("Allow: GET, HEAD"));
    CHECK(c.closed_by_server());
  }
  SECTION("malformed: 400") {
    CHECK(roundtrip(port, "hello\r\n\r\n").status() == 400);
    CHECK(roundtrip(port, "GET / HTTP/1.1\r\nbad header\r\n\r\n").status() == 400);
    CHECK(roundtrip(port, "GET nope HTTP/1.1\r\n\r\n").status() == 400);
  }
  SECTION("a body: 413") {
    CHECK(roundtrip(port, "GET /healthz HTTP/1.1\r\nContent-Length: 100000\r\n\r\n").status() ==
          413);
  }
  SECTION("a small body is read and ignored") {
    Client c(port);
    c.send("GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /healthz HTTP/1.1\r\n\r\n");
    CHECK(c.read().status() == 200);
    CHECK(c.read().status() == 200);
  }
  SECTION("a long target: 414") {
    CHECK(get(port, "/" + std::string(3000, 'a')).status() == 414);
    CHECK(get(port, "/" + std::string(20000, 'a')).status() == 414);
  }
  SECTION("an oversized head: 431") {
    std::string raw = "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n";
    CHECK(roundtrip(port, raw).status() == 431);
  }
  SECTION("a handler that throws: 500") {
    HttpServerThread failing("127.0.0.1:0", [](const HttpRequest&) -> HttpResponse {
      throw std::runtime_error("boom");
    });
    failing.start();
    CHECK(get(failing.port(), "/").status() == 500);
  }
  server.stop();
}

TEST_CASE("HTTP/1.1 connections are kept alive until Connection: close", "[http]") {
  keymig::metrics::Metrics metrics;
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics));
  server.start();
  Client c(server.port());
  c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  auto first = c.read();
  CHECK(first.status() == 200);
  CHECK_FALSE(first.has("Connection: close"));
  c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(c.read().status() == 200);
  // Pipelined: both in one write, both answered in order.
  c.send("GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
  CHECK(c.read().status() == 200);
  auto last = c.read();
  CHECK(last.status() == 404);
  CHECK(last.has("Connection: close"));
  CHECK(c.closed_by_server());
  CHECK(server.stats().accepted == 1);
  CHECK(server.stats().requests == 4);

  // HTTP/1.0 is not kept alive unless it asks.
  Client old(server.port());
  old.send("GET /healthz HTTP/1.0\r\n\r\n");
  CHECK(old.read().status() == 200);
  CHECK(old.closed_by_server());
}

TEST_CASE("a client that does not finish its head in time is disconnected", "[http]") {
  keymig::metrics::Metrics metrics;
  HttpLimits limits;
  limits.header_timeout = 300ms;
  limits.idle_timeout = 600ms;
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics), limits);
  server.start();

  SECTION("silent") {
    Client c(server.port());
    auto start = std::chrono::steady_clock::now();
    CHECK(c.closed_by_server());
    auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 250ms);
    CHECK(waited < 3s);
  }
  SECTION("trickling: the deadline is for the whole head, not per byte") {
    Client c(server.port());
    auto start = std::chrono::steady_clock::now();
    boost::system::error_code ec;
    for (char byte : std::string("GET /healthz HTTP/1.1\r\nX: 1234567890\r\n")) {
      if (std::chrono::steady_clock::now() - start > 2s) break;
      try {
        c.send(std::string(1, byte));
      } catch (const boost::system::system_error&) {
        break;  // closed under us: what we want
      }
      std::this_thread::sleep_for(50ms);
    }
    CHECK(c.closed_by_server());
    CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  }
  SECTION("kept alive but idle") {
    Client c(server.port());
    c.send("GET /healthz HTTP/1.1\r\n\r\n");
    CHECK(c.read().status() == 200);
    auto start = std::chrono::steady_clock::now();
    CHECK(c.closed_by_server());
    auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 500ms);  // idle_timeout, not header_timeout
    CHECK(waited < 3s);
  }
  CHECK(eventually([&] { return server.stats().timed_out >= 1; }));
  // The server still serves others afterwards.
  CHECK(get(server.port(), "/healthz").status() == 200);
}

TEST_CASE("at the connection cap the oldest waiting connection makes room", "[http]") {
  keymig::metrics::Metrics metrics;
  HttpLimits limits;
  limits.max_connections = 8;
  limits.header_timeout = 30s;  // only the cap closes them here
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics), limits);
  server.start();

  constexpr int kExtra = 12;
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 8 + kExtra; ++i) {
    idle.push_back(std::make_unique<Client>(server.port()));
    idle.back()->send("GET /metr");  // never finished
    // One at a time, so that "oldest" is well defined.
    REQUIRE(eventually([&] { return server.stats().accepted == static_cast<unsigned>(i + 1); }));
  }
  CHECK(eventually([&] { return server.stats().evicted == kExtra; }));
  // The oldest went, the newest stay.
  for (int i = 0; i < kExtra; ++i) {
    INFO(i);
    CHECK(idle[i]->closed_by_server());
  }

  // Probes still get through, each at the expense of a waiting connection.
  for (int i = 0; i < 20; ++i) {
    INFO(i);
    auto start = std::chrono::steady_clock::now();
    CHECK(get(server.port(), i % 2 ? "/healthz" : "/metrics").status() == 200);
    CHECK(std::chrono::steady_clock::now() - start < 1s);
  }
  CHECK(server.stats().evicted >= kExtra + 1);
  CHECK(server.stats().refused == 0);
}

TEST_CASE("many concurrent clients are all answered", "[http]") {
  keymig::metrics::Metrics metrics;
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics));
  server.start();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    clients.emplace_back([&] {
      for (int j = 0; j < 25; ++j)
        if (get(server.port(), "/metrics").status() == 200) ++ok;
    });
  for (auto& t : clients) t.join();
  CHECK(ok == 200);
}

TEST_CASE("a busy port is a clear error and stop is idempotent", "[http]") {
  keymig::metrics::Metrics metrics;
  HttpServerThread first("127.0.0.1:0", metrics_handler(metrics));
  first.start();
  HttpServerThread second("127.0.0.1:" + std::to_string(first.port()), metrics_handler(metrics));
  CHECK_THROWS_AS(second.start(), HttpError);
  first.stop();
  first.stop();
}
