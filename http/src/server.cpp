#include "keymig/http/server.hpp"

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <limits>
#include <list>
#include <optional>

#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

ListenAddress parse_listen_address(std::string_view text) {
  auto bad = [&](const char* why) {
    return keymig::UsageError("metrics listen address '" + std::string(text) + "': " + why);
  };
  ListenAddress out;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw bad("expected [IPv6]:PORT");
    out.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw bad("expected HOST:PORT");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) throw bad("put an IPv6 address in brackets");
    port_text = text.substr(colon + 1);
  }
  if (out.host.empty()) out.host = "0.0.0.0";
  if (out.host == "localhost") out.host = "127.0.0.1";
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535)
    throw bad("port must be a number 0-65535");
  boost::system::error_code addr_ec;
  asio::ip::make_address(out.host, addr_ec);
  if (addr_ec) throw bad("host must be a numeric IP address");
  out.port = static_cast<std::uint16_t>(port);
  return out;
}

namespace {

using Parser = bhttp::request_parser<bhttp::string_body>;

void configure(Parser& parser, const HttpLimits& limits) {
  parser.header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  // Checked by check_request once the method is known, so that a POST with a body is a 405,
  // not a 413. (boost::none would compare as smaller than any length in Beast 1.74.)
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
}

// The status to answer for a parsed head before the handler sees it; 0 when it may.
int check_request(Parser& parser, const HttpLimits& limits, HttpRequest& out) {
  const auto& request = parser.get();
  const auto verb = request.method();
  const bool post = verb == bhttp::verb::post && limits.allow_post;
  if (verb != bhttp::verb::get && verb != bhttp::verb::head && !post) return 405;
  const auto target = request.target();
  if (target.size() > limits.max_target_bytes) return 414;
  // Origin form only: Beast lets any visible octet through, proxies' absolute form included.
  if (target.empty() || target.front() != '/') return 400;
  if (auto length = parser.content_length(); length && *length > limits.max_body_bytes) return 413;
  parser.body_limit(limits.max_body_bytes);  // for a chunked body
  out.method = post ? "POST" : verb == bhttp::verb::get ? "GET" : "HEAD";
  const auto authorization = request[bhttp::field::authorization];
  out.authorization = std::string(authorization.data(), authorization.size());
  const auto q = target.find('?');
  out.path = std::string(target.substr(0, q));
  out.query = q == beast::string_view::npos ? std::string() : std::string(target.substr(q + 1));
  return 0;
}

// The status to answer for a failed read; 0 to just close (the client went away, or the
// failure is ours). `unparsed` is what the parser left in the buffer.
int status_for(const beast::error_code& ec, const Parser& parser, std::string_view unparsed,
               const HttpLimits& limits) {
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
    // The parser takes the request line as soon as it is complete, then waits for the end
    // of the head: either the line it took or the one still unparsed is over the limit.
    std::size_t line_length = parser.get().target().size();
    if (line_length == 0) {
      const auto line = unparsed.find('\n');
      line_length = line == std::string_view::npos ? unparsed.size() : line;
    }
    return line_length > limits.max_target_bytes ? 414 : 431;
  }
  if (ec == bhttp::error::body_limit) return 413;
  if (ec.category() != beast::error_code(bhttp::error::bad_method).category()) return 0;
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
      ec == bhttp::error::need_more || ec == bhttp::error::short_read ||
      ec == bhttp::error::bad_alloc || ec == bhttp::error::stale_parser)
    return 0;
  return 400;
}

std::string_view error_text(int status) {
  switch (status) {
    case 400:
      return "bad request\n";
    case 405:
      return "only GET and HEAD\n";
    case 413:
      return "request body too large\n";
    case 414:
      return "target too long\n";
    case 431:
      return "request head too large\n";
    default:
      return "internal error\n";
  }
}

std::string_view as_view(const beast::flat_buffer& buffer) {
  const auto data = buffer.data();
  return {static_cast<const char*>(data.data()), data.size()};
}

}  // namespace

int parse_request_head(std::string_view head, HttpRequest& out) {
  const HttpLimits limits;
  Parser parser;
  configure(parser, limits);
  beast::error_code ec;
  parser.put(asio::buffer(head.data(), head.size()), ec);
  if (ec) {
    const int status = status_for(ec, parser, head, limits);
    return status ? status : 400;  // an unfinished head
  }
  if (!parser.is_header_done()) return 400;
  return check_request(parser, limits, out);
}

class Session;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, HttpHandler h, HttpLimits l)
      : io(io), acceptor(io), pause(io), handler(std::move(h)), limits(l) {}

  void accept();
  void on_accept(tcp::socket socket);
  // Closes the connection that has waited longest for a complete request; false if every
  // connection is writing a response.
  bool evict_one();

  asio::io_context& io;
  tcp::acceptor acceptor;
  asio::steady_timer pause;  // between two accepts at the cap
  std::chrono::steady_clock::time_point last_cap_warning{};
  HttpHandler handler;
  HttpLimits limits;
  bool stopped = false;
  // Open connections, those waiting for a request ordered by how long they have waited
  // (the front waited longest); a connection leaves the list when it closes.
  std::list<std::weak_ptr<Session>> sessions;

  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> evicted{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> timed_out{0};
};

// One connection: read a request (head, then a small body), answer, and either wait for
// the next one (keep-alive) or close. Every step runs under a deadline of the stream.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(socket)),
        // Room for a head at the limit, a body at its limit and the next pipelined request's
        // start: past it the read fails with buffer_overflow, a 431.
        buffer_(server->limits.max_header_bytes + server->limits.max_body_bytes + 4096),
        server_(std::move(server)) {}

  ~Session() {
    if (!closed_) server_->sessions.erase(entry_);
  }

  void start(std::list<std::weak_ptr<Session>>::iterator entry) {
    entry_ = entry;
    beast::error_code ec;
    const auto peer = stream_.socket().remote_endpoint(ec);
    if (!ec) {
      const auto address = peer.address();
      remote_ = (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
                std::to_string(peer.port());
    }
    // The first head is due header_timeout after the accept: a silent client counts too.
    stream_.expires_after(server_->limits.header_timeout);
    read_head();
  }

  [[nodiscard]] bool waiting_for_request() const noexcept {
    return !closed_ && state_ != State::writing;
  }

  void log_eviction(std::chrono::steady_clock::time_point now) {
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - accepted_at_);
    KEYMIG_LOG(debug, "http", "http_evicted", {"age_ms", static_cast<long long>(age.count())},
               {"kept_alive", state_ == State::idle}, {"buffered", buffer_.size()});
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    server_->sessions.erase(entry_);
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

 private:
  enum class State { idle, reading, writing, lingering };

  void wait_in_line() {
    // Back of the eviction order: it has waited least.
    server_->sessions.splice(server_->sessions.end(), server_->sessions, entry_);
  }

  void read_head() {
    state_ = State::reading;
    parser_.emplace();
    configure(*parser_, server_->limits);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_head(ec); });
  }

  // Keep-alive: the next request may take idle_timeout to start, then header_timeout to
  // finish its head.
  void await_next_request() {
    wait_in_line();
    if (buffer_.size() > 0) {  // pipelined
      stream_.expires_after(server_->limits.header_timeout);
      read_head();
      return;
    }
    state_ = State::idle;
    stream_.expires_after(server_->limits.idle_timeout);
    stream_.async_read_some(buffer_.prepare(512),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (self->closed_) return;
                              if (ec) return self->fail(ec);
                              self->buffer_.commit(n);
                              self->stream_.expires_after(self->server_->limits.header_timeout);
                              self->read_head();
                            });
  }

  void on_head(beast::error_code ec) {
    if (closed_) return;  // evicted or stopped while the read completed
    if (ec) return fail(ec);
    if (int status = check_request(*parser_, server_->limits, request_)) return reply(status);
    if (parser_->is_done()) return answer();
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (self->closed_) return;
                        if (ec) return self->fail(ec);
                        self->answer();
                      });
  }

  void fail(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      ++server_->timed_out;
    } else if (int status = status_for(ec, *parser_, as_view(buffer_), server_->limits)) {
      return reply(status);
    }
    close();
  }

  void answer() {
    request_.remote = remote_;
    request_.body = request_.method == "POST" ? parser_->get().body() : std::string();
    HttpResponse response;
    try {
      response = server_->handler(request_);
    } catch (const std::exception& e) {
      KEYMIG_LOG(error, "http", "http_handler_failed", {"path", request_.path},
                 {"error", e.what()});
      response = {500, "text/plain; charset=utf-8", std::string(error_text(500))};
    }
    keep_alive_ = parser_->get().keep_alive() && !server_->stopped;
    write(response, request_.method == "HEAD");
  }

  // An error response ends the connection: what follows the bad request cannot be framed.
  void reply(int status) {
    keep_alive_ = false;
    write({status, "text/plain; charset=utf-8", std::string(error_text(status))}, false);
  }

  void write(const HttpResponse& response, bool head_only) {
    ++server_->requests;
    state_ = State::writing;
    response_ = {};
    response_.version(11);
    response_.result(static_cast<unsigned>(response.status));
    response_.set(bhttp::field::content_type, response.content_type);
    response_.set(bhttp::field::cache_control, "no-store");
    if (response.status == 405)
      response_.set(bhttp::field::allow, response.allow.empty() ? "GET, HEAD" : response.allow);
    if (response.status == 401 && !response.www_authenticate.empty())
      response_.set(bhttp::field::www_authenticate, response.www_authenticate);
    // HEAD: the length of the body GET would carry, and no body.
    response_.content_length(response.body.size());
    if (!head_only) response_.body() = response.body;
    response_.keep_alive(keep_alive_);
    stream_.expires_after(server_->limits.write_timeout);
    bhttp::async_write(stream_, response_,
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         if (self->closed_) return;
                         if (ec) {
                           if (ec == beast::error::timeout) ++self->server_->timed_out;
                           return self->close();
                         }
                         if (self->keep_alive_) return self->await_next_request();
                         self->linger();
                       });
  }

  // Closing with unread request bytes makes the kernel reset the connection, which can
  // destroy the response before the client reads it (a 431 after a large head): end our
  // side, and read what the client still sends, briefly, before closing.
  void linger() {
    state_ = State::lingering;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(
        std::min(server_->limits.header_timeout, std::chrono::milliseconds(1000)));
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (self->closed_) return;
                              self->drained_ += n;
                              if (ec || self->drained_ > 64 * 1024) return self->close();
                              self->drain();
                            });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  HttpRequest request_;
  bhttp::response<bhttp::string_body> response_;
  std::array<char, 1024> drain_{};
  std::size_t drained_ = 0;
  std::string remote_;
  std::chrono::steady_clock::time_point accepted_at_ = std::chrono::steady_clock::now();
  State state_ = State::reading;
  bool keep_alive_ = false;
  bool closed_ = false;
  std::shared_ptr<HttpServer::Impl> server_;
  std::list<std::weak_ptr<Session>>::iterator entry_;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(
      [self = shared_from_this()](const boost::system::error_code& ec, tcp::socket socket) {
        if (self->stopped || ec == asio::error::operation_aborted) return;
        if (ec) {
          // EMFILE and friends: log and keep accepting rather than going deaf.
          KEYMIG_LOG(warn, "http", "http_accept_failed", {"error", ec.message()});
        } else {
          self->on_accept(std::move(socket));
        }
        if (self->sessions.size() < self->limits.max_connections) return self->accept();
        // At the cap each accept evicts a waiting connection. Clients that reconnect as soon
        // as they are evicted would otherwise churn through the slots faster than a probe's
        // request can be read; pacing the accepts gives every connection time to send one.
        self->pause.expires_after(self->limits.accept_interval_at_cap);
        self->pause.async_wait([self](const boost::system::error_code& ec) {
          if (!ec && !self->stopped) self->accept();
        });
      });
}

void HttpServer::Impl::on_accept(tcp::socket socket) {
  ++accepted;
  if (sessions.size() >= limits.max_connections && !evict_one()) {
    ++refused;
    boost::system::error_code ignored;
    socket.close(ignored);
    return;
  }
  auto session = std::make_shared<Session>(std::move(socket), shared_from_this());
  session->start(sessions.insert(sessions.end(), session));
}

bool HttpServer::Impl::evict_one() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_cap_warning >= std::chrono::minutes(1)) {
    last_cap_warning = now;
    KEYMIG_LOG(warn, "http", "http_connection_cap_reached",
               {"max_connections", limits.max_connections}, {"evicted", evicted.load()},
               {"refused", refused.load()});
  }
  for (auto& weak : sessions) {
    auto session = weak.lock();
    if (session && session->waiting_for_request()) {
      session->log_eviction(now);
      session->close();  // erases `weak`: stop iterating
      ++evicted;
      return true;
    }
  }
  return false;
}

HttpServer::HttpServer(asio::io_context& io, std::string_view listen, HttpHandler handler,
                       HttpLimits limits)
    : impl_(std::make_shared<Impl>(io, std::move(handler), limits)) {
  ListenAddress address = parse_listen_address(listen);
  tcp::endpoint endpoint(asio::ip::make_address(address.host), address.port);
  boost::system::error_code ec;
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw HttpError("cannot listen on " + std::string(listen) + ": " + ec.message());
}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::start() {
  impl_->accept();
}

void HttpServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->pause.cancel();
  // A copy: each close() leaves the list.
  std::list<std::weak_ptr<Session>> sessions = impl_->sessions;
  for (auto& weak : sessions)
    if (auto session = weak.lock()) session->close();
}

std::uint16_t HttpServer::port() const noexcept {
  boost::system::error_code ec;
  auto endpoint = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

HttpStats HttpServer::stats() const noexcept {
  return {impl_->accepted.load(), impl_->requests.load(), impl_->evicted.load(),
          impl_->refused.load(), impl_->timed_out.load()};
}

std::string HttpServer::local_address() const {
  boost::system::error_code ec;
  auto endpoint = impl_->acceptor.local_endpoint(ec);
  if (ec) return {};
  auto address = endpoint.address();
  std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

HttpServerThread::HttpServerThread(std::string listen, HttpHandler handler, HttpLimits limits)
    : listen_(std::move(listen)), handler_(std::move(handler)), limits_(limits) {}

HttpServerThread::~HttpServerThread() {
  stop();
}

void HttpServerThread::start() {
  if (server_) return;
  io_.restart();
  server_ = std::make_unique<HttpServer>(io_, listen_, handler_, limits_);
  server_->start();
  thread_ = std::thread([this] { io_.run(); });
}

void HttpServerThread::stop() {
  if (!server_) return;
  // The server lives on the io thread: stop it there, then let run() return for lack of
  // work.
  asio::post(io_, [this] { server_->stop(); });
  if (thread_.joinable()) thread_.join();
  final_stats_ = server_->stats();
  server_.reset();
}

std::uint16_t HttpServerThread::port() const noexcept {
  return server_ ? server_->port() : 0;
}

HttpStats HttpServerThread::stats() const noexcept {
  return server_ ? server_->stats() : final_stats_;
}

HttpHandler metrics_handler(const metrics::Metrics& metrics) {
  return [&metrics](const HttpRequest& request) -> HttpResponse {
    if (request.path == "/metrics")
      return {200, std::string(kPrometheusContentType), metrics.serialize()};
    if (request.path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    return {404, "text/plain; charset=utf-8", "not found\n"};
  };
}

}  // namespace keymig::http
