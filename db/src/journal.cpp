#include "keymig/db/journal.hpp"

#include <algorithm>
#include <cstdint>

#include "journal_codec.hpp"
#include "keymig/base64.hpp"
#include "pq.hpp"

namespace keymig::db {

void put_journal_element(std::string& out, std::string_view token) {
  const std::size_t at = out.size();  // the element's length goes here once it is known
  const std::size_t room = token.size() / 4 * 3;
  out.resize(at + 4 + room);  // within the reservation: no reallocation
  std::size_t len = 0;
  auto* raw = reinterpret_cast<std::uint8_t*>(&out[at + 4]);
  if (!decode_canonical_base64url(token, raw, len) || len == 0 || raw[0] != 0x80) {
    secure_wipe(raw, room);
    out.resize(at + 4);
    out.push_back('\0');
    out.append(token);
    len = 1 + token.size();
  } else {
    out.resize(at + 4 + len);
  }
  set_u32(out, at, static_cast<std::uint32_t>(len));
}

std::vector<JournalEntry> read_journal(Connection& conn, const std::string& run_id,
                                       const std::optional<std::string>& after,
                                       std::int64_t limit) {
  std::string sql =
      "SELECT row_id, keymig.journal_text(old_token), keymig.journal_text(new_token), old_flag,"
      " new_flag FROM keymig.journal"
      " WHERE run_id = $1 AND ($2::text IS NULL OR row_id > $2::text) ORDER BY row_id LIMIT " +
      std::to_string(limit);
  return guarded(conn, "reading the journal of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, run_id, opt_param(after));
    std::vector<JournalEntry> out;
    out.reserve(r.size());
    for (const auto& row : r) {
      JournalEntry e;
      e.row_id = row[0].as<std::string>();
      e.old_null = row[1].is_null();
      if (!e.old_null) e.old_token = SecretString(std::string_view(row[1].c_str(), row[1].size()));
      e.new_null = row[2].is_null();
      if (!e.new_null) e.new_token = SecretString(std::string_view(row[2].c_str(), row[2].size()));
      e.old_flag = opt_bool(row[3]);
      e.new_flag = opt_bool(row[4]);
      out.push_back(std::move(e));
    }
    return out;
  });
}

RollbackPage rollback_page(Connection& conn, const Table& t, const std::string& run_id,
                           const std::optional<std::string>& after, std::int64_t limit) {
  std::string sql =
      "WITH page AS (SELECT row_id, keymig.journal_text(old_token) AS old_token,"
      "   keymig.journal_text(new_token) AS new_token, old_flag FROM keymig.journal"
      "   WHERE run_id = $1 AND ($2::text IS NULL OR row_id > $2::text) ORDER BY row_id LIMIT " +
      std::to_string(limit) + "), upd AS (UPDATE " + t.q_table + " AS t SET " + t.q_secret + " = " +
      secret_value(t, "j.old_token") +
      (t.has_flag() ? ", " + t.q_flag + " = coalesce(j.old_flag, t." + t.q_flag + ")"
                    : std::string()) +
      "   FROM page j WHERE t." + t.q_id + " = j.row_id::" + t.id_type +
      // CAS: only where the row still holds what keymig wrote (a cleared secret may read
      // as NULL or ''), or already holds the old token (a repeated rollback).
      "    AND (t." + t.q_secret + " IS NOT DISTINCT FROM " + secret_value(t, "j.new_token") +
      "         OR (j.new_token IS NULL AND t." + t.q_secret +
      " = '')"
      "         OR t." +
      t.q_secret + " IS NOT DISTINCT FROM " + secret_value(t, "j.old_token") +
      ")"
      "  RETURNING j.row_id)"
      " SELECT p.row_id, u.row_id IS NOT NULL FROM page p LEFT JOIN upd u USING (row_id)"
      " ORDER BY p.row_id";
  return guarded(conn, "rolling back run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, run_id, opt_param(after));
    RollbackPage page;
    page.rows = static_cast<std::int64_t>(r.size());
    for (const auto& row : r) {
      std::string id = row[0].as<std::string>();
      (row[1].as<bool>() ? page.restored : page.left).push_back(id);
      page.last = std::move(id);
    }
    return page;
  });
}

std::int64_t delete_journal(Connection& conn, const std::string& run_id) {
  return guarded(conn, "deleting the journal of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return static_cast<std::int64_t>(
        tx.exec_params("DELETE FROM keymig.journal WHERE run_id = $1", run_id).affected_rows());
  });
}

std::pair<std::int64_t, std::int64_t> purge_journals(Connection& conn,
                                                     std::chrono::seconds older_than,
                                                     const PurgeScope& scope) {
  return guarded(conn, "purging journals", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // Age is the run's last activity. A run still `running` keeps its journal however old
    // (a crashed migrate resumes, and rollback needs all of it); what is purged is marked,
    // so that rollback refuses instead of restoring nothing and calling it done.
    auto r = tx.exec_params(
        "WITH r AS (SELECT run_id FROM keymig.runs WHERE state <> 'running'"
        "   AND NOT ($3 AND state = 'failed') AND ($2::text IS NULL OR target = $2::text)"
        "   AND ($4::text IS NULL OR run_id = $4::text)"
        "   AND coalesce(finished_at, updated_at, started_at) < now() - make_interval(secs => "
        "$1)),"
        " d AS (DELETE FROM keymig.journal j USING r WHERE j.run_id = r.run_id RETURNING j.run_id),"
        " m AS (UPDATE keymig.runs SET journal_purged_at = now()"
        "   WHERE run_id IN (SELECT run_id FROM d) RETURNING run_id)"
        " SELECT count(DISTINCT run_id), count(*) FROM d",
        static_cast<double>(older_than.count()), opt_param(scope.target), scope.keep_failed,
        opt_param(scope.run_id));
    return std::make_pair(r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>());
  });
}

JournalStats journal_stats(Connection& conn, const std::string& target) {
  return guarded(conn, "reading the journal's size", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    // One count per run by the journal's key, not a scan of the whole journal: the
    // runs of a target are few, their journals may be large.
    auto r = tx.exec_params(
        "SELECT count(*), coalesce(sum(n), 0)::bigint, coalesce(max(age), 0)::float8 FROM"
        " (SELECT (SELECT count(*) FROM keymig.journal j WHERE j.run_id = r.run_id) AS n,"
        "   extract(epoch FROM now() - coalesce(r.finished_at, r.updated_at, r.started_at)) AS age"
        "  FROM keymig.runs r WHERE r.target = $1) s WHERE n > 0",
        target);
    JournalStats stats;
    stats.runs = r[0][0].as<std::int64_t>();
    stats.rows = r[0][1].as<std::int64_t>();
    stats.oldest_seconds = std::max(0.0, r[0][2].as<double>());
    return stats;
  });
}

}  // namespace keymig::db
