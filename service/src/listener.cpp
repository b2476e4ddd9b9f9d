// The LISTEN session on the event loop: db::ListenSession does the libpq steps, this
// file does the waiting (on a dup of libpq's socket), the connect deadline and the
// reconnect backoff.

#include <unistd.h>

#include "keymig/log.hpp"
#include "service_impl.hpp"

namespace keymig::service {

void Service::Impl::close_listener() {
  ++listen_generation;
  connect_deadline.cancel();
  boost::system::error_code ignored;
  if (listen_socket.is_open()) {
    listen_socket.cancel(ignored);
    listen_socket.close(ignored);
  }
  listen.close();
  listen_up = false;
  db_up = false;
}

void Service::Impl::listener_lost(const std::string& why) {
  KEYMIG_LOG(warn, "service", "listen_connection_lost", {"error", why});
  close_listener();
  schedule_reconnect();
}

void Service::Impl::schedule_reconnect() {
  if (stop_begun) return;
  auto delay = db::backoff_delay(reconnect_attempt++, options.reconnect_min, options.reconnect_max);
  reconnect_timer.expires_after(delay);
  reconnect_timer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) connect_listener();
  });
}

// The connect, the LISTEN and every wait in between run on the event loop without
// blocking it: a database that drops packets (a failover, a partition) used to hold the
// loop for connect_timeout at every attempt, and with it /metrics, /healthz and SIGTERM,
// just when the operator is watching.
void Service::Impl::connect_listener() {
  if (stop_begun) return;
  close_listener();
  listen_dsn = current_settings()->dsn;
  begin_attempt(listen.connect(listen_dsn));
}

// One attempt per host of a multi-host DSN, each with its own deadline: libpq's
// non-blocking connect applies no connect_timeout, so the deadline timer does.
void Service::Impl::begin_attempt(db::ListenStep first) {
  if (first == db::ListenStep::failed) {
    connect_failed(listen.error());
    return;
  }
  const int generation = listen_generation;
  connect_deadline.expires_after(listen.connect_timeout());
  connect_deadline.async_wait([this, generation](const boost::system::error_code& ec) {
    if (ec || generation != listen_generation || listen_up) return;
    connect_failed("no answer within the connect timeout");
  });
  advance(first);
}

void Service::Impl::advance(db::ListenStep step) {
  switch (step) {
    case db::ListenStep::wait_read:
    case db::ListenStep::wait_write:
      await_socket(step == db::ListenStep::wait_read, [this] { advance(listen.step()); });
      return;
    case db::ListenStep::listening:
      on_listening();
      return;
    case db::ListenStep::failed:
      connect_failed(listen.error());
      return;
  }
}

// libpq may open a new socket between steps (another address, another host), so each
// wait takes a fresh dup() of whatever its socket is now: Asio owns and closes the dup,
// libpq keeps its own.
void Service::Impl::await_socket(bool readable, std::function<void()> next) {
  boost::system::error_code ignored;
  if (listen_socket.is_open()) listen_socket.close(ignored);
  const int fd = listen.socket() >= 0 ? ::dup(listen.socket()) : -1;
  if (fd < 0) {
    connect_failed("the connection has no socket");
    return;
  }
  listen_socket.assign(fd);
  const int generation = listen_generation;
  listen_socket.async_wait(
      readable ? asio::posix::stream_descriptor::wait_read
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

void Service::Impl::connect_failed(const std::string& why) {
  KEYMIG_LOG(warn, "service", "listen_connect_failed", {"error", why},
             {"attempt", reconnect_attempt}, {"host", listen.host_label()});
  close_listener();
  if (listen.has_next_host()) {
    // The next host at once; the backoff is for a round of them all.
    begin_attempt(listen.connect_next_host());
    return;
  }
  schedule_reconnect();
}

void Service::Impl::on_listening() {
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

bool Service::Impl::schema_ok_for(const std::string& dsn) const {
  std::lock_guard<std::mutex> lock(status_mu);
  return schema_ok_dsn == dsn;
}

void Service::Impl::update_ready() {
  db_up = listen_up && schema_ok_for(listen_dsn);
}

void Service::Impl::await_readable() {
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

void Service::Impl::on_readable() {
  const auto notifications = listen.consume();
  if (!notifications) {
    listener_lost(listen.error());
    return;
  }
  if (*notifications > 0) {
    KEYMIG_LOG(debug, "service", "notified", {"notifications", *notifications});
    want_drain();
  }
  await_readable();
}

}  // namespace keymig::service
