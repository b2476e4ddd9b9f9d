#include "keymig/db/chunks.hpp"

#include <algorithm>

#include "pq.hpp"

namespace keymig::db {

namespace {

// The holder of a lease is alive while its session is: same pid, same start time (pids
// are reused). The function behind pg_stat_activity, asked for one pid: the view joins
// catalogs whose planning cost a few milliseconds per lease, on every lane at every chunk.
const char* const kHolderAlive =
    "EXISTS (SELECT 1 FROM pg_stat_get_activity(k.leased_pid) a"
    " WHERE a.backend_start IS NOT DISTINCT FROM k.leased_backend_start)";
const char* const kOwnBackendStart =
    "(SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid()))";

}  // namespace

std::vector<std::optional<std::string>> chunk_boundaries(Connection& conn, const Table& t,
                                                         std::int64_t rows_per_chunk,
                                                         std::int64_t* total_rows) {
  const std::int64_t per = std::max<std::int64_t>(1, rows_per_chunk);
  // A walk along the id index, one chunk per step (an index-only scan of `per` entries
  // once the table is vacuumed), that counts the rows too: a window function over the
  // table plus a count(*) read it twice, a second and more per ten million rows.
  const std::string step = "SELECT t." + t.q_id + "::text FROM " + t.q_table + " AS t";
  const std::string order =
      " ORDER BY t." + t.q_id + " OFFSET " + std::to_string(per - 1) + " LIMIT 1";
  // The filter's rows alone: chunks hold and progress counts what the run works on.
  const std::string filter = t.row_filter_sql();
  const std::string first = filter.empty() ? std::string() : " WHERE TRUE" + filter;
  const std::string after = " WHERE t." + t.q_id + " > $1::" + t.id_type + filter;
  return guarded(conn, "planning chunks", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    std::vector<std::optional<std::string>> out;
    for (;;) {
      auto r = out.empty() ? tx.exec(step + first + order)
                           : tx.exec_params(step + after + order, *out.back());
      if (r.empty()) break;
      out.emplace_back(r[0][0].as<std::string>());
    }
    if (total_rows) {
      const std::string rest =
          "SELECT count(*) FROM " + t.q_table + " AS t" + (out.empty() ? first : after);
      auto r = out.empty() ? tx.exec(rest) : tx.exec_params(rest, *out.back());
      *total_rows = static_cast<std::int64_t>(out.size()) * per + r[0][0].as<std::int64_t>();
    }
    out.emplace_back(std::nullopt);
    return out;
  });
}

std::optional<Chunk> lease_chunk(Connection& conn, const std::string& run_id,
                                 const std::string& worker, const std::string& own_workers) {
  return guarded(
      conn, "leasing a chunk of run " + run_id, [&](pqxx::connection& c) -> std::optional<Chunk> {
        // Prepared: a lane leases a chunk every few batches.
        static const std::string sql =
            std::string(
                "UPDATE keymig.chunks c SET state = 'leased', leased_by = $2,"
                " leased_pid = pg_backend_pid(), leased_backend_start = ") +
            kOwnBackendStart +
            " WHERE c.run_id = $1 AND c.chunk_no = (SELECT k.chunk_no FROM keymig.chunks k"
            "   WHERE k.run_id = $1 AND (k.state = 'pending' OR (k.state = 'leased' AND NOT " +
            kHolderAlive +
            "      AND ($3 = '' OR left(coalesce(k.leased_by, ''), length($3)) <> $3)))"
            "   ORDER BY k.chunk_no LIMIT 1 FOR UPDATE OF k SKIP LOCKED)"
            // Asynchronous commit: a synchronous one flushed the WAL of every batch
            // written since, a stall of each lane at each chunk. A lease lost in a
            // crash is harmless: its holder's session died with it, so the chunk is
            // free again, from its last checkpoint that survived.
            "   AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
            " RETURNING c.chunk_no, c.lo, c.hi, c.checkpoint";
        const std::string statement = prepared(conn.impl(), sql);
        pqxx::nontransaction tx(c);
        auto r = tx.exec_prepared(statement, run_id, worker, own_workers);
        if (r.empty()) return std::nullopt;
        Chunk ch;
        ch.chunk_no = r[0][0].as<int>();
        ch.lo = opt_text(r[0][1]);
        ch.hi = opt_text(r[0][2]);
        ch.checkpoint = opt_text(r[0][3]);
        return ch;
      });
}

void renew_leases(Connection& conn, const std::string& run_id, const std::string& worker) {
  guarded(conn, "renewing a lease of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec_params(std::string("UPDATE keymig.chunks SET leased_pid = pg_backend_pid(),"
                               " leased_backend_start = ") +
                       kOwnBackendStart +
                       " WHERE run_id = $1 AND leased_by = $2 AND state = 'leased'",
                   run_id, worker);
  });
}

std::int64_t live_foreign_leases(Connection& conn, const std::string& run_id,
                                 const std::string& except_workers) {
  return guarded(conn, "reading leases of run " + run_id, [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx
        .exec_params(
            std::string("SELECT count(*) FROM keymig.chunks k WHERE k.run_id = $1"
                        " AND k.state = 'leased' AND k.leased_pid <> pg_backend_pid()"
                        " AND ($2 = '' OR left(coalesce(k.leased_by, ''), length($2)) <> $2)"
                        " AND ") +
                kHolderAlive,
            run_id, except_workers)[0][0]
        .as<std::int64_t>();
  });
}

}  // namespace keymig::db
