#pragma once

// The batch: one statement, one transaction, one round trip that writes a page's changes
// with their journal rows and the run's checkpoint and counts (docs/DESIGN.md sections 2
// and 5). write_batch uses its Connection alone, which is not thread-safe: one caller per
// connection (a lane's writer stage).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keymig/db/chunks.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

/// One row to write: the token it held when read (the compare-and-swap condition) and
/// what it gets. new_token equal to old_token: only the flag is fixed.
struct Change {
  std::string id;
  SecretString old_token;
  SecretString new_token;
  std::optional<bool> old_flag;
};

/// Per-batch class counts added to keymig.runs together with the batch.
struct CountsDelta {
  std::int64_t rows_scanned = 0;
  std::int64_t already_active = 0;  // active rows not in the change list (no write needed)
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
};

/// Where a batch belongs: run and chunk step. Counts are added to the run only when the
/// chunk checkpoint moves, so repeating a batch whose commit was ambiguous never counts
/// it twice.
struct BatchContext {
  std::string run_id;
  bool journal = true;
  std::optional<ChunkStep> chunk;  // nullopt: sweep batches (no checkpoint, no counts)
  CountsDelta counts;
};

/// A row the database refused (a CHECK, a trigger that raises, a column too short): it
/// keeps its old token. `reason`: the SQLSTATE and the server's first line, with anything
/// token-shaped cut out.
struct RejectedRow {
  std::string id;
  std::string reason;
};

/// What the batch changed (or had changed on a previous, ambiguous attempt). `missed`: the
/// ids whose compare-and-swap failed (the row no longer held the old token): conflicts.
/// `rewritten`: rows updated whose stored value is not the token written (a BEFORE UPDATE
/// trigger changed it); their journal rows hold what was stored, so rollback restores
/// them. `rejected`: rows the database refused one by one once the batch was split.
struct BatchResult {
  std::vector<std::string> missed;
  std::vector<std::string> rewritten;
  std::vector<RejectedRow> rejected;
  std::int64_t rotated = 0;
  std::int64_t flag_fixed = 0;
  // Of `missed`, the rows another transaction held locked past lock_timeout: skipped,
  // not written, for the end-of-run sweep.
  std::int64_t locked = 0;
};

/// True for a lock wait keymig gave up on (55P03 lock_not_available: lock_timeout) or
/// lost (40P01: the application waited on a row keymig held while keymig waited on one
/// it held): the rows the application holds are then skipped.
[[nodiscard]] bool is_lock_wait(std::string_view sqlstate) noexcept;

/// True for the errors a single row's value can cause (SQLSTATE classes 22 and 23, 44,
/// P0001 raise_exception, P0004 assert_failure): a batch failing so is split to find them.
[[nodiscard]] bool is_row_error(std::string_view sqlstate) noexcept;

/// One statement, one transaction, one round trip: the CAS update, the journal rows of
/// exactly the rows changed, the run checkpoint and counts. A chunk batch writes only if
/// its chunk checkpoint is still chunk->from; repeated after a commit whose reply was
/// lost it writes nothing and reports what that commit applied. A batch the database
/// refuses for a row's sake (is_row_error) is written again in one transaction, split in
/// halves under savepoints until the refused rows stand alone; the rest is written, the
/// checkpoint moves once, and the refused rows come back in `rejected`. A batch that
/// waited lock_timeout for a row the application holds (is_lock_wait) is written again in
/// one transaction that locks the rows it can (SKIP LOCKED) and leaves the others, which
/// come back in `missed` (and are counted in `locked`). Safe to repeat.
/// Throws DbError, non-retryable when the chunk's checkpoint moved under this worker.
[[nodiscard]] BatchResult write_batch(Connection& conn, const Table& table,
                                      const std::vector<Change>& changes, const BatchContext& ctx);

}  // namespace keymig::db
