#include "keymig/db/lock.hpp"

#include <utility>

#include "keymig/log.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// The first key of the two-int advisory lock form ('kmig'): the second is the table's
// OID, so keymig's locks cannot meet an application's lock on the same OID by accident
// unless it chose the same pair. The one-bigint form (ensure_schema) is a separate space.
constexpr int kLockSpace = 0x6b6d6967;

std::string quote_identifier(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

// What to_regclass should parse. A configured name is names, not SQL (check_target reads
// it so): quoting keeps its case and lets the server do the search_path lookup.
std::string regclass_text(const std::string& table) {
  if (table.find('"') != std::string::npos) return table;
  const auto dot = table.find('.');
  if (dot == std::string::npos) return quote_identifier(table);
  return quote_identifier(table.substr(0, dot)) + "." + quote_identifier(table.substr(dot + 1));
}

}  // namespace

std::optional<TargetLock> TargetLock::try_acquire(Connection& conn, const std::string& table) {
  if (table.empty()) throw TargetError("target: no table configured (keyMigration.target.table)");
  try {
    return acquire(conn, table);
  } catch (const DbError& e) {
    // to_regclass rejects what is not a name at all ("a.b.c.d", an unclosed quote).
    if (e.sqlstate().rfind("42", 0) != 0 && e.sqlstate().rfind("22", 0) != 0) throw;
    throw TargetError("target: \"" + table + "\" is not a table name: " + e.what());
  }
}

unsigned TargetLock::resolve(Connection& conn, const std::string& table) {
  if (table.empty()) throw TargetError("target: no table configured (keyMigration.target.table)");
  try {
    return guarded(conn, "resolving the target", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      auto r = tx.exec_params("SELECT to_regclass($1)::oid::int8", regclass_text(table));
      if (r.empty() || r[0][0].is_null())
        throw TargetError("target: table \"" + table + "\" does not exist");
      return r[0][0].as<unsigned>();
    });
  } catch (const DbError& e) {
    if (e.sqlstate().rfind("42", 0) != 0 && e.sqlstate().rfind("22", 0) != 0) throw;
    throw TargetError("target: \"" + table + "\" is not a table name: " + e.what());
  }
}

std::optional<TargetLock> TargetLock::acquire(Connection& conn, const std::string& table) {
  auto [oid, locked, pid] = guarded(conn, "taking the target lock", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // to_regclass, not ::regclass: a missing table is NULL here, not an error that
    // hides which table was meant.
    auto r = tx.exec_params(
        "SELECT t::oid::int8, CASE WHEN t IS NULL THEN false"
        "       ELSE pg_try_advisory_lock($2, t::oid::int4) END"
        "  FROM (SELECT to_regclass($1) AS t) s",
        regclass_text(table), kLockSpace);
    if (r.empty() || r[0][0].is_null())
      throw TargetError("target: table \"" + table + "\" does not exist");
    return std::make_tuple(r[0][0].as<unsigned>(), r[0][1].as<bool>(), c.backendpid());
  });
  if (!locked) return std::nullopt;
  return TargetLock(conn, oid, pid);
}

TargetLock::~TargetLock() {
  release();
}

TargetLock::TargetLock(TargetLock&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      oid_(other.oid_),
      backend_pid_(other.backend_pid_) {}

TargetLock& TargetLock::operator=(TargetLock&& other) noexcept {
  if (this != &other) {
    release();
    conn_ = std::exchange(other.conn_, nullptr);
    oid_ = other.oid_;
    backend_pid_ = other.backend_pid_;
  }
  return *this;
}

void TargetLock::release() noexcept {
  Connection* conn = std::exchange(conn_, nullptr);
  if (!conn) return;
  try {
    guarded(*conn, "releasing the target lock", [&](pqxx::connection& c) {
      // Unlocking on another session would only earn a server WARNING: the lock went
      // with the session that held it.
      if (c.backendpid() != backend_pid_) {
        KEYMIG_LOG(info, "db", "target_lock_gone_with_session", {"table_oid", oid_});
        return;
      }
      // Reading first finds out a session the server ended (its FATAL and end of file are
      // waiting on the socket): libpqxx 6.4 then throws broken_connection, where sending
      // the unlock on it would leak the statement's PGresult in libpqxx.
      c.get_notifs();
      pqxx::nontransaction tx(c);
      tx.exec_params("SELECT pg_advisory_unlock($1, $2::oid::int4)", kLockSpace, oid_);
    });
  } catch (const std::exception& e) {
    // A lost session released the lock already.
    KEYMIG_LOG(info, "db", "target_lock_gone_with_session", {"table_oid", oid_},
               {"error", e.what()});
  }
}

}  // namespace keymig::db
