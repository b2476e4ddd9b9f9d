#include "keymig/db/rows.hpp"

#include "pq.hpp"

namespace keymig::db {

namespace {

// Columns are qualified with the alias "t": an unqualified ORDER BY id would sort by
// the output column id::text (text order), not by the id.
std::string select_list(const Table& t) {
  return "t." + t.q_id + "::text AS keymig_row_id, t." + t.q_secret + " AS keymig_secret, " +
         (t.has_flag() ? "t." + t.q_flag : std::string("NULL::boolean")) + " AS keymig_flag";
}

Row to_row(const pqxx::row& r, const Table& t) {
  Row row;
  row.id = r[0].as<std::string>();
  if (r[1].is_null()) {
    row.is_null = true;
  } else if (t.secret_is_bytea) {
    pqxx::binarystring bytes(r[1]);
    row.token = SecretString(std::string_view(bytes.get(), bytes.size()));
  } else {
    row.token = SecretString(std::string_view(r[1].c_str(), r[1].size()));
  }
  row.flag = opt_bool(r[2]);
  return row;
}

// A selection value that does not parse as the id type is the operator's mistake.
[[noreturn]] void rethrow_selection(const Table& t, std::string_view context) {
  try {
    rethrow_translated(context);
  } catch (const DbError& e) {
    if (e.sqlstate() == "22P02" || e.sqlstate() == "22003" || e.sqlstate() == "22007")
      throw TargetError("selection: an id is not a valid " + t.id_type + " (" + e.what() + ")");
    throw;
  }
}

// "AND <id> = ANY(...)" or "AND <username> = ANY(...)" with the next parameter number.
std::string filter_clause(const Table& t, const RowFilter& f, int param) {
  const std::string p = "$" + std::to_string(param);
  if (!f.ids.empty()) return " AND t." + t.q_id + " = ANY(" + p + "::text[]::" + t.id_type + "[])";
  if (t.q_username.empty())
    throw TargetError(
        "target: selecting by username needs keyMigration.target.usernameColumn "
        "naming an existing column of " +
        t.schema + "." + t.name);
  return " AND t." + t.q_username + " = ANY(" + p + "::text[])";
}

const std::vector<std::string>& filter_values(const RowFilter& f) {
  return f.ids.empty() ? f.usernames : f.ids;
}

}  // namespace

std::vector<Row> read_page(Connection& conn, const Table& t, const PageQuery& q) {
  std::string sql = "SELECT " + select_list(t) + " FROM " + t.q_table + " AS t WHERE true";
  std::vector<std::string> params;
  // Keyset bounds are compared in the id's own type: the parameter takes the column's type.
  if (q.after) {
    params.push_back(*q.after);
    sql += " AND t." + t.q_id + " > $" + std::to_string(params.size()) + "::" + t.id_type;
  }
  if (q.upto) {
    params.push_back(*q.upto);
    sql += " AND t." + t.q_id + " <= $" + std::to_string(params.size()) + "::" + t.id_type;
  }
  if (q.filter && !q.filter->empty()) {
    params.push_back(text_array(filter_values(*q.filter)));
    sql += filter_clause(t, *q.filter, static_cast<int>(params.size()));
  }
  sql += " ORDER BY t." + t.q_id + " LIMIT " + std::to_string(q.limit);
  try {
    return guarded(conn, "reading a page", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      auto r = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
      std::vector<Row> rows;
      rows.reserve(r.size());
      for (const auto& row : r) rows.push_back(to_row(row, t));
      return rows;
    });
  } catch (const DbError&) {
    rethrow_selection(t, "");
  }
}

std::vector<Row> read_rows(Connection& conn, const Table& t, const std::vector<std::string>& ids) {
  if (ids.empty()) return {};
  std::string sql = "SELECT " + select_list(t) + " FROM " + t.q_table + " AS t WHERE t." + t.q_id +
                    " = ANY($1::text[]::" + t.id_type + "[]) ORDER BY t." + t.q_id;
  return guarded(conn, "re-reading rows", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    auto r = tx.exec_params(sql, text_array(ids));
    std::vector<Row> rows;
    rows.reserve(r.size());
    for (const auto& row : r) rows.push_back(to_row(row, t));
    return rows;
  });
}

std::vector<std::string> missing_selection(Connection& conn, const Table& t, const RowFilter& f) {
  if (f.empty()) return {};
  if (f.ids.empty() && t.q_username.empty()) (void)filter_clause(t, f, 1);  // throws why
  const std::string col = f.ids.empty() ? t.q_username : t.q_id;
  std::string sql =
      "SELECT x FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) WHERE NOT EXISTS "
      "(SELECT 1 FROM " +
      t.q_table + " WHERE " + col + " = u.x::" + (f.ids.empty() ? std::string("text") : t.id_type) +
      ") ORDER BY n";
  try {
    return guarded(conn, "checking the selection", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      auto r = tx.exec_params(sql, text_array(filter_values(f)));
      std::vector<std::string> out;
      for (const auto& row : r) out.push_back(row[0].as<std::string>());
      return out;
    });
  } catch (const DbError&) {
    rethrow_selection(t, "");
  }
}

std::int64_t count_rows(Connection& conn, const Table& t, const RowFilter* f) {
  std::string sql = "SELECT count(*) FROM " + t.q_table + " AS t WHERE true";
  std::vector<std::string> params;
  if (f && !f->empty()) {
    params.push_back(text_array(filter_values(*f)));
    sql += filter_clause(t, *f, 1);
  }
  return guarded(conn, "counting rows", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params))[0][0].as<std::int64_t>();
  });
}

BatchResult write_batch(Connection& conn, const Table& t, const std::vector<Change>& changes,
                        const BatchContext& ctx) {
  // The arrays hold tokens: built in wiped buffers, sized up front so that they never
  // reallocate (a reallocation would leave an unwiped copy behind).
  std::size_t token_bytes = 2;
  for (const auto& ch : changes) token_bytes += ch.old_token.size() + 3;
  std::string ids = "{", flags = "{";
  std::string old_buf, new_buf;
  old_buf.reserve(token_bytes);
  new_buf.reserve(token_bytes);
  old_buf.push_back('{');
  new_buf.push_back('{');
  bool first = true;
  for (const auto& ch : changes) {
    append_array_element(ids, ch.id, first);
    append_array_element(old_buf, ch.old_token.view(), first);
    append_array_element(new_buf, ch.new_token.view(), first);
    if (!first) flags.push_back(',');
    flags += ch.old_flag ? (*ch.old_flag ? "t" : "f") : "NULL";
    first = false;
  }
  ids.push_back('}');
  flags.push_back('}');
  old_buf.push_back('}');
  new_buf.push_back('}');
  SecretString old_arr(std::move(old_buf)), new_arr(std::move(new_buf));

  const std::string new_expr =
      t.secret_is_bytea ? "convert_to(s.new_token, 'UTF8')" : "s.new_token";
  const std::string old_expr =
      t.secret_is_bytea ? "convert_to(s.old_token, 'UTF8')" : "s.old_token";
  std::string sql =
      "WITH s AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::boolean[])"
      "             AS s(row_id, old_token, new_token, old_flag)),"
      " upd AS (UPDATE " +
      t.q_table + " AS t SET " + t.q_secret + " = " + new_expr +
      (t.has_flag() ? ", " + t.q_flag + " = true" : std::string()) + "   FROM s WHERE t." + t.q_id +
      " = s.row_id::" + t.id_type +
      // Compare-and-swap: only where the row still holds what we read. Holding our new
      // token means an earlier attempt of this very batch committed (random IVs make it
      // unique): it counts as applied, so a retry after an ambiguous commit is exact.
      "    AND (t." + t.q_secret + " = " + old_expr + " OR t." + t.q_secret + " = " + new_expr +
      ")"
      "  RETURNING s.row_id, s.old_token, s.new_token, s.old_flag),";
  if (ctx.journal) {
    sql +=
        " jn AS (INSERT INTO keymig.journal (run_id, row_id, old_token, new_token, old_flag, "
        "new_flag)"
        "  SELECT $1, row_id, old_token, new_token, old_flag, " +
        std::string(t.has_flag() ? "true" : "NULL::boolean") +
        "  FROM upd ON CONFLICT (run_id, row_id) DO NOTHING RETURNING 1),";
  }
  sql +=
      " chk AS (UPDATE keymig.chunks SET checkpoint = coalesce($8::text, checkpoint),"
      "          state = CASE WHEN $9::boolean THEN 'done' ELSE state END"
      "  WHERE run_id = $1 AND chunk_no = $6::int AND checkpoint IS NOT DISTINCT FROM $7::text"
      "  RETURNING 1),"
      " cnt AS (SELECT count(*) FILTER (WHERE new_token <> old_token) AS rotated,"
      "                count(*) FILTER (WHERE new_token = old_token) AS fixed,"
      "                count(*) AS applied," +
      // The run row is the one row every lane updates: locking it only once the journal
      // is written keeps the lock for the commit alone, instead of across the insert.
      std::string(ctx.journal ? " (SELECT count(*) FROM jn)" : " 0::bigint") +
      " AS journaled FROM upd),"
      " run AS (UPDATE keymig.runs r SET checkpoint = coalesce($8::text, r.checkpoint),"
      "          updated_at = now(),"
      "          rows_scanned = r.rows_scanned + $10::bigint,"
      "          rotated = r.rotated + cnt.rotated,"
      "          already_active = r.already_active + $11::bigint + cnt.fixed,"
      "          flag_fixed = r.flag_fixed + cnt.fixed,"
      "          empty = r.empty + $12::bigint,"
      "          undecryptable = r.undecryptable + $13::bigint,"
      "          conflicts = r.conflicts + $14::bigint - cnt.applied"
      "   FROM cnt WHERE r.run_id = $1 AND cnt.journaled >= 0 AND EXISTS (SELECT 1 FROM chk))"
      // Asynchronous commit for this transaction only (set_config(..., true) lasts until
      // its end). Safe: WAL is replayed in order, so a crash can only lose a suffix of
      // commits, and each lost batch loses its row updates, journal rows and checkpoint
      // together: the rows keep their old tokens, which the rolling key still reads, and
      // the chunk resumes from the last checkpoint that survived (a later batch of this
      // process then misses the checkpoint condition and counts nothing; the run is not
      // completed). Every synchronous commit (lease, run completion, finalize) flushes
      // the WAL before it, async batches included, and finalize re-verifies the rows
      // themselves. The cfg side of the LEFT JOIN is always evaluated; with no row
      // changed the one result row has a NULL id.
      " SELECT u.row_id, u.new_token = u.old_token"
      " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS cfg(v)"
      " LEFT JOIN upd AS u ON true";

  const std::string chunk_no = ctx.chunk_no ? std::to_string(*ctx.chunk_no) : std::string();
  return guarded(conn, "writing a batch", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);  // one statement = one transaction = one round trip
    auto r =
        tx.exec_params(sql, ctx.run_id, ids, old_arr.view().data(), new_arr.view().data(), flags,
                       ctx.chunk_no ? chunk_no.c_str() : nullptr, opt_param(ctx.prev_checkpoint),
                       opt_param(ctx.checkpoint), ctx.chunk_done, ctx.counts.rows_scanned,
                       ctx.counts.already_active, ctx.counts.empty, ctx.counts.undecryptable,
                       static_cast<std::int64_t>(changes.size()));
    BatchResult out;
    out.applied.reserve(r.size());
    for (const auto& row : r) {
      if (row[0].is_null()) continue;  // the LEFT JOIN's row when nothing changed
      out.applied.push_back(row[0].as<std::string>());
      if (row[1].as<bool>())
        ++out.flag_fixed;
      else
        ++out.rotated;
    }
    return out;
  });
}

}  // namespace keymig::db
