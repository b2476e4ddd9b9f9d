#pragma once

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"

namespace keymig::db {

/// What a command does to the target table: scan, verify and status read it; migrate,
/// rollback and reset-mfa also write its secret (and flag) column.
enum class Access { read, write };

/// Checks, before anything is written, that the session's role holds every privilege
/// `access` needs on the target (docs/operations.md, "Least privilege"; the grants are in
/// scripts/keymig-role.sql): USAGE on its schema and SELECT on it; for write also UPDATE
/// on the secret column and the flag column. Throws TargetError naming each privilege
/// that is missing and the role, DbError when the database fails.
void check_privileges(Connection& conn, const Table& table, Access access);

}  // namespace keymig::db
