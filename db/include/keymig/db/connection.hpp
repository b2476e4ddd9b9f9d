#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "keymig/db/error.hpp"

namespace keymig::db {

/// How to reach PostgreSQL and how patient to be with it.
struct ConnectOptions {
  std::string dsn;  // libpq DSN or URI; empty: libpq's PG* environment variables
  std::chrono::milliseconds lock_timeout{2000};
  std::chrono::milliseconds statement_timeout{60000};
  int max_retries = 8;  // attempts after the first, for retryable errors
  std::chrono::milliseconds retry_base_delay{100};
  std::chrono::milliseconds retry_max_delay{5000};
  // Whether connect_with_retry retries a refused connect (DbError::refused). Off for the
  // one-shot commands: a wrong host or port, or a server that is down, is said at once
  // (exit 1) instead of after the retries; `serve` turns it on, since its database may be
  // restarting. A session lost mid-work is re-opened under with_retry either way.
  bool retry_refused = false;
};

/// Whether the DSN, or else libpq's environment (PGHOST, PGHOSTADDR, PGPORT, PGDATABASE,
/// PGUSER, PGSERVICE), says which database to use. Without either, libpq would try its
/// default socket, which is rarely what anyone meant.
[[nodiscard]] bool dsn_configured(const std::string& dsn);

/// Throws DsnError when libpq cannot parse `dsn` (PQconninfoParse: no connection is
/// tried), or when no database is configured at all (dsn_configured). The message names
/// the problem, never the DSN or a part of it.
void check_dsn(const std::string& dsn);

/// A libpq message about connecting with `dsn`, safe to show: the DSN's password (as
/// written and as libpq decoded it), PGPASSWORD's value and the DSN itself removed, and
/// token-shaped words redacted.
[[nodiscard]] std::string redact_connection_message(std::string message, const std::string& dsn);

/// The database libpq would connect to with `dsn`: its dbname, else PGDATABASE, else
/// the user name (the DSN's, PGUSER, the login's), as libpq defaults it. For labels; never
/// a part of the DSN beyond that name ("" when it cannot tell, or the name looks like a
/// connection string itself).
[[nodiscard]] std::string configured_database(const std::string& dsn);

class Connection;
/// The name of the database `conn`'s session is connected to. Throws DbError.
[[nodiscard]] std::string database_name(Connection& conn);

/// One PostgreSQL session with application_name=keymig and the configured timeouts.
/// Not thread-safe: one owner (a pipeline's serial stage, a command) at a time.
/// Throws DsnError for a DSN libpq cannot parse, DbError when it cannot connect.
class Connection {
 public:
  explicit Connection(ConnectOptions options);
  ~Connection();
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Drops the session (if any) and opens a new one. Throws DbError.
  void reconnect();
  /// Server process id of the current session (for leases).
  [[nodiscard]] int backend_pid() const;
  [[nodiscard]] const ConnectOptions& options() const noexcept;

  struct Impl;  // db internals only
  [[nodiscard]] Impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::db
