#include "keymig/db/load.hpp"

#include "pq.hpp"

namespace keymig::db {

ServerLoad read_server_load(Connection& conn, bool standbys, bool sessions) {
  return guarded(conn, "reading the server's load", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    ServerLoad load;
    load.visible = tx.exec("SELECT pg_has_role('pg_read_all_stats', 'USAGE')")[0][0].as<bool>();
    if (standbys) {
      // A standby that is idle or has caught up reports no replay_lag; the distance of
      // its replay position from ours then says whether it is behind at all.
      const auto rows = tx.exec(
          "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text),"
          " extract(epoch FROM replay_lag)::float8,"
          " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8"
          " FROM pg_stat_replication ORDER BY 1");
      for (const auto& r : rows) {
        StandbyLag s;
        s.name = r[0].as<std::string>();
        if (!r[1].is_null()) s.replay_seconds = r[1].as<double>();
        s.replay_bytes = r[2].as<double>();
        load.standbys.push_back(std::move(s));
      }
    }
    if (sessions) {
      load.active_sessions =
          tx.exec(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " AND application_name IS DISTINCT FROM 'keymig'")[0][0]
              .as<std::int64_t>();
    }
    return load;
  });
}

std::chrono::microseconds commit_canary(Connection& conn) {
  return guarded(conn, "committing the throttle's canary", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    const auto began = std::chrono::steady_clock::now();
    // An implicit transaction with an xid: its commit record is flushed before the reply.
    tx.exec("SELECT txid_current()");
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 began);
  });
}

}  // namespace keymig::db
