#include "keymig/db/error.hpp"

#include <string>
#include <utility>

#include "keymig/redact.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// The first line of a server or libpq message: DETAIL and CONTEXT lines may quote row
// values, which for keymig's tables can be tokens.
std::string first_line(std::string_view text) {
  auto end = text.find('\n');
  std::string line(text.substr(0, end));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

// A server that answered and refused the session for good: waiting will not change its
// mind, so the operator hears at once instead of after every retry. Matched on the
// server's English message (libpq gives no SQLSTATE for a failed connect); a message in
// another language stays retryable, as any failure to connect was before.
struct Refusal {
  const char* text;
  const char* also;  // a second part the message must hold, or null
  const char* sqlstate;
  const char* reason;
};
constexpr Refusal kRefusals[] = {
    {"database \"", "does not exist", "3D000", "the database does not exist"},
    {"role \"", "does not exist", "28000", "the role does not exist"},
    {"password authentication failed", nullptr, "28P01", "password authentication failed"},
    {"authentication failed for user", nullptr, "28000", "authentication failed"},
    {"no pg_hba.conf entry", nullptr, "28000",
     "pg_hba.conf has no entry for this host, user and database"},
    {"permission denied for database", nullptr, "42501", "no CONNECT privilege on the database"},
    {"is not permitted to log in", nullptr, "28000", "the role may not log in"},
    {"server does not support SSL", nullptr, "08004",
     "the server does not support SSL, which sslmode requires"},
    {"invalid connection option", nullptr, "22023", "invalid connection option in the DSN"},
    {"invalid URI", nullptr, "22023", "invalid connection URI"},
    {"invalid sslmode value", nullptr, "22023", "invalid sslmode in the DSN"},
    {"invalid integer value", "for connection option", "22023",
     "a connection option in the DSN that must be a number is not one"},
    {"invalid port number", nullptr, "22023", "invalid port number in the DSN"},
    {"definition of service", "not found", "22023",
     "the service (service= or PGSERVICE) is not defined in pg_service.conf"},
};

const Refusal* refusal(std::string_view message) {
  for (const auto& r : kRefusals) {
    if (message.find(r.text) != std::string_view::npos &&
        (r.also == nullptr || message.find(r.also) != std::string_view::npos))
      return &r;
  }
  return nullptr;
}

bool lost_sqlstate(std::string_view s) {
  // 08004: the server rejected the session (keymig's refusals above), not a lost one.
  return (s.rfind("08", 0) == 0 && s != "08004") || s == "57P01" || s == "57P02" || s == "57P03";
}

// libpqxx 6.4 throws some of its exception classes without the SQLSTATE it chose them
// by: insufficient_privilege has no state, and serialization_failure and
// deadlock_detected are not even sql_errors (transaction_rollback derives from failure).
// Without this, a deadlock was not retried and a missing privilege could not be told.
std::string rollback_sqlstate(const pqxx::transaction_rollback& e) {
  if (dynamic_cast<const pqxx::serialization_failure*>(&e)) return "40001";
  if (dynamic_cast<const pqxx::deadlock_detected*>(&e)) return "40P01";
  if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e)) return "40003";
  return "40000";
}

}  // namespace

DbError::DbError(const std::string& what, std::string sqlstate, bool retryable)
    : keymig::Error(scrub_tokens(what)), sqlstate_(std::move(sqlstate)), retryable_(retryable) {}

bool DbError::connection_lost() const noexcept {
  return lost_sqlstate(sqlstate_);
}

bool DbError::refused() const noexcept {
  return sqlstate_ == kRefusedSqlstate;
}

bool is_retryable_sqlstate(std::string_view s) noexcept {
  return lost_sqlstate(s) || s == "40001" || s == "40P01" || s == "55P03";
}

void rethrow_translated(std::string_view context, bool connecting) {
  const std::string where = context.empty() ? std::string() : std::string(context) + ": ";
  try {
    throw;
  } catch (const keymig::Error&) {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    // The commit may or may not have happened: never retried blindly.
    throw DbError(where + "commit outcome unknown: " + first_line(e.what()), "08007", false);
  } catch (const pqxx::broken_connection& e) {
    const std::string message = first_line(e.what());
    if (const Refusal* r = refusal(message))
      throw DbError(where + r->reason + ": " + message, r->sqlstate, false);
    if (!connecting) throw DbError(where + "connection lost: " + message, "08006", true);
    // Nothing listens at that address (a TCP port, or a socket file that is not there):
    // libpq's own words, in any locale its messages are not translated in.
    if (message.find("Connection refused") != std::string::npos ||
        message.find("No such file or directory") != std::string::npos)
      throw DbError(where +
                        "connection refused: no server listens there (is it running, and are "
                        "the host and port right?): " +
                        message,
                    kRefusedSqlstate, true);
    throw DbError(where + "could not connect: " + message, "08006", true);
  } catch (const pqxx::sql_error& e) {
    std::string state = e.sqlstate();
    if (state.empty() && dynamic_cast<const pqxx::insufficient_privilege*>(&e)) state = "42501";
    throw DbError(where + first_line(e.what()) + (state.empty() ? "" : " (SQLSTATE " + state + ")"),
                  state, is_retryable_sqlstate(state));
  } catch (const pqxx::transaction_rollback& e) {
    const std::string state = rollback_sqlstate(e);
    throw DbError(where + first_line(e.what()) + " (SQLSTATE " + state + ")", state,
                  is_retryable_sqlstate(state));
  } catch (const pqxx::failure& e) {
    // libpqxx reports a dropped socket mid-query as a plain failure at times.
    std::string msg = first_line(e.what());
    bool lost = msg.find("connection") != std::string::npos ||
                msg.find("server closed") != std::string::npos;
    throw DbError(where + msg, lost ? "08006" : "XX000", lost);
  } catch (const pqxx::usage_error& e) {
    throw DbError(where + "libpqxx usage error: " + first_line(e.what()), "XX000", false);
  } catch (const std::exception& e) {
    throw DbError(where + first_line(e.what()), "XX000", false);
  }
}

}  // namespace keymig::db
