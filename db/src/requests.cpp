#include "keymig/db/requests.hpp"

#include <algorithm>
#include <map>
#include <vector>

#include "pq.hpp"

namespace keymig::db {

namespace {

constexpr std::size_t kMaxNameBytes = 63;  // NAMEDATALEN - 1: the server cuts the rest

// How many distinct target spellings of the queue one claim looks at (oldest first): the
// queue is short, and a flood of odd spellings must not make every claim slow.
constexpr int kMaxTargetSpellings = 100;

constexpr const char* kNoTarget =
    "request names no target: set keymig.requests.target to the table it is for "
    "(e.g. 'public.users')";
constexpr const char* kNotATable = "request target is not a table name";

enum class Whose { mine, others, refused };

// ClaimScope::selected in SQL ($5: the most ids and usernames together). A params field of
// the wrong type counts as no items: parse_request refuses such a request anyway.
constexpr const char* kSelectedRequest =
    "(kind = 'rollback' OR (kind IN ('migrate', 'verify', 'reset_mfa', 'status')"
    "  AND NOT (kind = 'verify' AND jsonb_typeof(params->'run_id') = 'string')"
    "  AND (CASE WHEN jsonb_typeof(params->'ids') = 'array'"
    "            THEN jsonb_array_length(params->'ids') ELSE 0 END"
    "     + CASE WHEN jsonb_typeof(params->'usernames') = 'array'"
    "            THEN jsonb_array_length(params->'usernames') ELSE 0 END)"
    "      BETWEEN 1 AND $5))";

// What one spelling of requests.target means to the serve of `own_table`. to_regclass runs
// in a statement of its own: on PostgreSQL 15 it raises for text that is no name at all,
// and for a schema this role may not use (which is another deployment's table, not a bad
// request).
Whose classify(pqxx::nontransaction& tx, const std::string& target,
               const std::vector<unsigned>& own_tables, std::string& refusal) {
  if (target.find_first_not_of(" \t\r\n") == std::string::npos) {
    refusal = kNoTarget;
    return Whose::refused;
  }
  try {
    auto r = tx.exec_params("SELECT to_regclass($1)::oid::int8", target);
    if (r.empty() || r[0][0].is_null()) return Whose::others;  // no such table here
    const auto oid = r[0][0].as<std::int64_t>();
    return std::any_of(own_tables.begin(), own_tables.end(),
                       [&](unsigned own) { return oid == static_cast<std::int64_t>(own); })
               ? Whose::mine
               : Whose::others;
  } catch (const pqxx::insufficient_privilege&) {
    // Permission denied for the schema. Caught by type: libpqxx 6 leaves this one's
    // sqlstate() empty.
    return Whose::others;
  } catch (const pqxx::sql_error& e) {
    const std::string state = e.sqlstate();
    if (state == "42501") return Whose::others;
    if (state == "42601" || state == "42602" || state == "0A000" || state.rfind("22", 0) == 0) {
      refusal = kNotATable;
      return Whose::refused;
    }
    throw;
  }
}

}  // namespace

std::string request_session_name(const std::string& instance) {
  std::string name = "keymig-serve " + instance;
  if (name.size() > kMaxNameBytes) name.resize(kMaxNameBytes);
  return name;
}

void set_request_session_name(Connection& conn, const std::string& instance) {
  guarded(conn, "naming the request session", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec0("SET application_name = " + tx.quote(request_session_name(instance)));
  });
}

std::int64_t requeue_stale_requests(Connection& conn) {
  return guarded(conn, "requeueing stale requests", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    // A backend whose start this role may not see (another role's session, without
    // pg_read_all_stats) counts as the claimer: requeueing a live claim runs it twice,
    // leaving a dead one waits only until that pid is gone.
    auto r = tx.exec0(
        "UPDATE keymig.requests r SET state = 'queued', claimed_by = NULL, started_at = NULL, "
        "       claimed_pid = NULL, claimed_backend_start = NULL "
        "WHERE state = 'running' AND ("
        "  (claimed_pid IS NOT NULL AND NOT EXISTS ("
        "     SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.claimed_pid"
        "        AND (a.backend_start IS NULL OR r.claimed_backend_start IS NULL"
        "             OR a.backend_start = r.claimed_backend_start)))"
        "  OR (claimed_pid IS NULL AND claimed_by IS NOT NULL"
        "      AND left('keymig-serve ' || claimed_by, 63) NOT IN ("
        "        SELECT application_name FROM pg_stat_activity"
        "         WHERE application_name IS NOT NULL)))");
    tx.commit();
    return static_cast<std::int64_t>(r.affected_rows());
  });
}

std::optional<ClaimedRequest> claim_next_request(Connection& conn, const std::string& instance,
                                                 std::optional<unsigned> own_table,
                                                 ClaimScope scope, std::size_t max_selected) {
  std::vector<unsigned> own;
  if (own_table) own.push_back(*own_table);
  return claim_next_request(conn, instance, own, scope, max_selected);
}

std::optional<ClaimedRequest> claim_next_request(Connection& conn, const std::string& instance,
                                                 const std::vector<unsigned>& own_tables,
                                                 ClaimScope scope, std::size_t max_selected) {
  return guarded(conn, "claiming a request", [&](pqxx::connection& c) {
    // The spellings of the queue's targets, resolved before the claim rather than in its
    // WHERE clause: one that raises there would stop every serve's queue. A request
    // queued meanwhile waits for the next claim (its NOTIFY asks for one).
    std::vector<std::string> wanted;
    std::map<std::string, std::string> refusals;
    bool untargeted = false;
    {
      pqxx::nontransaction look(c);
      auto spellings = look.exec(
          "SELECT target FROM keymig.requests WHERE state = 'queued' GROUP BY target "
          "ORDER BY min(id) LIMIT " +
          std::to_string(kMaxTargetSpellings));
      for (const auto& row : spellings) {
        if (row[0].is_null()) {
          untargeted = true;
          continue;
        }
        const std::string target = row[0].as<std::string>();
        std::string refusal;
        const Whose whose = classify(look, target, own_tables, refusal);
        if (whose == Whose::others) continue;
        wanted.push_back(target);
        if (whose == Whose::refused) refusals[target] = refusal;
      }
    }
    if (wanted.empty() && !untargeted) return std::optional<ClaimedRequest>();
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "UPDATE keymig.requests SET state = 'running', claimed_by = $1, "
        "started_at = clock_timestamp(), claimed_pid = pg_backend_pid(), "
        "claimed_backend_start = (SELECT backend_start FROM pg_stat_activity "
        "                          WHERE pid = pg_backend_pid()) "
        "WHERE id = (SELECT id FROM keymig.requests WHERE state = 'queued' "
        "              AND ((target = ANY($2::text[]) AND (NOT $4 OR " +
            std::string(kSelectedRequest) +
            ")) OR ($3 AND target IS NULL)) "
            "            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, kind, COALESCE(params::text, ''), "
            "          extract(epoch FROM started_at - created_at) * 1000, target, "
            "          COALESCE(requested_by, ''), COALESCE(reason, '')",
        instance, text_array(wanted), untargeted, scope == ClaimScope::selected,
        static_cast<std::int64_t>(max_selected));
    tx.commit();
    if (r.empty()) return std::optional<ClaimedRequest>();
    ClaimedRequest out;
    out.id = r[0][0].as<std::int64_t>();
    out.kind = r[0][1].is_null() ? "" : r[0][1].as<std::string>();
    out.params = r[0][2].as<std::string>();
    out.wait_ms = r[0][3].is_null() ? 0.0 : r[0][3].as<double>();
    out.requested_by = r[0][5].as<std::string>();
    out.reason = r[0][6].as<std::string>();
    if (r[0][4].is_null()) {
      out.refusal = kNoTarget;
    } else {
      out.target = r[0][4].as<std::string>();
      if (auto it = refusals.find(out.target); it != refusals.end()) out.refusal = it->second;
    }
    return std::optional<ClaimedRequest>(std::move(out));
  });
}

void finish_request(Connection& conn, std::int64_t id, RequestEnd end,
                    const std::string& result_json) {
  guarded(conn, "writing a request's result", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    if (end == RequestEnd::requeued)
      tx.exec_params0(
          "UPDATE keymig.requests SET state = 'queued', claimed_by = NULL, "
          "started_at = NULL, claimed_pid = NULL, claimed_backend_start = NULL, "
          "result = $2::jsonb WHERE id = $1",
          id, result_json);
    else
      tx.exec_params0(
          "UPDATE keymig.requests SET state = $2, finished_at = clock_timestamp(), "
          "result = $3::jsonb WHERE id = $1",
          id, end == RequestEnd::done ? "done" : "failed", result_json);
    tx.commit();
  });
}

}  // namespace keymig::db
