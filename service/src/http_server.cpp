#include "keymig/service/http_server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <list>

#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::service {

namespace asio = boost::asio;
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

bool parse_request_head(std::string_view head, HttpRequest& out) {
  auto eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return false;
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return false;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || target.empty() || target.front() != '/') return false;
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return false;
  for (char c : method)
    if (c < 'A' || c > 'Z') return false;
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  out.method = std::string(method);
  auto q = target.find('?');
  out.path = std::string(target.substr(0, q));
  out.query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
  return true;
}

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string render(const HttpResponse& response, bool head_only) {
  std::string out;
  out.reserve(160 + (head_only ? 0 : response.body.size()));
  out +=
      "HTTP/1.1 " + std::to_string(response.status) + " " + reason_phrase(response.status) + "\r\n";
  out += "Content-Type: " + response.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  out += "Cache-Control: no-store\r\nConnection: close\r\n\r\n";
  if (!head_only) out += response.body;
  return out;
}

}  // namespace

class HttpSession;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, HttpHandler h, HttpLimits l)
      : io(io), acceptor(io), handler(std::move(h)), limits(l) {}

  void accept();

  asio::io_context& io;
  tcp::acceptor acceptor;
  HttpHandler handler;
  HttpLimits limits;
  bool stopped = false;
  // Live sessions, so stop() can close them; a session erases itself when done.
  std::list<std::weak_ptr<HttpSession>> sessions;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, std::shared_ptr<HttpServer::Impl> server)
      : socket_(std::move(socket)),
        deadline_(socket_.get_executor()),
        buffer_(server->limits.max_request_bytes),
        server_(std::move(server)) {}

  void start(std::list<std::weak_ptr<HttpSession>>::iterator self_entry) {
    entry_ = self_entry;
    auto self = shared_from_this();
    // One deadline for the whole exchange: a client that trickles bytes is cut off too.
    deadline_.expires_after(server_->limits.timeout);
    deadline_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->close();  // operation_aborted: the exchange finished first
    });
    asio::async_read_until(
        socket_, buffer_, "\r\n\r\n",
        [self](const boost::system::error_code& ec, std::size_t n) { self->on_read(ec, n); });
  }

  void close() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    deadline_.cancel();
  }

  ~HttpSession() { server_->sessions.erase(entry_); }

 private:
  void on_read(const boost::system::error_code& ec, std::size_t n) {
    if (ec == asio::error::operation_aborted) return;
    if (ec == asio::error::not_found) {  // streambuf full before the end of the head
      respond({431, "text/plain; charset=utf-8", "request too large\n"}, false);
      return;
    }
    if (ec) {
      close();
      return;
    }
    std::string head(asio::buffers_begin(buffer_.data()), asio::buffers_begin(buffer_.data()) + n);
    HttpRequest request;
    if (!parse_request_head(head, request)) {
      respond({400, "text/plain; charset=utf-8", "bad request\n"}, false);
      return;
    }
    if (request.method != "GET" && request.method != "HEAD") {
      respond({405, "text/plain; charset=utf-8", "only GET and HEAD\n"}, false);
      return;
    }
    HttpResponse response;
    try {
      response = server_->handler(request);
    } catch (const std::exception& e) {
      KEYMIG_LOG(error, "service", "http_handler_failed", {"path", request.path},
                 {"error", e.what()});
      response = {500, "text/plain; charset=utf-8", "internal error\n"};
    }
    respond(response, request.method == "HEAD");
  }

  void respond(const HttpResponse& response, bool head_only) {
    out_ = render(response, head_only);
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(out_),
                      [self](const boost::system::error_code&, std::size_t) { self->close(); });
  }

  tcp::socket socket_;
  asio::steady_timer deadline_;
  asio::streambuf buffer_;
  std::string out_;
  std::shared_ptr<HttpServer::Impl> server_;
  std::list<std::weak_ptr<HttpSession>>::iterator entry_;
};

void HttpServer::Impl::accept() {
  auto self = shared_from_this();
  acceptor.async_accept([self](const boost::system::error_code& ec, tcp::socket socket) {
    if (self->stopped || ec == asio::error::operation_aborted) return;
    if (ec) {
      // EMFILE and friends: log and keep accepting rather than going deaf.
      KEYMIG_LOG(warn, "service", "http_accept_failed", {"error", ec.message()});
    } else if (self->sessions.size() >= self->limits.max_connections) {
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      auto session = std::make_shared<HttpSession>(std::move(socket), self);
      auto entry = self->sessions.insert(self->sessions.end(), session);
      session->start(entry);
    }
    self->accept();
  });
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
  if (ec) throw ServiceError("cannot listen on " + std::string(listen) + ": " + ec.message());
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
  std::list<std::weak_ptr<HttpSession>> sessions = impl_->sessions;
  for (auto& weak : sessions)
    if (auto session = weak.lock()) session->close();
}

std::uint16_t HttpServer::port() const noexcept {
  boost::system::error_code ec;
  auto endpoint = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
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
  server_.reset();
}

std::uint16_t HttpServerThread::port() const noexcept {
  return server_ ? server_->port() : 0;
}

HttpHandler metrics_handler(const metrics::Metrics& metrics) {
  return [&metrics](const HttpRequest& request) -> HttpResponse {
    if (request.path == "/metrics")
      return {200, std::string(kPrometheusContentType), metrics.serialize()};
    if (request.path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    return {404, "text/plain; charset=utf-8", "not found\n"};
  };
}

}  // namespace keymig::service
