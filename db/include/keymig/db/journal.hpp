#pragma once

// keymig.journal: the old and new token of every row a run changed, kept for rollback
// until finalize or purge deletes them (docs/DESIGN.md section 4). Tokens are secrets.
// Functions take a Connection, which is not thread-safe: one caller per connection.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

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

/// Journal rows of a run with row_id > after (text order), at most limit, tokens spelled
/// back exactly as the rows held them. Throws DbError.
[[nodiscard]] std::vector<JournalEntry> read_journal(Connection& conn, const std::string& run_id,
                                                     const std::optional<std::string>& after,
                                                     std::int64_t limit);

/// One page of a rollback: journal rows after `after`; each is restored (old token and
/// flag written back where the row still holds the new token, or already holds the old
/// one) or left (changed since, or deleted).
struct RollbackPage {
  std::int64_t rows = 0;
  std::optional<std::string> last;  // last row_id of the page; nullopt: journal exhausted
  std::vector<std::string> restored;
  std::vector<std::string> left;
};
/// Restores one page of the run's journal into `table` (one autocommit statement, a
/// compare-and-swap per row: safe to repeat). Throws DbError.
[[nodiscard]] RollbackPage rollback_page(Connection& conn, const Table& table,
                                         const std::string& run_id,
                                         const std::optional<std::string>& after,
                                         std::int64_t limit);

/// Deletes a run's journal; returns the rows deleted. Throws DbError.
std::int64_t delete_journal(Connection& conn, const std::string& run_id);
/// Which runs purge_journals may take, beyond "idle for longer than older_than".
struct PurgeScope {
  std::optional<std::string> target;  // only runs on this Table::label(); nullopt: every run
  bool keep_failed = false;           // leave `failed` runs (migrate may still resume them) alone
  std::optional<std::string> run_id;  // only this run (the caller decided it may lose it)
};
/// Deletes the journals of runs whose last activity is older than now - older_than,
/// except runs still `running` (and those `scope` leaves out), and sets their
/// runs.journal_purged_at. Returns {runs, journal rows}. Throws DbError.
std::pair<std::int64_t, std::int64_t> purge_journals(Connection& conn,
                                                     std::chrono::seconds older_than,
                                                     const PurgeScope& scope = {});

/// What the journal holds for one target: the rows of its runs, and how long the run
/// with journal rows that has been idle longest has been idle (runs' last activity, the
/// age journal purge goes by; 0 when the journal is empty).
struct JournalStats {
  std::int64_t runs = 0;
  std::int64_t rows = 0;
  double oldest_seconds = 0;
};
[[nodiscard]] JournalStats journal_stats(Connection& conn, const std::string& target);

}  // namespace keymig::db
