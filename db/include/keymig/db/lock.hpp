#pragma once

// One `keymig serve` at a time per target table: a session-level advisory lock held by the
// worker's session for a whole scheduled run or request drain. Session-level, not
// transaction-level, because a run spans many transactions on other sessions; a session
// that dies releases it, which is what a crashed process should do.

#include <optional>
#include <string>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// The advisory lock on one target table, keyed on the table's OID (under a keymig-only
/// first key), so that every spelling that names the same table (`users`, `public.users`,
/// `"public"."users"`) takes the same lock. Move-only; released on destruction. Not
/// thread-safe: it uses its session as the session's owner does.
class TargetLock {
 public:
  /// Takes the lock on `table` without waiting; nullopt when another session holds it.
  /// `table` is a configured target name ("users" resolved through the search_path,
  /// "schema.users"; both case-sensitive, as check_target reads them) or, when it holds a
  /// double quote, an SQL name such as "public"."users". Throws TargetError when no such
  /// table exists or the text names none, DbError when the database fails.
  [[nodiscard]] static std::optional<TargetLock> try_acquire(Connection& conn,
                                                             const std::string& table);

  /// The OID of `table` (spelled as for try_acquire), for work that does not take the lock:
  /// serve's selected-user requests run beside a run that holds it. Throws as try_acquire.
  [[nodiscard]] static unsigned resolve(Connection& conn, const std::string& table);

  ~TargetLock();
  TargetLock(TargetLock&& other) noexcept;
  TargetLock& operator=(TargetLock&& other) noexcept;
  TargetLock(const TargetLock&) = delete;
  TargetLock& operator=(const TargetLock&) = delete;

  /// Releases the lock now. Never throws: a session that was lost (or re-opened since)
  /// released it already, which is logged, not reported.
  void release() noexcept;
  /// The locked table's OID.
  [[nodiscard]] unsigned table_oid() const noexcept { return oid_; }

 private:
  static std::optional<TargetLock> acquire(Connection& conn, const std::string& table);
  TargetLock(Connection& conn, unsigned oid, int backend_pid) noexcept
      : conn_(&conn), oid_(oid), backend_pid_(backend_pid) {}

  Connection* conn_;  // null once released or moved from
  unsigned oid_;
  int backend_pid_;  // the session that holds it: a re-opened one does not
};

}  // namespace keymig::db
