#pragma once

// What the server is going through while migrate runs, for the engine's throttle
// (engine/src/throttle.cpp): its standbys' replay lag and its other active sessions.
// Both read statistics views whose other-role rows only pg_read_all_stats (pg_monitor)
// may see in full; `visible` says whether this role does.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// One standby of the primary, from pg_stat_replication.
struct StandbyLag {
  std::string name;                      // application_name, else the client address
  std::optional<double> replay_seconds;  // replay_lag; none while idle or caught up
  double replay_bytes = 0;               // pg_current_wal_lsn() - replay_lsn (0 when unknown)
};

struct ServerLoad {
  std::vector<StandbyLag> standbys;
  std::int64_t active_sessions = 0;  // active client backends not keymig's
  bool visible = true;               // false: this role may not read other roles' statistics
};

/// Reads the standbys' lag (when `standbys`) and the active sessions of other clients
/// (when `sessions`; sessions named application_name=keymig are keymig's). One short
/// statement each. Throws DbError.
[[nodiscard]] ServerLoad read_server_load(Connection& conn, bool standbys, bool sessions);

/// Commits one write transaction that writes nothing but its commit record (an xid is
/// taken), in one round trip, and returns how long it took: what a sign-in that writes
/// waits for right now, CPU, WAL flush and synchronous standbys included. For the
/// adaptive throttle's canary. Throws DbError.
[[nodiscard]] std::chrono::microseconds commit_canary(Connection& conn);

}  // namespace keymig::db
