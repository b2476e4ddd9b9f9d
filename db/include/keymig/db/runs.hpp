#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

/// The keymig schema version this build creates and understands.
inline constexpr int kSchemaVersion = 5;

/// Creates schema `keymig` (runs, journal, chunks, requests, schema_version) if missing.
/// Idempotent and safe when several processes start at once (advisory lock).
/// Throws DbError; a newer schema version than kSchemaVersion is a DbError too.
void ensure_schema(Connection& conn);

struct RunCounts {
  std::int64_t rows_scanned = 0;
  std::int64_t rotated = 0;
  std::int64_t already_active = 0;
  std::int64_t flag_fixed = 0;
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t conflicts = 0;
};

/// A row of keymig.runs. States: running, completed, failed, rolled_back, finalized.
struct Run {
  std::string run_id;
  std::string kind = "migrate";  // migrate | reset_mfa
  std::string target;            // Table::label()
  std::string state = "running";
  std::string active_fingerprint;
  std::vector<std::string> rolling_fingerprints;
  std::string selection_json = "null";  // or {"ids": [...]} / {"usernames": [...]}
  bool journal = true;
  std::optional<std::string> checkpoint;
  RunCounts counts;
  std::string host;
  int pid = 0;
  std::string started_at;  // ISO 8601, as the server prints it
  std::string updated_at;
  std::string finished_at;
  std::string error;
};

/// Throws DbError.
[[nodiscard]] std::optional<Run> load_run(Connection& conn, const std::string& run_id);
/// The newest run of `kind` on `target` with this selection that is running or failed.
[[nodiscard]] std::optional<Run> find_unfinished_run(Connection& conn, const std::string& target,
                                                     const std::string& kind,
                                                     const std::string& selection_json);
/// Runs, newest first (for status).
[[nodiscard]] std::vector<Run> list_runs(Connection& conn, int limit);

/// Inserts the run and its chunks (id ranges lo < id <= hi; nullopt: open) in one
/// transaction. False when a run with that id exists already (nothing written).
[[nodiscard]] bool create_run(Connection& conn, const Run& run,
                              const std::vector<std::optional<std::string>>& boundaries);
/// Marks the run as being worked on by this process (host, pid), state running.
void claim_run(Connection& conn, const std::string& run_id, const std::string& host, int pid);
/// Sets state (and error, finished_at for final states).
void set_run_state(Connection& conn, const std::string& run_id, const std::string& state,
                   const std::string& error = {});
/// Adds counts (the conflict sweep's corrections may be negative).
void add_run_counts(Connection& conn, const std::string& run_id, const RunCounts& delta);
/// Sets state completed when every chunk is done; true if the run is completed now.
[[nodiscard]] bool complete_run_if_done(Connection& conn, const std::string& run_id);

/// Upper bounds that cut the target into ranges of rows_per_chunk rows; the last range
/// is open (nullopt), so the result is never empty. `total_rows` (if given) receives the
/// number of rows counted on the way.
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
[[nodiscard]] std::optional<Chunk> lease_chunk(Connection& conn, const std::string& run_id,
                                               const std::string& worker);
/// Moves this worker's leases to the current session (after a reconnect), so that they
/// do not look abandoned to other workers.
void renew_leases(Connection& conn, const std::string& run_id, const std::string& worker);
/// Number of chunks whose holder is alive and not this session (other workers). With
/// `except_workers`, leases whose holder name starts with it (this process's other
/// lanes, which finish their chunks themselves) are not counted either.
[[nodiscard]] std::int64_t live_foreign_leases(Connection& conn, const std::string& run_id,
                                               const std::string& except_workers = {});

/// A journaled row (tokens are secrets; new_token null: the secret was cleared).
struct JournalEntry {
  std::string row_id;
  SecretString old_token;
  bool old_null = false;
  SecretString new_token;
  bool new_null = false;
  std::optional<bool> old_flag;
  std::optional<bool> new_flag;
};

/// Journal rows of a run with row_id > after (text order), at most limit.
[[nodiscard]] std::vector<JournalEntry> read_journal(Connection& conn, const std::string& run_id,
                                                     const std::optional<std::string>& after,
                                                     std::int64_t limit);
[[nodiscard]] std::int64_t journal_size(Connection& conn, const std::string& run_id);

/// One page of a rollback: journal rows after `after`; each is restored (old token and
/// flag written back where the row still holds the new token, or already holds the old
/// one) or left (changed since, or deleted).
struct RollbackPage {
  std::int64_t rows = 0;
  std::optional<std::string> last;  // last row_id of the page; nullopt: journal exhausted
  std::vector<std::string> restored;
  std::vector<std::string> left;
};
[[nodiscard]] RollbackPage rollback_page(Connection& conn, const Table& table,
                                         const std::string& run_id,
                                         const std::optional<std::string>& after,
                                         std::int64_t limit);

/// Deletes a run's journal; returns the rows deleted.
std::int64_t delete_journal(Connection& conn, const std::string& run_id);
/// Deletes the journals of finished runs (not running) started before now - older_than.
/// Returns {runs, journal rows}.
std::pair<std::int64_t, std::int64_t> purge_journals(Connection& conn,
                                                     std::chrono::seconds older_than);

}  // namespace keymig::db
