#pragma once

// The serial sink of a migration: writes a batch (with retries; the second half of the
// checkpoint protocol, see page_source.hpp), folds what it changed into the counts,
// records the batch's metrics and wipes its tokens.

#include <cstdint>
#include <string>
#include <vector>

#include "batch.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// What the writers learn, summed per lane by its serial sink (one thread), then across
/// lanes once they joined.
struct Outcome {
  Tally tally;
  std::int64_t rotated = 0, flag_fixed = 0, already_active = 0, conflicts = 0;
  // Ids for the sweep, at most kMaxListedRows: memory must not follow the table when an
  // application rewrites secrets as fast as we do. The rest stay counted as conflicts
  // (a later run picks those rows up).
  std::vector<std::string> conflict_ids;
  std::int64_t unswept = 0;
  std::vector<UndecryptableRow> undecryptable_rows;
  std::int64_t rejected = 0, rewritten = 0;
  std::vector<UndecryptableRow> rejected_rows;  // at most kMaxListedRows, as the others
  std::vector<std::string> rewritten_rows;
  bool stopped = false;  // a lane drained on the stop flag

  void note_conflict(std::string id);
  void note_rejected(db::RejectedRow row);
  void note_rewritten(std::string id);
  void take_undecryptable(std::vector<UndecryptableRow>& rows);
  /// Adds another lane's outcome (its lists are moved from).
  void add(Outcome& other);
};

/// Writes one batch (with retries) and folds its results into `out`. `count_in_run`:
/// the batch carries its chunk step and adds its counts to the run (sweep batches do
/// neither). Throws DbError after retries (keymig_batches_total{status="failed"}).
void write_and_count(db::Connection& conn, const db::Table& table, const Options& options,
                     const std::string& run_id, Batch& batch, bool count_in_run, Outcome& out);

/// keymig_crypto_operations_total for what a migrate batch did.
void count_crypto(const Options& options, const Tally& tally);

}  // namespace keymig::engine::detail
