#pragma once

// keymig.runs: one row per migrate or reset_mfa run, its state, checkpoint and counts
// (docs/DESIGN.md section 4). Functions take a Connection, which is not thread-safe: one
// caller per connection. Each throws DbError.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// A run's class counts (docs/DESIGN.md section 2).
struct RunCounts {
  std::int64_t rows_scanned = 0;
  std::int64_t rotated = 0;
  std::int64_t already_active = 0;
  std::int64_t flag_fixed = 0;
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t conflicts = 0;
  std::int64_t rejected = 0;   // refused by the database row by row: keep their old token
  std::int64_t rewritten = 0;  // stored value not the token written (a BEFORE UPDATE trigger)
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
  std::string journal_purged_at;  // ISO 8601; empty: `journal purge` never deleted its journal
  // The run over several targets this one target's run is part of ("RUN" for "RUN/name");
  // empty for a run of a config with one target.
  std::string run_group;
  // Of a part: the names of every target its group covers, so that a group stopped between
  // two parts is known unfinished.
  std::vector<std::string> group_targets;
};

/// The run with this id, if there is one.
[[nodiscard]] std::optional<Run> load_run(Connection& conn, const std::string& run_id);
/// The newest run of `kind` on `target` with this selection that is running or failed.
[[nodiscard]] std::optional<Run> find_unfinished_run(Connection& conn, const std::string& target,
                                                     const std::string& kind,
                                                     const std::string& selection_json);
/// The newest unfinished migrate group over exactly these target names (any order) with
/// this selection and active key (or none recorded): a part running or failed, or fewer
/// parts than targets (stopped between two), and none rolled back or finalized.
[[nodiscard]] std::optional<std::string> find_unfinished_group(
    Connection& conn, const std::vector<std::string>& target_names,
    const std::string& selection_json, const std::string& active_fingerprint);
/// The runs of a group, by run id.
[[nodiscard]] std::vector<Run> group_runs(Connection& conn, const std::string& run_group);
/// Runs, newest first (for status).
[[nodiscard]] std::vector<Run> list_runs(Connection& conn, int limit);

/// Inserts the run and its chunks (id ranges lo < id <= hi, from chunk_boundaries;
/// nullopt: open) in one transaction. False when a run with that id exists already
/// (nothing written).
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

/// The run's advisory lock, session-level, without waiting; true when taken (again: a
/// session may stack it). Migrate's session holds it shared while it works on the run,
/// rollback exclusive, so that neither writes rows while the other does; the session's
/// end releases it, as a crashed process's does.
[[nodiscard]] bool try_lock_run(Connection& conn, const std::string& run_id, bool exclusive);

}  // namespace keymig::db
