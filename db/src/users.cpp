#include "keymig/db/users.hpp"

#include <algorithm>
#include <set>

#include "catalog.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

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
    const auto oid = tx.exec_params("SELECT $1::regclass::oid::int8", rel)[0][0].as<unsigned>();
    for (const auto& name : sysadmin_columns) {
      const auto col = find_column(tx, oid, name);
      if (!col) {
        u.missing_sysadmin_columns.push_back(name);
        continue;
      }
      if (col->base_oid != kOidBool)
        throw TargetError("target: sysadmin column \"" + name + "\" of " + table.schema + "." +
                          table.name + " is " + col->type_name + " (needs boolean)");
      u.sysadmin_columns.push_back(name);
      u.q_sysadmin.push_back(tx.quote_name(name));
    }
  });
  return u;
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
