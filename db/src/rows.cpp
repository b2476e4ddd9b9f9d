#include "keymig/db/rows.hpp"

#include <cstdint>

#include "keymig/db/users.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// Columns are qualified with the alias "t": an unqualified ORDER BY id would sort by
// the output column id::text (text order), not by the id. The admin view's columns come
// last, and only when asked for: the passes read what they rotate and no more.
std::string select_list(const Table& t, const UserTable* users = nullptr) {
  std::string list =
      "t." + t.q_id + "::text AS keymig_row_id, t." + t.q_secret + " AS keymig_secret, " +
      (t.has_flag() ? "t." + t.q_flag : std::string("NULL::boolean")) + " AS keymig_flag";
  if (!users) return list;
  std::string admin;
  for (const auto& col : users->q_sysadmin)
    admin += (admin.empty() ? "" : " OR ") + std::string("coalesce(t.") + col + ", false)";
  return list + ", " + (t.q_username.empty() ? "NULL::text" : "t." + t.q_username + "::text") +
         " AS keymig_username, (" + (admin.empty() ? "false" : admin) + ") AS keymig_sysadmin";
}

Row to_row(const pqxx::row& r, const Table& t, bool with_user = false) {
  Row row;
  row.id = r[0].as<std::string>();
  if (r[1].is_null()) {
    row.is_null = true;
  } else if (t.secret_is_bytea) {
    pqxx::binarystring bytes(r[1]);
    row.token = SecretString(std::string_view(bytes.get(), bytes.size()));
  } else {
    row.token = SecretString(std::string_view(r[1].c_str(), r[1].size()));
  }
  row.flag = opt_bool(r[2]);
  if (with_user) {
    if (!r[3].is_null()) row.username = r[3].as<std::string>();
    row.sysadmin = r[4].as<bool>();
  }
  return row;
}

// A selection value that does not parse as the id type is the operator's mistake.
[[noreturn]] void rethrow_selection(const Table& t, std::string_view context) {
  try {
    rethrow_translated(context);
  } catch (const DbError& e) {
    if (e.sqlstate() == "22P02" || e.sqlstate() == "22003" || e.sqlstate() == "22007" ||
        e.sqlstate() == "22008")
      throw TargetError("selection: an id is not a valid " + t.id_type + " (" + e.what() + ")");
    throw;
  }
}

void require_username_column(const Table& t) {
  if (t.q_username.empty())
    throw TargetError(
        "target: selecting by username needs keyMigration.target.usernameColumn "
        "naming an existing column of " +
        t.schema + "." + t.name);
}

// " AND <id> = ANY(...)", " AND <username> = ANY(...)", or both ORed, with the next
// parameter numbers; the lists are appended to `params`.
std::string filter_clause(const Table& t, const Selection& f, std::vector<std::string>& params) {
  std::vector<std::string> terms;
  if (!f.ids.empty()) {
    params.push_back(text_array(f.ids));
    terms.push_back("t." + t.q_id + " = ANY($" + std::to_string(params.size()) +
                    "::text[]::" + t.id_type + "[])");
  }
  if (!f.usernames.empty()) {
    require_username_column(t);
    params.push_back(text_array(f.usernames));
    terms.push_back("t." + t.q_username + " = ANY($" + std::to_string(params.size()) + "::text[])");
  }
  if (terms.size() == 1) return " AND " + terms[0];
  return " AND (" + terms[0] + " OR " + terms[1] + ")";
}

}  // namespace

std::vector<Row> read_page(Connection& conn, const Table& t, const PageQuery& q) {
  std::string sql = "SELECT " + select_list(t, q.users) + " FROM " + t.q_table +
                    " AS t WHERE true" + t.row_filter_sql();
  std::vector<std::string> params;
  // Keyset bounds are compared in the id's own type: the parameter takes the column's type.
  if (q.after) {
    params.push_back(*q.after);
    sql += " AND t." + t.q_id + " > $" + std::to_string(params.size()) + "::" + t.id_type;
  }
  if (q.upto) {
    params.push_back(*q.upto);
    sql += " AND t." + t.q_id + " <= $" + std::to_string(params.size()) + "::" + t.id_type;
  }
  if (q.filter && !q.filter->empty()) sql += filter_clause(t, *q.filter, params);
  sql += " ORDER BY t." + t.q_id + " LIMIT " + std::to_string(q.limit);
  try {
    return guarded(conn, "reading a page", [&](pqxx::connection& c) {
      // A whole-table page is prepared: its generic plan is the id index walk, and
      // parsing and planning it for every page cost as much as reading a short one. A
      // selection keeps one plan per page, made for the ids or names it holds.
      const bool prepare = !q.filter || q.filter->empty();
      const std::string statement = prepare ? prepared(conn.impl(), sql) : std::string();
      pqxx::nontransaction tx(c);
      auto r = prepare ? tx.exec_prepared(statement, pqxx::prepare::make_dynamic_params(params))
                       : tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
      std::vector<Row> rows;
      rows.reserve(r.size());
      for (const auto& row : r) rows.push_back(to_row(row, t, q.users != nullptr));
      return rows;
    });
  } catch (const DbError&) {
    rethrow_selection(t, "");
  }
}

std::vector<Row> read_rows(Connection& conn, const Table& t, const std::vector<std::string>& ids) {
  if (ids.empty()) return {};
  std::string sql = "SELECT " + select_list(t) + " FROM " + t.q_table + " AS t WHERE t." + t.q_id +
                    " = ANY($1::text[]::" + t.id_type + "[])" + t.row_filter_sql() +
                    " ORDER BY t." + t.q_id;
  return guarded(conn, "re-reading rows", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, text_array(ids));
    std::vector<Row> rows;
    rows.reserve(r.size());
    for (const auto& row : r) rows.push_back(to_row(row, t));
    return rows;
  });
}

std::vector<std::string> missing_selection(Connection& conn, const Table& t, const Selection& f) {
  if (!f.usernames.empty()) require_username_column(t);
  std::vector<std::string> out;
  auto missing = [&](const std::vector<std::string>& values, const std::string& col,
                     const std::string& type) {
    if (values.empty()) return;
    const std::string sql =
        "SELECT x FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) WHERE NOT EXISTS "
        "(SELECT 1 FROM " +
        t.q_table + " WHERE " + col + " = u.x::" + type + ") ORDER BY n";
    guarded(conn, "checking the selection", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      for (const auto& row : tx.exec_params(sql, text_array(values)))
        out.push_back(row[0].as<std::string>());
    });
  };
  try {
    missing(f.ids, t.q_id, t.id_type);
    missing(f.usernames, t.q_username, "text");
  } catch (const DbError&) {
    rethrow_selection(t, "");
  }
  return out;
}

std::int64_t estimated_rows(Connection& conn, const Table& t) {
  return guarded(conn, "estimating the table's size", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    const auto r = tx.exec_params("SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass",
                                  t.q_table);
    return r.empty() || r[0][0].is_null() ? std::int64_t{-1} : r[0][0].as<std::int64_t>();
  });
}

std::int64_t count_rows(Connection& conn, const Table& t, const Selection* f) {
  std::string sql = "SELECT count(*) FROM " + t.q_table + " AS t WHERE true" + t.row_filter_sql();
  std::vector<std::string> params;
  if (f && !f->empty()) sql += filter_clause(t, *f, params);
  return guarded(conn, "counting rows", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params))[0][0].as<std::int64_t>();
  });
}

}  // namespace keymig::db
