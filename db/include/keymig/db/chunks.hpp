#pragma once

// A run's id ranges (keymig.chunks), leased by the lanes of one or many keymig processes
// (docs/DESIGN.md section 4), and the checkpoint step a batch takes within its chunk.
// Functions take a Connection, which is not thread-safe: one caller per connection.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"

namespace keymig::db {

/// Upper bounds that cut the target into ranges of rows_per_chunk rows; the last range
/// is open (nullopt), so the result is never empty. `total_rows` (if given) receives the
/// number of rows counted on the way. Throws DbError.
[[nodiscard]] std::vector<std::optional<std::string>> chunk_boundaries(
    Connection& conn, const Table& table, std::int64_t rows_per_chunk,
    std::int64_t* total_rows = nullptr);

/// A leased id range of a run: lo < id <= hi, resumed after checkpoint.
struct Chunk {
  int chunk_no = 0;
  std::optional<std::string> lo;
  std::optional<std::string> hi;
  std::optional<std::string> checkpoint;
};

/// Leases the first chunk that is pending, or leased by a session that no longer exists
/// (pid + backend_start gone from pg_stat_activity), to this session (FOR UPDATE SKIP
/// LOCKED). The lease lives as long as this connection's session. nullopt: none left.
/// A lease whose holder's name starts with `own_workers` is never taken over, dead session
/// or not: those are this process's lanes, alive while it is, whose sessions may be
/// reconnecting (two lanes on one chunk would each see the other's batches as their own
/// repeated ones, and count them twice). Throws DbError.
[[nodiscard]] std::optional<Chunk> lease_chunk(Connection& conn, const std::string& run_id,
                                               const std::string& worker,
                                               const std::string& own_workers = {});
/// Moves this worker's leases to the current session (after a reconnect), so that they
/// do not look abandoned to other workers. Throws DbError.
void renew_leases(Connection& conn, const std::string& run_id, const std::string& worker);
/// Number of chunks whose holder is alive and not this session (other workers). With
/// `except_workers`, leases whose holder name starts with it (this process's other
/// lanes, which finish their chunks themselves) are not counted either. Throws DbError.
[[nodiscard]] std::int64_t live_foreign_leases(Connection& conn, const std::string& run_id,
                                               const std::string& except_workers = {});

/// One step of a chunk's checkpoint (docs/DESIGN.md section 2): the batch commits only if
/// the chunk's checkpoint still stands at `from`, where this worker left it, and moves it
/// to `to` in the same transaction; `done` closes the chunk. The page source makes each
/// step, the batch statement applies it.
struct ChunkStep {
  int chunk_no = 0;
  std::optional<std::string> from;  // nullopt: the chunk had no checkpoint yet
  std::optional<std::string> to;    // nullopt: an empty page that only closes the chunk
  bool done = false;
};

}  // namespace keymig::db
