#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

struct UserTable;

/// One target row as read: id as text, the token (bytea: its bytes), the flag, and for
/// the admin view (PageQuery::users) the username and sysadmin columns. The token is a
/// secret: it is classified or rotated and wiped, never printed.
struct Row {
  std::string id;
  SecretString token;
  bool is_null = false;      // the secret is SQL NULL
  std::optional<bool> flag;  // nullopt: no flag column, or NULL
  std::string username;      // admin view: empty without a username column (or when NULL)
  bool sysadmin = false;     // admin view: any sysadmin column true
};

/// The rows an operator or an admin action names: exact ids and/or exact usernames, never
/// patterns. Empty: the whole target. The one selection type of every command, request and
/// run (keymig.runs.selection).
struct Selection {
  std::vector<std::string> ids;        // id values as text
  std::vector<std::string> usernames;  // values of the username column
  [[nodiscard]] bool empty() const noexcept { return ids.empty() && usernames.empty(); }
};

/// A keyset page: rows with after < id <= upto, in id order (the id's own type and
/// collation), at most `limit`. One short autocommit statement: no snapshot is held.
/// A filter with ids and usernames selects the rows matching either.
struct PageQuery {
  std::optional<std::string> after;
  std::optional<std::string> upto;
  std::int64_t limit = 2000;
  const Selection* filter = nullptr;
  /// The admin view: also read the username and sysadmin columns (users.hpp). Null for
  /// the passes, which read only what they rotate.
  const UserTable* users = nullptr;
};

/// Throws DbError (retryable ones may be repeated), TargetError when a filter needs a
/// username column the target lacks.
[[nodiscard]] std::vector<Row> read_page(Connection& conn, const Table& table,
                                         const PageQuery& query);

/// The rows with these ids (any order; missing ids are skipped).
[[nodiscard]] std::vector<Row> read_rows(Connection& conn, const Table& table,
                                         const std::vector<std::string>& ids);

/// The selected ids or usernames that match no row (reported, not an error): ids first,
/// then usernames, each in the order given. An id matches a row whose id equals it as a
/// value of the id's type ("007" matches 7), a username only exactly.
[[nodiscard]] std::vector<std::string> missing_selection(Connection& conn, const Table& table,
                                                         const Selection& filter);

/// PostgreSQL's own estimate of the table's rows (pg_class.reltuples, kept by VACUUM and
/// ANALYZE), without reading the table; -1 when it has none yet.
[[nodiscard]] std::int64_t estimated_rows(Connection& conn, const Table& table);

/// Number of rows (optionally filtered): for progress and ETA.
[[nodiscard]] std::int64_t count_rows(Connection& conn, const Table& table,
                                      const Selection* filter);

}  // namespace keymig::db
