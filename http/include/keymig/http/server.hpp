#pragma once

// The HTTP/1.1 server behind /metrics, /healthz, /readyz and /status: `serve` routes them
// through it, the one-shot commands /metrics and /healthz (metrics_handler). Built on
// Boost.Beast's request parser; a slow or hostile client must not take out a liveness
// probe, so:
// - GET and HEAD only (405 with `Allow` otherwise; POST too with HttpLimits::allow_post); the
// request head is bounded (431, or 414
//   when the request line alone is over, or its target is), the body too (413; GET and
//   HEAD carry none); anything malformed is a 400. An error response closes the
//   connection.
// - Persistent connections (HTTP/1.1 keep-alive; `Connection: close` and HTTP/1.0 are
//   honoured), each with deadlines: the request head must arrive within header_timeout of
//   the accept (or of its first byte, on a kept-alive connection), a kept-alive connection
//   may idle idle_timeout between requests, and a response must be written within
//   write_timeout. A client that misses one is disconnected.
// - At most max_connections at once. At the cap a newcomer is still accepted: it closes the
//   connection that has waited longest without a complete request (a trickler, or an idle
//   keep-alive); only when every connection is busy writing a response is the newcomer
//   turned away. At the cap accepts are paced (accept_interval_at_cap), so that even
//   clients that reconnect at once cannot churn through the slots faster than a probe's
//   request is read. Probes are answered in milliseconds, so they outlive the tricklers.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "keymig/error.hpp"

namespace keymig::metrics {
class Metrics;
}

namespace keymig::http {

/// Cannot listen (address in use, permission).
class HttpError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

struct HttpRequest {
  std::string method;  // "GET" or "HEAD"; "POST" only with HttpLimits::allow_post
  std::string path;    // without the query string
  std::string query;   // after '?', undecoded; empty if none
  std::string body;    // POST only; at most max_body_bytes
  // The Authorization header as sent (a credential: never log it); empty if none.
  std::string authorization;
  std::string remote;  // "address:port" of the client, for logs of who changed what
};

struct HttpResponse {
  HttpResponse() = default;
  HttpResponse(int s, std::string type, std::string text)
      : status(s), content_type(std::move(type)), body(std::move(text)) {}
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string allow;             // the Allow header of a 405; empty: "GET, HEAD"
  std::string www_authenticate;  // the WWW-Authenticate header of a 401; empty: none
};

/// Called on the io_context thread for every well-formed GET/HEAD (and POST, if allowed): keep it
/// quick (no database round trips; read state that other threads keep up to date).
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpLimits {
  std::size_t max_header_bytes = 8192;             // request line + headers: 431 (414 for the line)
  std::size_t max_target_bytes = 2048;             // path and query: 414
  std::size_t max_body_bytes = 1024;               // 413; a body this small is read and ignored
  std::chrono::milliseconds header_timeout{5000};  // accept (or first byte) to end of head
  std::chrono::milliseconds idle_timeout{15000};   // kept-alive, between requests
  std::chrono::milliseconds write_timeout{5000};   // one response
  std::size_t max_connections = 128;
  // At the cap: the pause between two accepts (each of which evicts a connection).
  std::chrono::milliseconds accept_interval_at_cap{1};
  // POST reaches the handler (with its body, up to max_body_bytes): serve's /control
  // routes. Off, a POST is a 405 like any method but GET and HEAD.
  bool allow_post = false;
};

/// What the server did to its clients since it started; readable from any thread.
struct HttpStats {
  std::uint64_t accepted = 0;
  std::uint64_t requests = 0;   // answered, error responses included
  std::uint64_t evicted = 0;    // closed at the cap to make room for a newcomer
  std::uint64_t refused = 0;    // newcomers closed at the cap: every connection was writing
  std::uint64_t timed_out = 0;  // closed at a deadline
};

/// "127.0.0.1:9464", "[::1]:9464", ":9464" (all interfaces), "0.0.0.0:0" (any free port).
/// Numeric addresses only: a listen address that needs DNS is a config mistake.
/// Throws keymig::UsageError.
struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;
};
[[nodiscard]] ListenAddress parse_listen_address(std::string_view text);

/// Parses a complete request head ("GET /x?y HTTP/1.1\r\n...\r\n\r\n") with the server's
/// parser and default limits. Returns the status the server would answer before calling
/// the handler: 0 when `out` is a request the handler sees, else 400, 405, 413, 414 or 431.
[[nodiscard]] int parse_request_head(std::string_view head, HttpRequest& out);

/// Serves `handler` on an io_context the caller runs. Not thread-safe: call every method
/// but stats() on the io_context's thread (or before it runs).
class HttpServer {
 public:
  /// Binds at once so that a bad or busy address fails early. Throws UsageError for a
  /// malformed address, HttpError when it cannot bind.
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
  [[nodiscard]] HttpStats stats() const noexcept;

 private:
  friend class Session;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// An HttpServer on its own io_context and thread, for one-shot commands that expose
/// `--metrics-listen` while they run:
///
///     keymig::http::HttpServerThread http(listen, keymig::http::metrics_handler(m));
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

  /// Binds and starts the thread. Throws UsageError / HttpError as HttpServer does.
  void start();
  /// Idempotent; joins the thread.
  void stop();
  [[nodiscard]] std::uint16_t port() const noexcept;
  [[nodiscard]] HttpStats stats() const noexcept;

 private:
  std::string listen_;
  HttpHandler handler_;
  HttpLimits limits_;
  boost::asio::io_context io_;
  std::unique_ptr<HttpServer> server_;
  HttpStats final_stats_;  // after stop()
  std::thread thread_;
};

/// The Prometheus content type of the text exposition format.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

/// /metrics (Metrics::serialize()) and /healthz; 404 for anything else. `metrics` must
/// outlive the handler.
[[nodiscard]] HttpHandler metrics_handler(const metrics::Metrics& metrics);

}  // namespace keymig::http
