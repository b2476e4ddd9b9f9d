#include "keymig/db/scans.hpp"

#include "pq.hpp"

namespace keymig::db {

namespace {

bool has_scans_table(pqxx::transaction_base& tx) {
  return !tx.exec("SELECT to_regclass('keymig.scans')")[0][0].is_null();
}

}  // namespace

bool record_scan(Connection& conn, const ScanRecord& r) {
  return guarded(conn, "recording the scan of " + r.target, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    if (!has_scans_table(tx)) return false;
    tx.exec_params(
        "INSERT INTO keymig.scans (target, command, scanned_at, rows_scanned, undecryptable,"
        " acknowledged, counts, active_fingerprint, rolling_fingerprints)"
        " VALUES ($1, $2, now(), $3, $4, $5, $6::jsonb, $7, $8::text[])"
        " ON CONFLICT (target) DO UPDATE SET command = excluded.command,"
        " scanned_at = excluded.scanned_at, rows_scanned = excluded.rows_scanned,"
        " undecryptable = excluded.undecryptable, acknowledged = excluded.acknowledged,"
        " counts = excluded.counts, active_fingerprint = excluded.active_fingerprint,"
        " rolling_fingerprints = excluded.rolling_fingerprints",
        r.target, r.command, r.rows_scanned, r.undecryptable, r.acknowledged, r.counts_json,
        r.active_fingerprint, text_array(r.rolling_fingerprints));
    return true;
  });
}

std::optional<ScanRecord> last_scan(Connection& conn, const std::string& target) {
  return guarded(conn, "reading the last scan of " + target,
                 [&](pqxx::connection& c) -> std::optional<ScanRecord> {
                   pqxx::nontransaction tx(c);
                   if (!has_scans_table(tx)) return std::nullopt;
                   auto rows = tx.exec_params(
                       "SELECT command, scanned_at::text, rows_scanned, undecryptable,"
                       " acknowledged, counts::text, coalesce(active_fingerprint, ''),"
                       " coalesce(rolling_fingerprints, '{}'::text[])"
                       " FROM keymig.scans WHERE target = $1",
                       target);
                   if (rows.empty()) return std::nullopt;
                   const auto& row = rows[0];
                   ScanRecord r;
                   r.target = target;
                   r.command = row[0].as<std::string>();
                   r.scanned_at = row[1].as<std::string>();
                   r.rows_scanned = row[2].as<std::int64_t>();
                   r.undecryptable = row[3].as<std::int64_t>();
                   r.acknowledged = row[4].as<std::int64_t>();
                   r.counts_json = row[5].as<std::string>();
                   r.active_fingerprint = row[6].as<std::string>();
                   auto parser = row[7].as_array();
                   for (auto e = parser.get_next(); e.first != pqxx::array_parser::done;
                        e = parser.get_next())
                     if (e.first == pqxx::array_parser::string_value)
                       r.rolling_fingerprints.push_back(e.second);
                   return r;
                 });
}

}  // namespace keymig::db
