#include "keymig/service/http_server.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "keymig/metrics/metrics.hpp"

using namespace keymig::service;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// Sends `raw` and reads until the server closes: the server always closes after one
// response, so this also checks `Connection: close` is honoured.
std::string http_exchange(std::uint16_t port, const std::string& raw) {
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  asio::write(socket, asio::buffer(raw));
  std::string out;
  boost::system::error_code ec;
  asio::read(socket, asio::dynamic_buffer(out), ec);
  return out;
}

std::string get(std::uint16_t port, const std::string& path) {
  return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
}

}  // namespace

TEST_CASE("listen addresses are numeric host and port", "[service][http]") {
  auto a = parse_listen_address("127.0.0.1:9464");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 9464);
  CHECK(parse_listen_address(":80").host == "0.0.0.0");
  CHECK(parse_listen_address("[::1]:0").host == "::1");
  CHECK(parse_listen_address("localhost:1").host == "127.0.0.1");
  for (const char* bad : {"", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:9x",
                          "example.com:80", "::1:80", "[::1]80"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_listen_address(bad), keymig::UsageError);
  }
}

TEST_CASE("request heads are parsed strictly", "[service][http]") {
  HttpRequest r;
  REQUIRE(parse_request_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", r));
  CHECK(r.method == "GET");
  CHECK(r.path == "/metrics");
  CHECK(r.query == "x=1");
  CHECK(parse_request_head("HEAD / HTTP/1.0\r\n\r\n", r));
  CHECK_FALSE(parse_request_head("GET /x HTTP/2\r\n\r\n", r));
  CHECK_FALSE(parse_request_head("GET x HTTP/1.1\r\n\r\n", r));
  CHECK_FALSE(parse_request_head("get / HTTP/1.1\r\n\r\n", r));
  CHECK_FALSE(parse_request_head("GET\r\n\r\n", r));
  CHECK_FALSE(parse_request_head("\x16\x03\x01 binary", r));
}

TEST_CASE("the metrics server answers /metrics, /healthz and refuses the rest", "[service][http]") {
  keymig::metrics::Metrics metrics;
  metrics.add_rows("users", "rotated", 7);
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics));
  server.start();
  REQUIRE(server.port() != 0);

  SECTION("/metrics is the Prometheus text format") {
    auto response = get(server.port(), "/metrics");
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
    CHECK(response.find("Connection: close") != std::string::npos);
    CHECK(response.find("keymig_rows_total{") != std::string::npos);
    auto body = response.substr(response.find("\r\n\r\n") + 4);
    CHECK(response.find("Content-Length: " + std::to_string(body.size())) != std::string::npos);
  }
  SECTION("/healthz") {
    CHECK(get(server.port(), "/healthz").find("200 OK") != std::string::npos);
  }
  SECTION("HEAD has no body") {
    auto response = http_exchange(server.port(), "HEAD /healthz HTTP/1.1\r\n\r\n");
    CHECK(response.find("200 OK") != std::string::npos);
    CHECK(response.substr(response.find("\r\n\r\n") + 4).empty());
  }
  SECTION("unknown path") {
    CHECK(get(server.port(), "/nope").find("404") != std::string::npos);
  }
  SECTION("POST") {
    CHECK(http_exchange(server.port(), "POST /metrics HTTP/1.1\r\n\r\n").find("405") !=
          std::string::npos);
  }
  SECTION("garbage") {
    CHECK(http_exchange(server.port(), "hello\r\n\r\n").find("400") != std::string::npos);
  }
  SECTION("an oversized head is cut off") {
    std::string raw = "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n";
    CHECK(http_exchange(server.port(), raw).find("431") != std::string::npos);
  }
  server.stop();
}

TEST_CASE("a silent client is disconnected at the deadline", "[service][http]") {
  keymig::metrics::Metrics metrics;
  HttpLimits limits;
  limits.timeout = std::chrono::milliseconds(300);
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics), limits);
  server.start();
  auto start = std::chrono::steady_clock::now();
  auto response = http_exchange(server.port(), "GET /metr");  // never finishes the head
  auto waited = std::chrono::steady_clock::now() - start;
  CHECK(response.empty());
  CHECK(waited >= std::chrono::milliseconds(250));
  CHECK(waited < std::chrono::seconds(3));
  // The server still serves others afterwards.
  CHECK(get(server.port(), "/healthz").find("200 OK") != std::string::npos);
}

TEST_CASE("many concurrent clients are all answered", "[service][http]") {
  keymig::metrics::Metrics metrics;
  HttpServerThread server("127.0.0.1:0", metrics_handler(metrics));
  server.start();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    clients.emplace_back([&] {
      for (int j = 0; j < 25; ++j)
        if (get(server.port(), "/metrics").find("200 OK") != std::string::npos) ++ok;
    });
  for (auto& t : clients) t.join();
  CHECK(ok == 200);
}

TEST_CASE("a busy port is a clear error and stop is idempotent", "[service][http]") {
  keymig::metrics::Metrics metrics;
  HttpServerThread first("127.0.0.1:0", metrics_handler(metrics));
  first.start();
  HttpServerThread second("127.0.0.1:" + std::to_string(first.port()), metrics_handler(metrics));
  CHECK_THROWS_AS(second.start(), ServiceError);
  first.stop();
  first.stop();
}
