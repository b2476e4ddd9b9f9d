#pragma once

// keymig.requests, the queue behind admin actions (docs/DESIGN.md section 4), as the
// service that works it sees it. Every call is one short transaction and throws DbError
// (SQLSTATE 42P01 when the table does not exist: the schema was never created).
// Not thread-safe: one session, one owner.

#include <cstdint>
#include <optional>
#include <string>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// A request moved to `running` for this instance.
struct ClaimedRequest {
  std::int64_t id = 0;
  std::string kind;    // as the application wrote it ("" when NULL); not yet validated
  std::string params;  // the jsonb as text; "" when NULL
  double wait_ms = 0;  // created_at -> claim, as the database clock sees it
};

/// Where a request goes when its job ends.
enum class RequestEnd {
  done,
  failed,
  requeued,  // cut short by a drain: queued again for the next claim
};

/// The application_name that marks this session as the live claimer for `instance`
/// ("keymig-serve <instance>", cut to PostgreSQL's 63 bytes).
[[nodiscard]] std::string request_session_name(const std::string& instance);

/// Names the session for `instance`, so that other instances can tell its claims from
/// the leftovers of a crashed process. Needed again after every reconnect.
void set_request_session_name(Connection& conn, const std::string& instance);

/// Puts back to `queued` every request left `running` by a claimer with no live session
/// (claimed_by compared with the application_name of the server's sessions). Returns how
/// many.
std::int64_t requeue_stale_requests(Connection& conn);

/// Claims the oldest queued request for `instance` (FOR UPDATE SKIP LOCKED, so that
/// several instances share the queue); nullopt when none is queued.
[[nodiscard]] std::optional<ClaimedRequest> claim_next_request(Connection& conn,
                                                               const std::string& instance);

/// Writes a request's end and its result document (JSON text): done/failed with
/// finished_at, or back to queued with claimed_by and started_at cleared. Safe to repeat.
void finish_request(Connection& conn, std::int64_t id, RequestEnd end,
                    const std::string& result_json);

}  // namespace keymig::db
