#pragma once

#include <string>
#include <string_view>

#include "keymig/error.hpp"

namespace keymig::db {

/// sqlclient_unable_to_establish_sqlconnection: what DbError::refused() tests.
inline constexpr const char* kRefusedSqlstate = "08001";

/// A database failure that stops the current statement. The message is the server's first
/// line (no DETAIL, which may quote row values) plus context, with token- and key-shaped
/// words redacted (a trigger's RAISE may quote a row); never a token.
class DbError : public keymig::Error {
 public:
  DbError(const std::string& what, std::string sqlstate, bool retryable);
  /// Five-character SQLSTATE; "08006" when the connection was lost without one.
  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }
  /// True when repeating the work on a (new) connection may succeed: lost connection,
  /// serialization failure, deadlock, lock timeout, admin shutdown, server starting up.
  [[nodiscard]] bool retryable() const noexcept { return retryable_; }
  /// True when the session is gone and the connection must be re-opened first.
  [[nodiscard]] bool connection_lost() const noexcept;
  /// True when opening a session found no server listening (SQLSTATE 08001): retryable
  /// and connection_lost() too, since a restarting server refuses for a while, but a
  /// command's first connect does not wait for it (see ConnectOptions::retry_refused).
  [[nodiscard]] bool refused() const noexcept;

 private:
  std::string sqlstate_;
  bool retryable_;
};

/// The configured target table or columns are unusable (missing, wrong type, id not
/// unique). Exit 2: nothing has been written.
class TargetError : public keymig::UsageError {
 public:
  using keymig::UsageError::UsageError;
};

/// A DSN libpq cannot parse: a usage error (exit 2), never retried. The message says
/// what is wrong without quoting the DSN or any part of it.
class DsnError : public keymig::UsageError {
 public:
  using keymig::UsageError::UsageError;
};

/// Whether a SQLSTATE names a transient failure (see DbError::retryable).
[[nodiscard]] bool is_retryable_sqlstate(std::string_view sqlstate) noexcept;

}  // namespace keymig::db
