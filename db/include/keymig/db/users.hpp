#pragma once

// The MFA administration view of the target table: users with their username and
// sysadmin columns, and the journaled break-glass that clears some users' MFA.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

/// A checked target plus the columns the admin view needs besides it.
struct UserTable {
  Table table;
  std::vector<std::string> sysadmin_columns;          // present and boolean
  std::vector<std::string> missing_sysadmin_columns;  // configured but not in the table
  std::vector<std::string> q_sysadmin;                // quoted, ready to paste
};

/// Resolves the sysadmin columns of a checked target. A configured column that the table
/// lacks is reported in missing_sysadmin_columns (a warning, not an error: the default
/// list names Django's columns); one that exists but is not boolean throws TargetError.
/// Throws DbError.
[[nodiscard]] UserTable check_user_table(Connection& conn, const Table& table,
                                         const std::vector<std::string>& sysadmin_columns);

/// One user as the admin view sees it. The token is a secret: it is classified and wiped,
/// never printed.
struct UserRow {
  std::string id;            // as text
  std::string username;      // empty without a username column (or when NULL)
  SecretString token;        // bytea columns: their bytes
  bool is_null = false;      // the secret is SQL NULL
  std::optional<bool> flag;  // nullopt: no flag column, or NULL
  bool sysadmin = false;     // any sysadmin column true
};

/// A keyset page: users with id > after in id order (the id's own type), at most limit.
/// One short autocommit statement: no snapshot is held across pages. Throws DbError.
[[nodiscard]] std::vector<UserRow> read_user_page(Connection& conn, const UserTable& users,
                                                  const std::optional<std::string>& after,
                                                  std::int64_t limit);

/// The users with these ids or usernames, in id order. Exact matches only (no patterns).
/// Ids that are not valid values of the id's type match nothing. Throws DbError;
/// TargetError when usernames are given and the target has no username column.
[[nodiscard]] std::vector<UserRow> read_selected_users(Connection& conn, const UserTable& users,
                                                       const std::vector<std::string>& ids,
                                                       const std::vector<std::string>& usernames);

/// What a break-glass reset records in keymig.runs (kind reset_mfa).
struct ResetRecord {
  std::string run_id;
  std::string active_fingerprint;
  std::vector<std::string> rolling_fingerprints;
  std::string selection_json;  // {"ids": [...]} or {"usernames": [...]}
  std::string host;
  int pid = 0;
};

/// One cleared user (no token: the journal keeps it).
struct ClearedUser {
  std::string id;
  std::string username;
  bool had_secret = false;
  std::optional<bool> old_flag;
};

/// In one transaction: locks exactly the rows with these ids, fails unless every one
/// exists, records the run (state completed, journal on), journals each row's token and
/// flag (new_token NULL, new_flag false) and clears secret and flag. All or nothing.
/// Needs ensure_schema() first. Throws TargetError (exit 2) when an id no longer exists,
/// DbError when the database fails; in both cases nothing was changed.
[[nodiscard]] std::vector<ClearedUser> clear_mfa(Connection& conn, const UserTable& users,
                                                 const std::vector<std::string>& ids,
                                                 const ResetRecord& record);

}  // namespace keymig::db
