#pragma once

// The LISTEN session of `keymig serve` as a non-blocking state machine over libpq: the
// caller owns the waiting (an event loop watches socket() for what each step asks), so a
// database that never answers cannot hold that loop. Users need no libpq header.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct pg_conn;  // libpq's PGconn, opaque here

namespace keymig::db {

/// What to wait for before the next ListenSession::step(), or where the session stands.
enum class ListenStep {
  wait_read,   // socket() readable
  wait_write,  // socket() writable
  listening,   // connected, LISTEN done: wait for readable, then consume()
  failed,      // this attempt is over; error() says why
};

/// libpq connection keywords and values of one connect attempt.
using ConnectParams = std::vector<std::pair<std::string, std::string>>;

/// One connect per host of a multi-host DSN (host=a,b or postgresql://a,b/..., as HA
/// setups list them), in order, each with the DSN's other settings; PGHOST, PGHOSTADDR and
/// PGPORT fill what the DSN leaves out. Empty for a single host (the DSN is used as it is)
/// and for a DSN libpq cannot parse (its connect reports that). Holds the password if the
/// DSN does: never log it.
[[nodiscard]] std::vector<ConnectParams> split_hosts(const std::string& dsn);

/// A session that LISTENs on one channel. Not thread-safe: one owner (the event loop).
/// Nothing here throws; failures are a ListenStep::failed with error().
class ListenSession {
 public:
  /// `application_name` marks the session in pg_stat_activity.
  ListenSession(std::string channel, std::string application_name);
  ~ListenSession();
  ListenSession(const ListenSession&) = delete;
  ListenSession& operator=(const ListenSession&) = delete;

  /// Drops any session and starts connecting to `dsn` (its first host).
  ListenStep connect(const std::string& dsn);
  /// True when a multi-host DSN has a host after the current attempt's.
  [[nodiscard]] bool has_next_host() const noexcept;
  /// Drops the current attempt and starts connecting to the next host.
  ListenStep connect_next_host();
  /// Advances the connect, then the LISTEN, once the socket is ready as last asked.
  ListenStep step();
  /// While listening: reads what arrived and returns how many notifications it held;
  /// nullopt when the session is lost (error() says why).
  [[nodiscard]] std::optional<int> consume();
  /// Drops the session (if any). The socket number may be reused at once.
  void close() noexcept;

  /// libpq's current socket, -1 without one. It may change between steps (another
  /// address, another host): wait on the one returned now.
  [[nodiscard]] int socket() const noexcept;
  /// How long the current connect attempt may take: the DSN's connect_timeout or
  /// PGCONNECT_TIMEOUT, at least 2 s, 10 s when unset or 0. libpq's non-blocking connect
  /// applies none itself.
  [[nodiscard]] std::chrono::seconds connect_timeout() const;
  /// The last failure as one line (libpq's message; no password).
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  /// "host=... port=..." of the current attempt of a multi-host DSN; "" otherwise.
  [[nodiscard]] std::string host_label() const;
  [[nodiscard]] bool listening() const noexcept { return phase_ == Phase::listening; }

 private:
  enum class Phase { idle, connecting, awaiting_listen, listening };
  ListenStep start_attempt();
  ListenStep fail(std::string why);
  ListenStep send_listen();
  ListenStep read_listen_reply();

  std::string channel_;
  std::string application_name_;
  std::string dsn_;
  std::vector<ConnectParams> hosts_;
  std::size_t host_ = 0;
  ::pg_conn* conn_ = nullptr;
  Phase phase_ = Phase::idle;
  std::string error_;
};

}  // namespace keymig::db
