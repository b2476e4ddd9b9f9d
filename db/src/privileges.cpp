#include "keymig/db/privileges.hpp"

#include <string>
#include <vector>

#include "pq.hpp"

namespace keymig::db {

void check_privileges(Connection& conn, const Table& t, Access access) {
  const bool write = access == Access::write;
  std::vector<std::string> missing;
  std::string role;
  guarded(conn, "checking privileges on the target", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // has_*_privilege answers for the current role, memberships and PUBLIC included, so
    // a grant through a group role counts as the database would count it.
    const auto r = tx.exec_params(
        "SELECT current_user::text,"
        "       has_schema_privilege($1, 'USAGE'),"
        "       has_table_privilege($2::regclass, 'SELECT'),"
        "       NOT $5::boolean OR has_column_privilege($2::regclass, $3, 'UPDATE'),"
        "       NOT $5::boolean OR $4 = '' OR has_column_privilege($2::regclass, $4, 'UPDATE')",
        t.schema, t.q_table, t.secret_column, t.flag_column, write);
    const auto& row = r.at(0);
    role = row[0].as<std::string>();
    if (!row[1].as<bool>()) missing.push_back("USAGE on schema " + t.schema);
    if (!row[2].as<bool>()) missing.push_back("SELECT on table " + t.schema + "." + t.name);
    if (!row[3].as<bool>())
      missing.push_back("UPDATE on column " + t.secret_column + " of " + t.schema + "." + t.name);
    if (!row[4].as<bool>())
      missing.push_back("UPDATE on column " + t.flag_column + " of " + t.schema + "." + t.name);
  });
  if (missing.empty()) return;
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  throw TargetError("role " + role + " lacks " + list +
                    ": nothing was written; grant it (scripts/keymig-role.sql, docs/"
                    "operations.md \"Least privilege\") or run keymig as a role that has it");
}

}  // namespace keymig::db
