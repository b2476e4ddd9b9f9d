#include "keymig/db/requests.hpp"

#include "pq.hpp"

namespace keymig::db {

namespace {
constexpr std::size_t kMaxNameBytes = 63;  // NAMEDATALEN - 1: the server cuts the rest
}

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
    auto r = tx.exec0(
        "UPDATE keymig.requests SET state = 'queued', claimed_by = NULL, started_at = NULL "
        "WHERE state = 'running' AND claimed_by IS NOT NULL AND 'keymig-serve ' || claimed_by "
        "NOT IN (SELECT application_name FROM pg_stat_activity WHERE application_name LIKE "
        "'keymig-serve %')");
    tx.commit();
    return static_cast<std::int64_t>(r.affected_rows());
  });
}

std::optional<ClaimedRequest> claim_next_request(Connection& conn, const std::string& instance) {
  return guarded(conn, "claiming a request", [&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(
        "UPDATE keymig.requests SET state = 'running', claimed_by = $1, "
        "started_at = clock_timestamp() "
        "WHERE id = (SELECT id FROM keymig.requests WHERE state = 'queued' "
        "            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING id, kind, COALESCE(params::text, ''), "
        "          extract(epoch FROM started_at - created_at) * 1000",
        instance);
    tx.commit();
    if (r.empty()) return std::optional<ClaimedRequest>();
    ClaimedRequest out;
    out.id = r[0][0].as<std::int64_t>();
    out.kind = r[0][1].is_null() ? "" : r[0][1].as<std::string>();
    out.params = r[0][2].as<std::string>();
    out.wait_ms = r[0][3].is_null() ? 0.0 : r[0][3].as<double>();
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
          "started_at = NULL, result = $2::jsonb WHERE id = $1",
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
