#pragma once

// keymig.requests, the queue behind admin actions (docs/DESIGN.md section 4), as the
// service that works it sees it. Every call is one short transaction and throws DbError
// (SQLSTATE 42P01 when the table does not exist: the schema was never created).
// Not thread-safe: one session, one owner.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// A request moved to `running` for this instance.
struct ClaimedRequest {
  std::int64_t id = 0;
  std::string kind;    // as the application wrote it ("" when NULL); not yet validated
  std::string params;  // the jsonb as text; "" when NULL
  std::string target;  // as the application wrote it ("" when NULL)
  double wait_ms = 0;  // created_at -> claim, as the database clock sees it
  // The audit trail the application wrote ("" when NULL): who asked, and why. Its text,
  // not keymig's: scrub before showing it.
  std::string requested_by;
  std::string reason;
  // Set when the request was claimed only to be refused: it names no target, or its
  // target is not a table name at all, so no serve could ever take it as its own.
  std::string refusal;
};

/// Where a request goes when its job ends.
enum class RequestEnd {
  done,
  failed,
  requeued,  // cut short by a drain or a database outage: queued again for the next claim
};

/// The application_name that shows this session as a claimer for `instance` to people
/// ("keymig-serve <instance>", cut to PostgreSQL's 63 bytes). Liveness is not decided by it.
[[nodiscard]] std::string request_session_name(const std::string& instance);

/// Names the session for `instance` in pg_stat_activity. Needed again after every
/// reconnect.
void set_request_session_name(Connection& conn, const std::string& instance);

/// Puts back to `queued` every request left `running` by a session that is gone: no
/// backend with the claiming pid, or one with that pid that started at another time (a
/// reused pid). Claims made before claimed_pid was recorded fall back to the session name.
/// Returns how many.
std::int64_t requeue_stale_requests(Connection& conn);

/// Which requests a claim takes.
enum class ClaimScope {
  any,
  // Only those that touch the users they name, so that they run beside a whole-table run:
  // kind rollback, or migrate, verify (without run_id), reset_mfa or status with 1 to
  // max_selected ids and usernames together (service::is_selected_job says the same of a
  // parsed request). Requests that are refused at claim (no target) are taken too.
  selected,
};

/// Claims the oldest queued request for `instance` (FOR UPDATE SKIP LOCKED, so that
/// several instances share the queue) among those whose `target` names the table with
/// OID `own_table` (any spelling to_regclass resolves to it), recording this session's
/// backend pid and start. Requests with no target, or a target that is not a table name,
/// are claimed too, with `refusal` set, so that they fail at once instead of waiting for
/// a serve that cannot exist. `own_table` nullopt (the configured table is missing):
/// only those. nullopt when there is nothing to claim.
[[nodiscard]] std::optional<ClaimedRequest> claim_next_request(Connection& conn,
                                                               const std::string& instance,
                                                               std::optional<unsigned> own_table,
                                                               ClaimScope scope = ClaimScope::any,
                                                               std::size_t max_selected = 0);
/// The same for a serve of several tables (keyMigration.targets): a request naming any of
/// `own_tables` is its own; empty: as own_table nullopt.
[[nodiscard]] std::optional<ClaimedRequest> claim_next_request(
    Connection& conn, const std::string& instance, const std::vector<unsigned>& own_tables,
    ClaimScope scope = ClaimScope::any, std::size_t max_selected = 0);

/// Writes a request's end and its result document (JSON text): done/failed with
/// finished_at, or back to queued with the claim cleared. Safe to repeat.
void finish_request(Connection& conn, std::int64_t id, RequestEnd end,
                    const std::string& result_json);

}  // namespace keymig::db
