#pragma once

// A small HTTP/1.1 server: `serve` routes /metrics, /healthz, /readyz and /status through
// it, the one-shot commands /metrics and /healthz (metrics_handler). Deliberately minimal:
// GET and HEAD only (405 otherwise), one request per connection (`Connection: close`),
// bounded request head (431), one deadline per connection for the whole exchange and a
// cap on concurrent connections, so that a slow or hostile client cannot pin the event
// loop or memory.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "keymig/error.hpp"

namespace keymig::metrics {
class Metrics;
}

namespace keymig::service {

/// Cannot listen (address in use, permission) or another runtime failure of the service.
class ServiceError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

struct HttpRequest {
  std::string method;  // "GET" or "HEAD"
  std::string path;    // without the query string
  std::string query;   // after '?', undecoded; empty if none
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

/// Called on the io_context thread for every well-formed GET/HEAD: keep it quick (no
/// database round trips; read state that other threads keep up to date).
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpLimits {
  std::size_t max_request_bytes = 8192;     // request line + headers
  std::chrono::milliseconds timeout{5000};  // whole exchange, per connection
  std::size_t max_connections = 64;         // beyond: accepted and closed at once
};

/// "127.0.0.1:9464", "[::1]:9464", ":9464" (all interfaces), "0.0.0.0:0" (any free port).
/// Numeric addresses only: a listen address that needs DNS is a config mistake.
/// Throws keymig::UsageError.
struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;
};
[[nodiscard]] ListenAddress parse_listen_address(std::string_view text);

/// Parses the request head ("GET /x?y HTTP/1.1\r\n..."). Returns false for anything that is
/// not a plausible HTTP/1.x request line.
[[nodiscard]] bool parse_request_head(std::string_view head, HttpRequest& out);

/// Serves `handler` on an io_context the caller runs. Not thread-safe: call every method
/// on the io_context's thread (or before it runs).
class HttpServer {
 public:
  /// Binds at once so that a bad or busy address fails early. Throws UsageError for a
  /// malformed address, ServiceError when it cannot bind.
  HttpServer(boost::asio::io_context& io, std::string_view listen, HttpHandler handler,
             HttpLimits limits = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Starts accepting.
  void start();
  /// Stops accepting and closes open connections; their handlers complete with
  /// operation_aborted, so io_context::run() can return.
  void stop();
  /// The bound port (useful with port 0).
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// "host:port" as bound.
  [[nodiscard]] std::string local_address() const;

 private:
  friend class HttpSession;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// An HttpServer on its own io_context and thread, for one-shot commands that expose
/// `--metrics-listen` while they run:
///
///     keymig::service::HttpServerThread http(listen, keymig::service::metrics_handler(m));
///     http.start();   // binds (throws) and serves in the background
///     ... run the migration ...
///     http.stop();    // also done by the destructor
///
/// start()/stop() are not thread-safe with each other; the handler runs on the server's
/// thread, so it must only read thread-safe state (Metrics is).
class HttpServerThread {
 public:
  HttpServerThread(std::string listen, HttpHandler handler, HttpLimits limits = {});
  ~HttpServerThread();
  HttpServerThread(const HttpServerThread&) = delete;
  HttpServerThread& operator=(const HttpServerThread&) = delete;

  /// Binds and starts the thread. Throws UsageError / ServiceError as HttpServer does.
  void start();
  /// Idempotent; joins the thread.
  void stop();
  [[nodiscard]] std::uint16_t port() const noexcept;

 private:
  std::string listen_;
  HttpHandler handler_;
  HttpLimits limits_;
  boost::asio::io_context io_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

/// The Prometheus content type of the text exposition format.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

/// /metrics (Metrics::serialize()) and /healthz; 404 for anything else. `metrics` must
/// outlive the handler.
[[nodiscard]] HttpHandler metrics_handler(const metrics::Metrics& metrics);

}  // namespace keymig::service
