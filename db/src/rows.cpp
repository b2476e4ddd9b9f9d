#include "keymig/db/rows.hpp"

#include <cstdint>

#include "keymig/base64.hpp"
#include "keymig/db/users.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// Columns are qualified with the alias "t": an unqualified ORDER BY id would sort by
// the output column id::text (text order), not by the id. The admin view's columns come
// last, and only when asked for: the passes read what they rotate and no more.
std::string select_list(const Table& t, const UserTable* users = nullptr) {
  std::string list =
      "t." + t.q_id + "::text AS keymig_row_id, t." + t.q_secret + " AS keymig_secret, " +
      (t.has_flag() ? "t." + t.q_flag : std::string("NULL::boolean")) + " AS keymig_flag";
  if (!users) return list;
  std::string admin;
  for (const auto& col : users->q_sysadmin)
    admin += (admin.empty() ? "" : " OR ") + std::string("coalesce(t.") + col + ", false)";
  return list + ", " + (t.q_username.empty() ? "NULL::text" : "t." + t.q_username + "::text") +
         " AS keymig_username, (" + (admin.empty() ? "false" : admin) + ") AS keymig_sysadmin";
}

Row to_row(const pqxx::row& r, const Table& t, bool with_user = false) {
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
  if (with_user) {
    if (!r[3].is_null()) row.username = r[3].as<std::string>();
    row.sysadmin = r[4].as<bool>();
  }
  return row;
}

// A selection value that does not parse as the id type is the operator's mistake.
[[noreturn]] void rethrow_selection(const Table& t, std::string_view context) {
  try {
    rethrow_translated(context);
  } catch (const DbError& e) {
    if (e.sqlstate() == "22P02" || e.sqlstate() == "22003" || e.sqlstate() == "22007" ||
        e.sqlstate() == "22008")
      throw TargetError("selection: an id is not a valid " + t.id_type + " (" + e.what() + ")");
    throw;
  }
}

void require_username_column(const Table& t) {
  if (t.q_username.empty())
    throw TargetError(
        "target: selecting by username needs keyMigration.target.usernameColumn "
        "naming an existing column of " +
        t.schema + "." + t.name);
}

// " AND <id> = ANY(...)", " AND <username> = ANY(...)", or both ORed, with the next
// parameter numbers; the lists are appended to `params`.
std::string filter_clause(const Table& t, const Selection& f, std::vector<std::string>& params) {
  std::vector<std::string> terms;
  if (!f.ids.empty()) {
    params.push_back(text_array(f.ids));
    terms.push_back("t." + t.q_id + " = ANY($" + std::to_string(params.size()) +
                    "::text[]::" + t.id_type + "[])");
  }
  if (!f.usernames.empty()) {
    require_username_column(t);
    params.push_back(text_array(f.usernames));
    terms.push_back("t." + t.q_username + " = ANY($" + std::to_string(params.size()) + "::text[])");
  }
  if (terms.size() == 1) return " AND " + terms[0];
  return " AND (" + terms[0] + " OR " + terms[1] + ")";
}

}  // namespace

std::vector<Row> read_page(Connection& conn, const Table& t, const PageQuery& q) {
  std::string sql = "SELECT " + select_list(t, q.users) + " FROM " + t.q_table + " AS t WHERE true";
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
  if (q.filter && !q.filter->empty()) sql += filter_clause(t, *q.filter, params);
  sql += " ORDER BY t." + t.q_id + " LIMIT " + std::to_string(q.limit);
  try {
    return guarded(conn, "reading a page", [&](pqxx::connection& c) {
      // A whole-table page is prepared: its generic plan is the id index walk, and
      // parsing and planning it for every page cost as much as reading a short one. A
      // selection keeps one plan per page, made for the ids or names it holds.
      const bool prepare = !q.filter || q.filter->empty();
      const std::string statement = prepare ? prepared(conn.impl(), sql) : std::string();
      pqxx::nontransaction tx(c);
      auto r = prepare ? tx.exec_prepared(statement, pqxx::prepare::make_dynamic_params(params))
                       : tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
      std::vector<Row> rows;
      rows.reserve(r.size());
      for (const auto& row : r) rows.push_back(to_row(row, t, q.users != nullptr));
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

std::vector<std::string> missing_selection(Connection& conn, const Table& t, const Selection& f) {
  if (!f.usernames.empty()) require_username_column(t);
  std::vector<std::string> out;
  auto missing = [&](const std::vector<std::string>& values, const std::string& col,
                     const std::string& type) {
    if (values.empty()) return;
    const std::string sql =
        "SELECT x FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) WHERE NOT EXISTS "
        "(SELECT 1 FROM " +
        t.q_table + " WHERE " + col + " = u.x::" + type + ") ORDER BY n";
    guarded(conn, "checking the selection", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      for (const auto& row : tx.exec_params(sql, text_array(values)))
        out.push_back(row[0].as<std::string>());
    });
  };
  try {
    missing(f.ids, t.q_id, t.id_type);
    missing(f.usernames, t.q_username, "text");
  } catch (const DbError&) {
    rethrow_selection(t, "");
  }
  return out;
}

std::int64_t estimated_rows(Connection& conn, const Table& t) {
  return guarded(conn, "estimating the table's size", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    const auto r = tx.exec_params("SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass",
                                  t.q_table);
    return r.empty() || r[0][0].is_null() ? std::int64_t{-1} : r[0][0].as<std::int64_t>();
  });
}

std::int64_t count_rows(Connection& conn, const Table& t, const Selection* f) {
  std::string sql = "SELECT count(*) FROM " + t.q_table + " AS t WHERE true";
  std::vector<std::string> params;
  if (f && !f->empty()) sql += filter_clause(t, *f, params);
  return guarded(conn, "counting rows", [&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params))[0][0].as<std::int64_t>();
  });
}

namespace {

// PostgreSQL's binary array format (array_recv): one dimension, lower bound 1, then each
// element as a 4-byte big-endian length (-1: NULL) and its bytes. The server reads it
// without array_in's per-element parsing, which was a seventh of a batch's time.
constexpr std::uint32_t kTextOid = 25;
constexpr std::uint32_t kBoolOid = 16;
constexpr std::uint32_t kByteaOid = 17;

// Writes v big-endian at out[at, at + 4), which must exist.
void set_u32(std::string& out, std::size_t at, std::uint32_t v) {
  out[at] = static_cast<char>(v >> 24);
  out[at + 1] = static_cast<char>(v >> 16);
  out[at + 2] = static_cast<char>(v >> 8);
  out[at + 3] = static_cast<char>(v);
}

void put_u32(std::string& out, std::uint32_t v) {
  out.append(4, '\0');
  set_u32(out, out.size() - 4, v);
}

std::string array_header(std::uint32_t elem_oid, std::size_t n, bool has_null,
                         std::size_t payload) {
  std::string out;
  out.reserve(20 + payload);
  put_u32(out, 1);
  put_u32(out, has_null ? 1 : 0);
  put_u32(out, elem_oid);
  put_u32(out, static_cast<std::uint32_t>(n));
  put_u32(out, 1);
  return out;
}

void put_element(std::string& out, std::string_view v) {
  put_u32(out, static_cast<std::uint32_t>(v.size()));
  out.append(v);
}

// A binary parameter libpqxx sends as is. Its buffer is shared with the copy libpqxx
// keeps while the statement runs, so wiping it after the call wipes that copy too.
class BinaryParam {
 public:
  explicit BinaryParam(std::string_view bytes) : value_(bytes.data(), bytes.size()) {}
  BinaryParam(const BinaryParam&) = delete;
  BinaryParam& operator=(const BinaryParam&) = delete;
  ~BinaryParam() { secure_wipe(const_cast<unsigned char*>(value_.data()), value_.size()); }
  [[nodiscard]] const pqxx::binarystring& get() const noexcept { return value_; }

 private:
  pqxx::binarystring value_;
};

// A text[] of tokens, built in a wiped buffer sized up front (a reallocation would
// leave an unwiped copy behind).
template <typename Get>
SecretString token_array(const std::vector<Change>& changes, Get get) {
  std::size_t payload = 0;
  for (const auto& ch : changes) payload += 4 + get(ch).size();
  std::string out = array_header(kTextOid, changes.size(), false, payload);
  for (const auto& ch : changes) put_element(out, get(ch).view());
  return SecretString(std::move(out));
}

// A bytea[] of tokens in the journal's form (docs/DESIGN.md section 4): the bytes a
// canonical token spells (they start with Fernet's version byte 0x80), else a 0x00 tag
// and the text as it was. keymig.journal_text() spells either back exactly. A token is
// 3/4 of its text, which takes a fifth off each journal row, and so off the bytes a
// large run writes.
template <typename Get>
SecretString journal_array(const std::vector<Change>& changes, Get get) {
  std::size_t payload = 0;
  for (const auto& ch : changes) payload += 4 + 1 + get(ch).size();
  std::string out = array_header(kByteaOid, changes.size(), false, payload);
  for (const auto& ch : changes) {
    const std::string_view text = get(ch).view();
    const std::size_t at = out.size();         // the element's length goes here once it is known
    out.resize(at + 4 + text.size() / 4 * 3);  // within the reservation: no reallocation
    std::size_t len = 0;
    auto* raw = reinterpret_cast<std::uint8_t*>(&out[at + 4]);
    if (!decode_canonical_base64url(text, raw, len) || len == 0 || raw[0] != 0x80) {
      secure_wipe(raw, text.size() / 4 * 3);
      out.resize(at + 4);
      out.push_back('\0');
      out.append(text);
      len = 1 + text.size();
    } else {
      out.resize(at + 4 + len);
    }
    set_u32(out, at, static_cast<std::uint32_t>(len));
  }
  return SecretString(std::move(out));
}

}  // namespace

BatchResult write_batch(Connection& conn, const Table& t, const std::vector<Change>& changes,
                        const BatchContext& ctx) {
  std::size_t id_bytes = 0;
  bool null_flag = false;
  for (const auto& ch : changes) {
    id_bytes += 4 + ch.id.size();
    null_flag = null_flag || !ch.old_flag;
  }
  std::string ids = array_header(kTextOid, changes.size(), false, id_bytes);
  std::string flags = array_header(kBoolOid, changes.size(), null_flag, 5 * changes.size());
  for (const auto& ch : changes) {
    put_element(ids, ch.id);
    if (ch.old_flag) {
      put_u32(flags, 1);
      flags.push_back(*ch.old_flag ? 1 : 0);
    } else {
      put_u32(flags, 0xFFFFFFFFu);
    }
  }
  const SecretString old_arr =
      token_array(changes, [](const Change& c) -> const SecretString& { return c.old_token; });
  const SecretString new_arr =
      token_array(changes, [](const Change& c) -> const SecretString& { return c.new_token; });
  SecretString old_journal, new_journal;
  if (ctx.journal) {
    old_journal =
        journal_array(changes, [](const Change& c) -> const SecretString& { return c.old_token; });
    new_journal =
        journal_array(changes, [](const Change& c) -> const SecretString& { return c.new_token; });
  }

  const std::string new_expr =
      t.secret_is_bytea ? "convert_to(s.new_token, 'UTF8')" : "s.new_token";
  const std::string old_expr =
      t.secret_is_bytea ? "convert_to(s.old_token, 'UTF8')" : "s.old_token";
  const bool chunked = ctx.chunk.has_value();
  const std::optional<std::string> no_checkpoint;
  const auto& from = chunked ? ctx.chunk->from : no_checkpoint;
  const auto& to = chunked ? ctx.chunk->to : no_checkpoint;
  const bool chunk_done = chunked && ctx.chunk->done;

  // A chunk batch is all or nothing on its chunk's checkpoint: the rows change only
  // when the checkpoint moves from where this worker left it. So a repeated batch whose
  // first commit went through changes nothing (and says so), and the journal needs no
  // ON CONFLICT: its speculative insertion was a tenth of a batch's database time. A
  // sweep batch (no chunk) has no checkpoint; it keeps the per-row guard.
  std::string sql =
      "WITH s AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::boolean[]" +
      std::string(ctx.journal ? ", $15::bytea[], $16::bytea[]) AS s(row_id, old_token, "
                                "new_token, old_flag, old_journal, new_journal)),"
                              : ") AS s(row_id, old_token, new_token, old_flag)),") +
      " chk AS (UPDATE keymig.chunks SET checkpoint = coalesce($8::text, "
      "checkpoint),"
      "          state = CASE WHEN $9::boolean THEN 'done' ELSE state END"
      "  WHERE run_id = $1 AND chunk_no = $6::int"
      "    AND checkpoint IS NOT DISTINCT FROM $7::text RETURNING 1),"
      " upd AS (UPDATE " +
      t.q_table + " AS t SET " + t.q_secret + " = " + new_expr +
      (t.has_flag() ? ", " + t.q_flag + " = true" : std::string()) + "   FROM s WHERE t." + t.q_id +
      " = s.row_id::" + t.id_type +
      // Compare-and-swap: only where the row still holds what we read.
      "    AND (t." + t.q_secret + " = " + old_expr;
  if (chunked) {
    sql += ") AND EXISTS (SELECT 1 FROM chk)";
  } else {
    // Holding our new token means an earlier attempt of this very batch committed
    // (random IVs make it unique): it counts as applied.
    sql += " OR t." + t.q_secret + " = " + new_expr + ")";
  }
  sql += "  RETURNING s.row_id, s.new_token <> s.old_token AS rotated, s.old_flag" +
         std::string(ctx.journal ? ", s.old_journal, s.new_journal)," : "),");
  if (ctx.journal) {
    sql +=
        " jn AS (INSERT INTO keymig.journal (run_id, row_id, old_token, new_token, old_flag, "
        "new_flag)"
        "  SELECT $1, row_id, old_journal, new_journal, old_flag, " +
        std::string(t.has_flag() ? "true" : "NULL::boolean") + "  FROM upd" +
        (chunked ? "" : " ON CONFLICT (run_id, row_id) DO NOTHING") + " RETURNING 1),";
  }
  sql +=
      " cnt AS (SELECT count(*) FILTER (WHERE rotated) AS rotated,"
      "                count(*) FILTER (WHERE NOT rotated) AS fixed,"
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
      // process then finds the checkpoint moved and stops the lane; the run stays
      // resumable). Every synchronous commit (run completion, finalize) flushes
      // the WAL before it, async batches included, and finalize re-verifies the rows
      // themselves. cfg is a one-row subquery in FROM, so set_config is always evaluated.
      // One result row: the counts, and the ids whose compare-and-swap missed (rare, so
      // the list is built only when some did). Sending back every changed id cost a row
      // per change on both ends.
      " SELECT cnt.rotated, cnt.fixed, (SELECT count(*) FROM chk),"
      "   CASE WHEN cnt.applied < $14::bigint THEN ARRAY(SELECT x FROM unnest($2::text[]) AS x"
      "     WHERE x NOT IN (SELECT row_id FROM upd)) END"
      " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS cfg(v), cnt";

  const std::string chunk_no = chunked ? std::to_string(ctx.chunk->chunk_no) : std::string();
  const BinaryParam ids_p(ids), old_p(old_arr.view()), new_p(new_arr.view()), flags_p(flags),
      old_journal_p(old_journal.view()), new_journal_p(new_journal.view());
  auto collect = [](const pqxx::result& r, BatchResult& out) {
    const auto row = r.at(0);
    out.rotated = row[0].as<std::int64_t>();
    out.flag_fixed = row[1].as<std::int64_t>();
    if (row[3].is_null()) return;
    auto parser = row[3].as_array();
    for (auto e = parser.get_next(); e.first != pqxx::array_parser::done; e = parser.get_next())
      if (e.first == pqxx::array_parser::string_value) out.missed.push_back(e.second);
  };
  return guarded(conn, "writing a batch", [&](pqxx::connection& c) {
    const std::string statement = prepared(conn.impl(), sql);
    pqxx::nontransaction tx(c);  // one statement = one transaction = one round trip
    auto execute = [&](auto&&... journal) {
      return tx.exec_prepared(statement, ctx.run_id, ids_p.get(), old_p.get(), new_p.get(),
                              flags_p.get(), chunked ? chunk_no.c_str() : nullptr, opt_param(from),
                              opt_param(to), chunk_done, ctx.counts.rows_scanned,
                              ctx.counts.already_active, ctx.counts.empty, ctx.counts.undecryptable,
                              static_cast<std::int64_t>(changes.size()), journal...);
    };
    auto r = ctx.journal ? execute(old_journal_p.get(), new_journal_p.get()) : execute();
    BatchResult out;
    if (!chunked || r.at(0)[2].as<std::int64_t>() > 0) {
      collect(r, out);
      return out;
    }
    // The checkpoint was not where this worker left it. Either an earlier attempt of
    // this batch committed (its reply was lost): the checkpoint is this batch's, and the
    // rows holding our new tokens are the ones it changed. Or the chunk moved under us
    // (another worker took it, or a server crash lost the last asynchronous commits):
    // this lane stops and the run stays resumable from what the database holds.
    const auto state = tx.exec_params(
        "SELECT checkpoint IS NOT DISTINCT FROM coalesce($3::text, $4::text)"
        "   AND (NOT $5::boolean OR state = 'done')"
        " FROM keymig.chunks WHERE run_id = $1 AND chunk_no = $2::int",
        ctx.run_id, chunk_no, opt_param(to), opt_param(from), chunk_done);
    if (state.empty() || !state[0][0].as<bool>())
      throw DbError("chunk " + chunk_no + " of run " + ctx.run_id +
                        " moved under this worker (another worker holds it, or the server "
                        "lost its last batches in a crash); run keymig migrate again to resume",
                    "KM002", false);
    // What that commit applied: the rows that hold this batch's new tokens.
    const auto held = tx.exec_params(
        "SELECT s.row_id, s.new_token = s.old_token,"
        " t." +
            t.q_id +
            " IS NOT NULL FROM unnest($1::text[], "
            "$2::text[], $3::text[]) AS s(row_id, old_token, new_token)"
            " LEFT JOIN " +
            t.q_table + " AS t ON t." + t.q_id + " = s.row_id::" + t.id_type + " AND t." +
            t.q_secret + " = " + new_expr,
        ids_p.get(), old_p.get(), new_p.get());
    for (const auto& row : held) {
      if (!row[2].as<bool>())
        out.missed.push_back(row[0].as<std::string>());
      else if (row[1].as<bool>())
        ++out.flag_fixed;
      else
        ++out.rotated;
    }
    return out;
  });
}

}  // namespace keymig::db
