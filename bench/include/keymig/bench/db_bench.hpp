#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keymig/error.hpp"

namespace keymig::bench {

/// What stops the database benchmark: the scratch table cannot be built, the migrate
/// child fails or moves the wrong number of rows. Never carries a key or a token.
class DbBenchError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

struct DbBenchOptions {
  std::string dsn;              // libpq DSN or URI; empty: libpq's PG* environment
  std::int64_t rows = 200'000;  // rows in the scratch table, all under a rolling key
  int threads = 0;              // passed to migrate; 0: its default (all cores)
  std::int64_t batch_size = 0;  // passed to migrate; 0: its default
  bool journal = true;          // keyMigration.journal of the child's config
  int repeat = 1;               // measurements; the report is their median
  // > 1: each measurement also migrates the same rows split over this many tables, as one
  // run over keyMigration.targets, beside the single-table migrate and the floor.
  int targets = 1;
  std::string keymig_binary = "/proc/self/exe";  // the binary that runs `migrate`
};

/// One measurement: both sides on fresh copies of the same rows.
struct DbBenchSample {
  double migrate_seconds = 0;      // wall clock of the `keymig migrate` child
  double floor_seconds = 0;        // one `UPDATE ... SET secret = secret || ''`, new session
  double floor_warm_seconds = 0;   // the same in the session that just copied the rows
  double migrate_cpu_seconds = 0;  // CPU the whole machine spent meanwhile (/proc/stat)
  double floor_cpu_seconds = 0;
  std::int64_t peak_rss_bytes = 0;     // the child's ru_maxrss, from wait4
  double targets_migrate_seconds = 0;  // the same rows as `targets` tables; 0: not measured
};

struct DbBenchResult {
  std::int64_t rows = 0;
  double migrate_seconds = 0;  // medians over the samples
  double floor_seconds = 0;
  double floor_warm_seconds = 0;
  double ratio = 0;                // migrate_seconds / floor_seconds
  double ratio_warm = 0;           // migrate_seconds / floor_warm_seconds, for reference
  double migrate_cpu_seconds = 0;  // medians of the machine's CPU time during each side
  double floor_cpu_seconds = 0;
  std::int64_t peak_rss_bytes = 0;
  double setup_seconds = 0;  // building the scratch table (tokens + COPY)
  int targets = 1;
  double targets_migrate_seconds = 0;  // median; 0 with targets == 1
  double targets_ratio = 0;            // targets_migrate_seconds / migrate_seconds (1.0: no cost)
  std::vector<DbBenchSample> samples;
  std::string scratch_schema;  // dropped before returning
};

/// Builds a scratch table of `rows` Fernet tokens under a fresh rolling key (tokens made
/// across threads, bulk COPY), then per repeat times `keymig migrate` as a child process
/// against a copy of it and PostgreSQL's own single-statement rewrite of another copy.
/// Drops its scratch schema and its runs in keymig.runs afterwards, also on failure.
/// Keys exist only in memory and in a mode-0600 temp config that is removed at the end.
/// Not thread-safe (one benchmark at a time per process). Throws DbBenchError, or
/// keymig::UsageError for bad options.
[[nodiscard]] DbBenchResult run_db_bench(const DbBenchOptions& options);

/// The `--json` object: {"rows", "migrate_seconds", "floor_seconds", "ratio",
/// "peak_rss_bytes", "floor_warm_seconds", "ratio_warm", "migrate_cpu_seconds",
/// "floor_cpu_seconds", ...}; with targets > 1 also "targets", "targets_migrate_seconds",
/// "targets_ratio" and "targets_ratio_to_floor".
[[nodiscard]] std::string db_bench_json(const DbBenchResult& result);
/// Human-readable lines for the terminal.
[[nodiscard]] std::string db_bench_text(const DbBenchResult& result);

}  // namespace keymig::bench
