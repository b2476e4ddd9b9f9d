#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

struct UserTable;

/// One target row as read: id as text, the token (bytea: its bytes), the flag, and for
/// the admin view (PageQuery::users) the username and sysadmin columns. The token is a
/// secret: it is classified or rotated and wiped, never printed.
struct Row {
  std::string id;
  SecretString token;
  bool is_null = false;      // the secret is SQL NULL
  std::optional<bool> flag;  // nullopt: no flag column, or NULL
  std::string username;      // admin view: empty without a username column (or when NULL)
  bool sysadmin = false;     // admin view: any sysadmin column true
};

/// The rows an operator or an admin action names: exact ids and/or exact usernames, never
/// patterns. Empty: the whole target. The one selection type of every command, request and
/// run (keymig.runs.selection).
struct Selection {
  std::vector<std::string> ids;        // id values as text
  std::vector<std::string> usernames;  // values of the username column
  [[nodiscard]] bool empty() const noexcept { return ids.empty() && usernames.empty(); }
};

/// A keyset page: rows with after < id <= upto, in id order (the id's own type and
/// collation), at most `limit`. One short autocommit statement: no snapshot is held.
/// A filter with ids and usernames selects the rows matching either.
struct PageQuery {
  std::optional<std::string> after;
  std::optional<std::string> upto;
  std::int64_t limit = 2000;
  const Selection* filter = nullptr;
  /// The admin view: also read the username and sysadmin columns (users.hpp). Null for
  /// the passes, which read only what they rotate.
  const UserTable* users = nullptr;
};

/// Throws DbError (retryable ones may be repeated), TargetError when a filter needs a
/// username column the target lacks.
[[nodiscard]] std::vector<Row> read_page(Connection& conn, const Table& table,
                                         const PageQuery& query);

/// The rows with these ids (any order; missing ids are skipped).
[[nodiscard]] std::vector<Row> read_rows(Connection& conn, const Table& table,
                                         const std::vector<std::string>& ids);

/// The selected ids or usernames that match no row (reported, not an error): ids first,
/// then usernames, each in the order given. An id matches a row whose id equals it as a
/// value of the id's type ("007" matches 7), a username only exactly.
[[nodiscard]] std::vector<std::string> missing_selection(Connection& conn, const Table& table,
                                                         const Selection& filter);

/// PostgreSQL's own estimate of the table's rows (pg_class.reltuples, kept by VACUUM and
/// ANALYZE), without reading the table; -1 when it has none yet.
[[nodiscard]] std::int64_t estimated_rows(Connection& conn, const Table& table);

/// Number of rows (optionally filtered): for progress and ETA.
[[nodiscard]] std::int64_t count_rows(Connection& conn, const Table& table,
                                      const Selection* filter);

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
