#include "keymig/db/acknowledged.hpp"

#include "pq.hpp"

namespace keymig::db {

std::unordered_set<std::string> acknowledged_ids(Connection& conn, const std::string& target) {
  return guarded(conn, "reading the acknowledged rows of " + target, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    std::unordered_set<std::string> ids;
    if (tx.exec("SELECT to_regclass('keymig.acknowledged')")[0][0].is_null()) return ids;
    for (const auto& row :
         tx.exec_params("SELECT row_id FROM keymig.acknowledged WHERE target = $1", target))
      ids.insert(row[0].as<std::string>());
    return ids;
  });
}

std::vector<AcknowledgedRow> list_acknowledged(Connection& conn, const std::string& target) {
  return guarded(conn, "listing the acknowledged rows of " + target, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    std::vector<AcknowledgedRow> out;
    // Ids in their natural order where they are numbers: row 10 after row 9.
    auto rows = tx.exec_params(
        "SELECT row_id, reason, acknowledged_by, acknowledged_at::text"
        " FROM keymig.acknowledged WHERE target = $1"
        " ORDER BY length(row_id), row_id",
        target);
    for (const auto& row : rows)
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                     row[3].as<std::string>()});
    return out;
  });
}

std::int64_t add_acknowledged(Connection& conn, const std::string& target,
                              const std::vector<std::string>& ids, const std::string& reason,
                              const std::string& by) {
  return guarded(conn, "acknowledging rows of " + target, [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "INSERT INTO keymig.acknowledged (target, row_id, reason, acknowledged_by,"
        " acknowledged_at)"
        " SELECT $1, id, $3, $4, now() FROM unnest($2::text[]) AS u(id)"
        " ON CONFLICT (target, row_id) DO UPDATE SET reason = excluded.reason,"
        " acknowledged_by = excluded.acknowledged_by, acknowledged_at = excluded.acknowledged_at",
        target, text_array(ids), reason, by);
    tx.commit();
    return static_cast<std::int64_t>(r.affected_rows());
  });
}

std::vector<std::string> remove_acknowledged(Connection& conn, const std::string& target,
                                             const std::vector<std::string>& ids) {
  return guarded(conn, "forgetting acknowledged rows of " + target, [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "DELETE FROM keymig.acknowledged WHERE target = $1 AND row_id = ANY($2::text[])"
        " RETURNING row_id",
        target, text_array(ids));
    tx.commit();
    std::vector<std::string> out;
    for (const auto& row : r) out.push_back(row[0].as<std::string>());
    return out;
  });
}

}  // namespace keymig::db
