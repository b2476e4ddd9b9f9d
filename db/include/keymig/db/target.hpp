#pragma once

#include <string>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// The table and columns as configured (names, not SQL: the library quotes them).
struct TargetSpec {
  std::string table;            // "users" or "schema.users"; case-sensitive
  std::string id_column;        // unique, not null, orderable
  std::string secret_column;    // text, varchar or bytea
  std::string flag_column;      // optional boolean; empty: none
  std::string username_column;  // optional; needed only to select by username
  std::string filter_column;    // optional boolean: only rows where it is filter_equals
  bool filter_equals = true;
};

/// A target that passed check_target: resolved names, types and quoted SQL fragments.
struct Table {
  std::string schema;
  std::string name;
  std::string id_column;
  std::string secret_column;
  std::string flag_column;      // empty: none
  std::string username_column;  // empty: none, or not present in the table
  std::string filter_column;    // empty: every row is the target's
  bool filter_equals = true;
  std::string id_type;          // SQL type name from the catalog, e.g. "bigint", "uuid"
  bool secret_is_bytea = false;
  int secret_max_chars = -1;  // varchar(n): n; else -1 (no limit)

  // Quoted identifiers, ready to paste into SQL.
  std::string q_table;  // "schema"."name"
  std::string q_id;
  std::string q_secret;
  std::string q_flag;
  std::string q_username;
  std::string q_filter;

  [[nodiscard]] bool has_flag() const noexcept { return !flag_column.empty(); }
  /// " AND t.<filter> IS TRUE" (or IS FALSE) for a table aliased t; "" with no filter.
  /// Rows outside it are not the target's: never read, counted or written.
  [[nodiscard]] std::string row_filter_sql() const {
    if (q_filter.empty()) return {};
    return " AND t." + q_filter + (filter_equals ? " IS TRUE" : " IS FALSE");
  }
  /// "schema.table.secret_column": the run's target label.
  [[nodiscard]] std::string label() const { return schema + "." + name + "." + secret_column; }
};

/// Checks the target before anything touches it: the table exists, the id column is
/// unique (primary key or unique index over exactly it) and not null, the secret column
/// is text/varchar/bytea, the flag column (if named) is boolean. Reads only.
/// Throws TargetError naming what is wrong, DbError when the database fails.
[[nodiscard]] Table check_target(Connection& conn, const TargetSpec& spec);

}  // namespace keymig::db
