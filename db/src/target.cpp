#include "keymig/db/target.hpp"

#include "catalog.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// Row-level security filters what a role sees without an error: every pass would count,
// rotate and verify the visible rows only, and call the table done while the hidden rows
// still need the rolling key. row_security_active asks the server's own rule (a superuser
// or BYPASSRLS role, or the owner unless FORCE ROW LEVEL SECURITY, sees every row).
void check_row_security(pqxx::work& tx, unsigned rel, const std::string& table_label) {
  auto r = tx.exec_params(
      "SELECT row_security_active(c.oid), c.relforcerowsecurity, current_user,"
      "       pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE'), c.oid::regclass::text"
      "  FROM pg_class c WHERE c.oid = $1::oid",
      rel);
  if (r.empty() || !r[0][0].as<bool>()) return;
  const bool forced = r[0][1].as<bool>();
  const std::string role = tx.quote_name(r[0][2].as<std::string>());
  const std::string owner = tx.quote_name(r[0][3].as<std::string>());
  const bool is_owner = r[0][4].as<bool>();
  const std::string q_table = r[0][5].as<std::string>();
  std::string why = is_owner ? "it owns the table, but FORCE ROW LEVEL SECURITY is set"
                             : "it is not a superuser, has no BYPASSRLS and does not own the table";
  throw TargetError("target: row-level security on " + table_label + " applies to role " + role +
                    " (" + why +
                    "), so keymig would see only the rows its policies show and call the rest "
                    "done; nothing was changed. Run keymig as a role that sees every row: ALTER "
                    "ROLE " +
                    role + " BYPASSRLS" +
                    (forced ? std::string(", or ALTER TABLE ") + q_table +
                                  " NO FORCE ROW LEVEL SECURITY and run as its owner " + owner
                            : std::string(", or run as the table's owner ") + owner));
}

// keymig pages a relation by its id and updates rows in place: only a table (plain or
// partitioned) holds rows it can do that to and that the application reads back.
void check_relkind(pqxx::work& tx, unsigned rel, const std::string& label,
                   const std::string& kind) {
  if (kind == "r" || kind == "p") return;
  const std::string what = "target: " + label + " is ";
  const std::string none = "; nothing was changed. ";
  if (kind == "v") {
    // The tables the view's rule reads: for the simple view over the users table, the one
    // to name instead.
    auto under = tx.exec_params(
        "SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_rewrite w"
        "  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid"
        "  JOIN pg_class c ON c.oid = d.refobjid"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE w.ev_class = $1::oid AND d.refobjid <> $1::oid AND c.relkind IN ('r', 'p')"
        " ORDER BY 1",
        rel);
    std::string tables;
    for (const auto& row : under) tables += (tables.empty() ? "" : ", ") + row[0].as<std::string>();
    throw TargetError(what +
                      "a view; keymig pages and updates rows by id in a table, and through a "
                      "view it cannot tell which rows it sees or what an update does" +
                      none + "Name the table under the view in keyMigration.target.table" +
                      (tables.empty() ? std::string() : " (it reads " + tables + ")"));
  }
  if (kind == "m")
    throw TargetError(what + "a materialized view: a copy that the next REFRESH overwrites" + none +
                      "Migrate the table it is made from, then refresh it");
  if (kind == "f")
    throw TargetError(what + "a foreign table: its rows live on another server" + none +
                      "Run keymig against the database that holds the table");
  const char* name = kind == "S"   ? "a sequence"
                     : kind == "i" ? "an index"
                     : kind == "I" ? "a partitioned index"
                     : kind == "c" ? "a composite type"
                     : kind == "t" ? "a TOAST table"
                                   : "not a table";
  throw TargetError(what + name + none + "Name a table in keyMigration.target.table");
}

}  // namespace

Table check_target(Connection& conn, const TargetSpec& spec) {
  return guarded(conn, "checking the target", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    if (spec.table.empty())
      throw TargetError("target: no table configured (keyMigration.target.table)");
    std::string schema, name;
    auto dot = spec.table.find('.');
    pqxx::result r;
    // Any relation kind, so that a view or a foreign table hears what it is rather than
    // "does not exist".
    if (dot == std::string::npos) {
      name = spec.table;
      // Unqualified: the session's search_path decides, as it would for the application.
      r = tx.exec_params(
          "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text,"
          "       has_schema_privilege(n.oid, 'USAGE'), current_user::text FROM pg_class c"
          "  JOIN pg_namespace n ON n.oid = c.relnamespace"
          " WHERE c.oid = to_regclass(quote_ident($1))",
          name);
    } else {
      schema = spec.table.substr(0, dot);
      name = spec.table.substr(dot + 1);
      r = tx.exec_params(
          "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text,"
          "       has_schema_privilege(n.oid, 'USAGE'), current_user::text FROM pg_class c"
          "  JOIN pg_namespace n ON n.oid = c.relnamespace"
          " WHERE n.nspname = $1 AND c.relname = $2",
          schema, name);
    }
    if (r.empty()) throw TargetError("target: table \"" + spec.table + "\" does not exist");
    check_relkind(tx, r[0][0].as<unsigned>(),
                  r[0][1].as<std::string>() + "." + r[0][2].as<std::string>(),
                  r[0][3].as<std::string>());
    // The catalog shows every schema's tables, but the first statement that names one in a
    // schema the role may not use fails mid-pass: say so here, as a target error.
    if (!r[0][4].as<bool>())
      throw TargetError("target: role " + tx.quote_name(r[0][5].as<std::string>()) +
                        " lacks USAGE on schema " + r[0][1].as<std::string>() + ", which holds " +
                        spec.table +
                        ": nothing was written; grant it (scripts/keymig-role.sql, "
                        "docs/operations.md \"Least privilege\") or run keymig as a role "
                        "that has it");
    Table t;
    auto rel = r[0][0].as<unsigned>();
    t.schema = r[0][1].as<std::string>();
    t.name = r[0][2].as<std::string>();
    const std::string table_label = t.schema + "." + t.name;
    check_row_security(tx, rel, table_label);

    auto id = find_column(tx, rel, spec.id_column);
    if (!id)
      throw TargetError("target: id column \"" + spec.id_column + "\" not found in " + table_label);
    if (!id->unique)
      throw TargetError("target: id column \"" + spec.id_column + "\" of " + table_label +
                        " is not unique (needs a primary key or a unique index on exactly it)");
    // A unique index lets any number of NULL ids through, and a row with a NULL id can be
    // neither paged (id > $last) nor updated by id: it would never be migrated.
    if (!id->not_null)
      throw TargetError("target: id column \"" + spec.id_column + "\" of " + table_label +
                        " allows NULL; rows with a NULL id cannot be paged or updated, so they "
                        "would stay under the rolling key; nothing was changed. Give them ids "
                        "and ALTER TABLE " +
                        tx.quote_name(t.schema) + "." + tx.quote_name(t.name) + " ALTER COLUMN " +
                        tx.quote_name(spec.id_column) + " SET NOT NULL");
    t.id_column = spec.id_column;
    t.id_type = id->type_name;

    auto secret = find_column(tx, rel, spec.secret_column);
    if (!secret)
      throw TargetError("target: secret column \"" + spec.secret_column + "\" not found in " +
                        table_label);
    if (secret->base_oid != kOidText && secret->base_oid != kOidVarchar &&
        secret->base_oid != kOidBytea)
      throw TargetError("target: secret column \"" + spec.secret_column + "\" of " + table_label +
                        " is " + secret->type_name + " (needs text, varchar or bytea)");
    t.secret_column = spec.secret_column;
    t.secret_is_bytea = secret->base_oid == kOidBytea;
    t.secret_max_chars = secret->max_chars;

    if (!spec.flag_column.empty()) {
      auto flag = find_column(tx, rel, spec.flag_column);
      if (!flag)
        throw TargetError("target: flag column \"" + spec.flag_column + "\" not found in " +
                          table_label);
      if (flag->base_oid != kOidBool)
        throw TargetError("target: flag column \"" + spec.flag_column + "\" of " + table_label +
                          " is " + flag->type_name + " (needs boolean)");
      t.flag_column = spec.flag_column;
    }
    if (!spec.filter_column.empty()) {
      auto filter = find_column(tx, rel, spec.filter_column);
      if (!filter)
        throw TargetError("target: onlyWhere column \"" + spec.filter_column + "\" not found in " +
                          table_label);
      if (filter->base_oid != kOidBool)
        throw TargetError("target: onlyWhere column \"" + spec.filter_column + "\" of " +
                          table_label + " is " + filter->type_name + " (needs boolean)");
      t.filter_column = spec.filter_column;
      t.filter_equals = spec.filter_equals;
    }
    // The username column is optional: only selecting by username needs it.
    if (!spec.username_column.empty() && find_column(tx, rel, spec.username_column))
      t.username_column = spec.username_column;

    t.q_table = tx.quote_name(t.schema) + "." + tx.quote_name(t.name);
    t.q_id = tx.quote_name(t.id_column);
    t.q_secret = tx.quote_name(t.secret_column);
    if (t.has_flag()) t.q_flag = tx.quote_name(t.flag_column);
    if (!t.username_column.empty()) t.q_username = tx.quote_name(t.username_column);
    if (!t.filter_column.empty()) t.q_filter = tx.quote_name(t.filter_column);
    tx.commit();
    return t;
  });
}

}  // namespace keymig::db
