#pragma once

// The batch: one statement, one transaction, one round trip that writes a page's changes
// with their journal rows and the run's checkpoint and counts (docs/DESIGN.md sections 2
// and 5). write_batch uses its Connection alone, which is not thread-safe: one caller per
// connection (a lane's writer stage).

#include <cstdint>
#include <optional>
#include <string>
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

/// What the batch changed (or had changed on a previous, ambiguous attempt). `missed`: the
/// ids whose compare-and-swap failed (the row no longer held the old token): conflicts.
struct BatchResult {
  std::vector<std::string> missed;
  std::int64_t rotated = 0;
  std::int64_t flag_fixed = 0;
};

/// One statement, one transaction, one round trip: the CAS update, the journal rows of
/// exactly the rows changed, the run checkpoint and counts. A chunk batch writes only if
/// its chunk checkpoint is still chunk->from; repeated after a commit whose reply was
/// lost it writes nothing and reports what that commit applied. Safe to repeat. Throws
/// DbError, non-retryable when the chunk's checkpoint moved under this worker.
[[nodiscard]] BatchResult write_batch(Connection& conn, const Table& table,
                                      const std::vector<Change>& changes, const BatchContext& ctx);

}  // namespace keymig::db
