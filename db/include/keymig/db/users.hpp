#pragma once

// The MFA administration view of the target table: its username and sysadmin columns
// (read as db::Row's user fields by read_page with PageQuery::users), and the journaled
// break-glass that clears some users' MFA.

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
