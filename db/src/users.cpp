#include "keymig/db/users.hpp"

#include <algorithm>
#include <set>

#include "pq.hpp"

namespace keymig::db {

namespace {

constexpr unsigned kOidBool = 16;

std::string select_list(const UserTable& u) {
  const Table& t = u.table;
  std::string admin = "false";
  if (!u.q_sysadmin.empty()) {
    admin.clear();
    for (const auto& col : u.q_sysadmin) {
      if (!admin.empty()) admin += " OR ";
      admin += "coalesce(" + col + ", false)";
    }
  }
  return t.q_id + "::text, " + (t.q_username.empty() ? "NULL::text" : t.q_username + "::text") +
         ", " + t.q_secret + ", " + (t.has_flag() ? t.q_flag : "NULL::boolean") + ", (" + admin +
         ")";
}

UserRow to_user(const pqxx::row& r, const Table& t) {
  UserRow u;
  u.id = r[0].as<std::string>();
  if (!r[1].is_null()) u.username = r[1].as<std::string>();
  if (r[2].is_null()) {
    u.is_null = true;
  } else if (t.secret_is_bytea) {
    pqxx::binarystring bytes(r[2]);
    u.token = SecretString(std::string_view(bytes.get(), bytes.size()));
  } else {
    u.token = SecretString(std::string_view(r[2].c_str(), r[2].size()));
  }
  u.flag = opt_bool(r[3]);
  u.sysadmin = r[4].as<bool>();
  return u;
}

std::vector<UserRow> to_users(const pqxx::result& r, const Table& t) {
  std::vector<UserRow> out;
  out.reserve(r.size());
  for (const auto& row : r) out.push_back(to_user(row, t));
  return out;
}

// A selected id that does not parse as the id type is the operator's mistake, not ours.
bool is_bad_value(const DbError& e) {
  return e.sqlstate() == "22P02" || e.sqlstate() == "22003" || e.sqlstate() == "22007" ||
         e.sqlstate() == "22008";
}

}  // namespace

UserTable check_user_table(Connection& conn, const Table& table,
                           const std::vector<std::string>& sysadmin_columns) {
  UserTable u;
  u.table = table;
  guarded(conn, "checking the sysadmin columns", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    const std::string rel = tx.quote_name(table.schema) + "." + tx.quote_name(table.name);
    for (const auto& name : sysadmin_columns) {
      auto r = tx.exec_params(
          "SELECT coalesce(nullif(t.typbasetype, 0), a.atttypid)::int8, format_type(a.atttypid, "
          "NULL)"
          "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
          " WHERE a.attrelid = $1::regclass AND a.attname = $2 AND a.attnum > 0"
          "   AND NOT a.attisdropped",
          rel, name);
      if (r.empty()) {
        u.missing_sysadmin_columns.push_back(name);
        continue;
      }
      if (r[0][0].as<unsigned>() != kOidBool)
        throw TargetError("target: sysadmin column \"" + name + "\" of " + table.schema + "." +
                          table.name + " is " + r[0][1].as<std::string>() + " (needs boolean)");
      u.sysadmin_columns.push_back(name);
      u.q_sysadmin.push_back(tx.quote_name(name));
    }
  });
  return u;
}

std::vector<UserRow> read_user_page(Connection& conn, const UserTable& u,
                                    const std::optional<std::string>& after, std::int64_t limit) {
  const Table& t = u.table;
  // Qualified: a bare ORDER BY "id" would sort by the output column "id" (the id as text).
  std::string sql = "SELECT " + select_list(u) + " FROM " + t.q_table + " AS u";
  // The bound takes the column's own type, so the order is the id's order, not text order.
  if (after) sql += " WHERE u." + t.q_id + " > $1::" + t.id_type;
  sql += " ORDER BY u." + t.q_id + " LIMIT " + std::to_string(limit);
  return guarded(conn, "reading users", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = after ? tx.exec_params(sql, *after) : tx.exec(sql);
    return to_users(r, t);
  });
}

std::vector<UserRow> read_selected_users(Connection& conn, const UserTable& u,
                                         const std::vector<std::string>& ids,
                                         const std::vector<std::string>& usernames) {
  const Table& t = u.table;
  if (ids.empty() && usernames.empty()) return {};
  if (!usernames.empty() && t.q_username.empty())
    throw TargetError(
        "target: selecting by username needs keyMigration.target.usernameColumn "
        "naming an existing column of " +
        t.schema + "." + t.name);
  std::string sql = "SELECT " + select_list(u) + " FROM " + t.q_table + " AS u WHERE false";
  std::vector<std::string> params;
  if (!ids.empty()) {
    params.push_back(text_array(ids));
    sql += " OR u." + t.q_id + " = ANY($" + std::to_string(params.size()) +
           "::text[]::" + t.id_type + "[])";
  }
  if (!usernames.empty()) {
    params.push_back(text_array(usernames));
    sql += " OR " + t.q_username + "::text = ANY($" + std::to_string(params.size()) + "::text[])";
  }
  sql += " ORDER BY u." + t.q_id;  // qualified: the input column, not the text output
  try {
    return guarded(conn, "reading the selected users", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return to_users(tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params)), t);
    });
  } catch (const DbError& e) {
    if (is_bad_value(e))
      throw TargetError("selection: an id is not a valid " + t.id_type + " (" + e.what() + ")");
    throw;
  }
}

std::vector<ClearedUser> clear_mfa(Connection& conn, const UserTable& u,
                                   const std::vector<std::string>& ids_in,
                                   const ResetRecord& record) {
  const Table& t = u.table;
  std::vector<std::string> ids = ids_in;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  if (ids.empty()) throw TargetError("reset-mfa: no users selected");

  const std::string id_array = "$1::text[]::" + t.id_type + "[]";
  const std::string username = t.q_username.empty() ? "NULL::text" : "t." + t.q_username + "::text";
  const std::string flag = t.has_flag() ? "t." + t.q_flag : "NULL::boolean";
  // The journal keeps a secret as its text (a bytea secret as its UTF-8 text, as migrate
  // does), in the journal's form: a tag byte, then the text.
  const std::string secret_text = "keymig.journal_bytes(" +
                                  (t.secret_is_bytea ? "convert_from(t." + t.q_secret + ", 'UTF8')"
                                                     : "t." + t.q_secret + "::text") +
                                  ")";

  const std::string lock_sql = "SELECT t." + t.q_id + "::text, " + username + ", t." + t.q_secret +
                               " IS NOT NULL, " + flag + " FROM " + t.q_table + " AS t WHERE t." +
                               t.q_id + " = ANY(" + id_array + ") ORDER BY t." + t.q_id +
                               " FOR UPDATE";
  const std::string run_sql =
      "INSERT INTO keymig.runs (run_id, kind, target, state, active_fingerprint,"
      " rolling_fingerprints, selection, journal, host, pid, started_at, updated_at, finished_at)"
      " VALUES ($1, 'reset_mfa', $2, 'completed', $3, $4::text[], $5::jsonb, true, $6, $7,"
      " now(), now(), now())";
  const std::string journal_sql =
      "INSERT INTO keymig.journal (run_id, row_id, old_token, new_token, old_flag, new_flag)"
      " SELECT $2, t." +
      t.q_id + "::text, " + secret_text + ", NULL, " + flag + ", " +
      (t.has_flag() ? "false" : "NULL::boolean") + " FROM " + t.q_table + " AS t WHERE t." +
      t.q_id + " = ANY(" + id_array + ")";
  const std::string clear_sql = "UPDATE " + t.q_table + " AS t SET " + t.q_secret + " = NULL" +
                                (t.has_flag() ? ", " + t.q_flag + " = false" : std::string()) +
                                " WHERE t." + t.q_id + " = ANY(" + id_array + ")";
  const std::string id_param = text_array(ids);

  try {
    return guarded(conn, "clearing MFA", [&](pqxx::connection& c) {
      pqxx::work tx(c);
      auto locked = tx.exec_params(lock_sql, id_param);
      if (locked.size() != ids.size()) {
        std::set<std::string> found;
        for (const auto& row : locked) found.insert(row[0].as<std::string>());
        std::string missing;
        for (const auto& id : ids) {
          // Text forms may differ from the input ("007" vs "7"): report what did not match.
          if (found.count(id)) continue;
          if (!missing.empty()) missing += ", ";
          missing += id;
        }
        throw TargetError("reset-mfa: " + std::to_string(ids.size() - locked.size()) +
                          " selected user(s) not found (" + missing + "); nothing changed");
      }
      std::vector<ClearedUser> out;
      out.reserve(locked.size());
      for (const auto& row : locked) {
        ClearedUser c;
        c.id = row[0].as<std::string>();
        if (!row[1].is_null()) c.username = row[1].as<std::string>();
        c.had_secret = row[2].as<bool>();
        c.old_flag = opt_bool(row[3]);
        out.push_back(std::move(c));
      }
      tx.exec_params(run_sql, record.run_id, t.label(), record.active_fingerprint,
                     text_array(record.rolling_fingerprints), record.selection_json, record.host,
                     record.pid);
      tx.exec_params(journal_sql, id_param, record.run_id);
      auto cleared = tx.exec_params(clear_sql, id_param);
      if (cleared.affected_rows() != locked.size())
        throw DbError("clearing MFA: " + std::to_string(cleared.affected_rows()) +
                          " rows updated, expected " + std::to_string(locked.size()),
                      "XX000", false);
      tx.commit();
      return out;
    });
  } catch (const DbError& e) {
    if (is_bad_value(e))
      throw TargetError("selection: an id is not a valid " + t.id_type + " (" + e.what() + ")");
    throw;
  }
}

}  // namespace keymig::db
