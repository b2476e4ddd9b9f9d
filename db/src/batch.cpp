#include "keymig/db/batch.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <unordered_set>
#include <utility>

#include "binary_array.hpp"
#include "journal_codec.hpp"
#include "keymig/redact.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// The batch statement's parameters. The position here is the number in the statement
// ($1 is kRunId) and the place in the argument list that Args::exec sends; the journal's
// come last, so that a batch without a journal leaves them out.
enum Param : std::size_t {
  kRunId,
  kIds,             // the changed rows' ids
  kOldTokens,       // what each row held when read: the compare-and-swap condition
  kNewTokens,       // what each row gets
  kOldFlags,        // each row's flag as read
  kChunkNo,         // NULL for a sweep batch, which has no chunk
  kCheckpointFrom,  // where this worker left the chunk's checkpoint
  kCheckpointTo,    // where this batch moves it (NULL: it stays)
  kChunkDone,       // this batch closes the chunk
  kRowsScanned,     // the page's counts (CountsDelta)
  kAlreadyActive,
  kEmpty,
  kUndecryptable,
  kChanges,     // how many rows the batch means to change: the others are conflicts
  kOldJournal,  // the tokens in the journal's form (journal_codec.hpp)
  kNewJournal,
  kParamCount
};

struct ParamSpec {
  Param param;
  const char* cast;  // as the statement spells it; "" where the column gives the type
  bool binary;       // sent in PostgreSQL's binary array format, else as text
};

constexpr ParamSpec kParams[] = {
    {kRunId, "", false},
    {kIds, "text[]", true},
    {kOldTokens, "text[]", true},
    {kNewTokens, "text[]", true},
    {kOldFlags, "boolean[]", true},
    {kChunkNo, "int", false},
    {kCheckpointFrom, "text", false},
    {kCheckpointTo, "text", false},
    {kChunkDone, "boolean", false},
    {kRowsScanned, "bigint", false},
    {kAlreadyActive, "bigint", false},
    {kEmpty, "bigint", false},
    {kUndecryptable, "bigint", false},
    {kChanges, "bigint", false},
    {kOldJournal, "bytea[]", true},
    {kNewJournal, "bytea[]", true},
};

constexpr bool in_param_order() {
  for (std::size_t i = 0; i < std::size(kParams); ++i)
    if (kParams[i].param != i) return false;
  return std::size(kParams) == kParamCount;
}
static_assert(in_param_order(), "kParams lists every Param once, in Param's order");
static_assert(kOldJournal + 2 == kParamCount, "the journal's parameters come last");

// How the statement refers to parameter p: "$2::text[]".
std::string ref(Param p) {
  std::string out = "$" + std::to_string(p + 1);
  if (*kParams[p].cast != '\0') out += std::string("::") + kParams[p].cast;
  return out;
}

// The values of one execution, set by parameter: text (nullopt: NULL) or a binary array.
class Args {
 public:
  void set(Param p, std::optional<std::string> text) { text_[p] = std::move(text); }
  void set(Param p, const BinaryParam& array) { binary_[p] = &array.get(); }

  // Sends the first `count` parameters, in Param order.
  template <std::size_t count>
  pqxx::result exec(pqxx::transaction_base& tx, const std::string& statement) const {
    return exec(tx, statement, std::make_index_sequence<count>());
  }

 private:
  template <std::size_t... i>
  pqxx::result exec(pqxx::transaction_base& tx, const std::string& statement,
                    std::index_sequence<i...>) const {
    return tx.exec_prepared(statement, value<i>()...);
  }
  template <std::size_t i>
  decltype(auto) value() const {
    if constexpr (kParams[i].binary)
      return *binary_[i];  // const pqxx::binarystring&: sent as is
    else
      return opt_param(text_[i]);
  }

  std::array<std::optional<std::string>, kParamCount> text_;
  std::array<const pqxx::binarystring*, kParamCount> binary_{};
};

// Some of a batch's changes, in order (the halves of a split batch).
class Changes {
 public:
  Changes(const std::vector<Change>& all) : begin_(all.data()), end_(all.data() + all.size()) {}
  Changes(const Change* begin, const Change* end) : begin_(begin), end_(end) {}
  [[nodiscard]] const Change* begin() const noexcept { return begin_; }
  [[nodiscard]] const Change* end() const noexcept { return end_; }
  [[nodiscard]] std::size_t size() const noexcept {
    return static_cast<std::size_t>(end_ - begin_);
  }
  [[nodiscard]] bool empty() const noexcept { return begin_ == end_; }
  [[nodiscard]] const Change& front() const noexcept { return *begin_; }
  [[nodiscard]] Changes first(std::size_t n) const noexcept { return {begin_, begin_ + n}; }
  [[nodiscard]] Changes from(std::size_t n) const noexcept { return {begin_ + n, end_}; }

 private:
  const Change* begin_;
  const Change* end_;
};

// The changes as the statement's arrays. Tokens are built in buffers sized up front and
// wiped when they go (a reallocation would leave an unwiped copy behind).
struct Arrays {
  std::string ids;
  std::string old_flags;
  SecretString old_tokens;
  SecretString new_tokens;
  SecretString old_journal;  // empty without a journal
  SecretString new_journal;
};

SecretString token_array(Changes changes, SecretString Change::*token) {
  std::size_t payload = 0;
  for (const auto& ch : changes) payload += 4 + (ch.*token).size();
  std::string out = array_header(kTextOid, changes.size(), false, payload);
  for (const auto& ch : changes) put_element(out, (ch.*token).view());
  return SecretString(std::move(out));
}

Arrays encode(Changes changes, bool journal) {
  std::size_t id_bytes = 0;
  bool null_flag = false;
  for (const auto& ch : changes) {
    id_bytes += 4 + ch.id.size();
    null_flag = null_flag || !ch.old_flag;
  }
  Arrays a;
  a.ids = array_header(kTextOid, changes.size(), false, id_bytes);
  a.old_flags = array_header(kBoolOid, changes.size(), null_flag, 5 * changes.size());
  for (const auto& ch : changes) {
    put_element(a.ids, ch.id);
    if (ch.old_flag) {
      put_u32(a.old_flags, 1);
      a.old_flags.push_back(*ch.old_flag ? 1 : 0);
    } else {
      put_u32(a.old_flags, kNullLength);
    }
  }
  a.old_tokens = token_array(changes, &Change::old_token);
  a.new_tokens = token_array(changes, &Change::new_token);
  if (journal) {
    a.old_journal = journal_array(changes, &Change::old_token);
    a.new_journal = journal_array(changes, &Change::new_token);
  }
  return a;
}

// The statement's text for this table and shape; prepared once per session and shape.
std::string batch_statement(const Table& t, bool journal, bool chunked) {
  const std::string new_expr = secret_value(t, "s.new_token");
  const std::string old_expr = secret_value(t, "s.old_token");
  // A chunk batch is all or nothing on its chunk's checkpoint: the rows change only
  // when the checkpoint moves from where this worker left it. So a repeated batch whose
  // first commit went through changes nothing (and says so), and the journal needs no
  // ON CONFLICT: its speculative insertion was a tenth of a batch's database time. A
  // sweep batch (no chunk) has no checkpoint; it keeps the per-row guard.
  std::string sql = "WITH s AS (SELECT * FROM unnest(" + ref(kIds) + ", " + ref(kOldTokens) + ", " +
                    ref(kNewTokens) + ", " + ref(kOldFlags);
  sql += journal ? ", " + ref(kOldJournal) + ", " + ref(kNewJournal) +
                       ") AS s(row_id, old_token, new_token, old_flag, old_journal, new_journal)),"
                 : ") AS s(row_id, old_token, new_token, old_flag)),";
  sql += " chk AS (UPDATE keymig.chunks SET checkpoint = coalesce(" + ref(kCheckpointTo) +
         ", checkpoint),";
  sql += "          state = CASE WHEN " + ref(kChunkDone) + " THEN 'done' ELSE state END";
  sql += "  WHERE run_id = " + ref(kRunId) + " AND chunk_no = " + ref(kChunkNo);
  sql += "    AND checkpoint IS NOT DISTINCT FROM " + ref(kCheckpointFrom) + " RETURNING 1),";
  sql += " upd AS (UPDATE " + t.q_table + " AS t SET " + t.q_secret + " = " + new_expr;
  if (t.has_flag()) sql += ", " + t.q_flag + " = true";
  sql += "   FROM s WHERE t." + t.q_id + " = s.row_id::" + t.id_type + t.row_filter_sql();
  // Compare-and-swap: only where the row still holds what we read.
  sql += "    AND (t." + t.q_secret + " = " + old_expr;
  if (chunked) {
    sql += ") AND EXISTS (SELECT 1 FROM chk)";
  } else {
    // Holding our new token means an earlier attempt of this very batch committed
    // (random IVs make it unique): it counts as applied.
    sql += " OR t." + t.q_secret + " = " + new_expr + ")";
  }
  // What the row holds now, after BEFORE UPDATE triggers (RETURNING sees their changes):
  // a row whose stored value is not our token is `rewritten`, and its journal row keeps
  // what was stored, so that rollback's compare-and-swap finds and restores it.
  const std::string rewritten = "t." + t.q_secret + " IS DISTINCT FROM " + new_expr;
  sql += "  RETURNING s.row_id, s.new_token <> s.old_token AS rotated, s.old_flag, " + rewritten +
         " AS rewritten";
  const std::string stored_journal = t.secret_is_bytea
                                         ? "'\\x00'::bytea || t." + t.q_secret
                                         : "keymig.journal_bytes(t." + t.q_secret + ")";
  sql += journal ? ", s.old_journal, CASE WHEN " + rewritten + " THEN " + stored_journal +
                       " ELSE s.new_journal END AS new_journal),"
                 : "),";
  if (journal) {
    sql +=
        " jn AS (INSERT INTO keymig.journal (run_id, row_id, old_token, new_token, old_flag, "
        "new_flag)";
    sql += "  SELECT " + ref(kRunId) + ", row_id, old_journal, new_journal, old_flag, " +
           (t.has_flag() ? "true" : "NULL::boolean") + "  FROM upd";
    if (!chunked) sql += " ON CONFLICT (run_id, row_id) DO NOTHING";
    sql += " RETURNING 1),";
  }
  sql += " cnt AS (SELECT count(*) FILTER (WHERE rotated AND NOT rewritten) AS rotated,";
  sql += "                count(*) FILTER (WHERE NOT rotated AND NOT rewritten) AS fixed,";
  sql += "                count(*) FILTER (WHERE rewritten) AS rewritten,";
  sql += "                count(*) AS applied,";
  // The run row is the one row every lane updates: locking it only once the journal
  // is written keeps the lock for the commit alone, instead of across the insert.
  sql += journal ? " (SELECT count(*) FROM jn)" : " 0::bigint";
  sql += " AS journaled FROM upd),";
  sql += " run AS (UPDATE keymig.runs r SET checkpoint = coalesce(" + ref(kCheckpointTo) +
         ", r.checkpoint),";
  sql += "          updated_at = now(),";
  sql += "          rows_scanned = r.rows_scanned + " + ref(kRowsScanned) + ",";
  sql += "          rotated = r.rotated + cnt.rotated,";
  sql += "          already_active = r.already_active + " + ref(kAlreadyActive) + " + cnt.fixed,";
  sql += "          flag_fixed = r.flag_fixed + cnt.fixed,";
  sql += "          empty = r.empty + " + ref(kEmpty) + ",";
  sql += "          undecryptable = r.undecryptable + " + ref(kUndecryptable) + ",";
  sql += "          rewritten = r.rewritten + cnt.rewritten,";
  sql += "          conflicts = r.conflicts + " + ref(kChanges) + " - cnt.applied";
  sql += "   FROM cnt WHERE r.run_id = " + ref(kRunId) +
         " AND cnt.journaled >= 0 AND EXISTS (SELECT 1 FROM chk))";
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
  sql += " SELECT cnt.rotated, cnt.fixed, (SELECT count(*) FROM chk),";
  sql += "   CASE WHEN cnt.applied < " + ref(kChanges) + " THEN ARRAY(SELECT x FROM unnest(" +
         ref(kIds) + ") AS x";
  sql += "     WHERE x NOT IN (SELECT row_id FROM upd)) END,";
  sql += "   CASE WHEN cnt.rewritten > 0 THEN ARRAY(SELECT row_id FROM upd WHERE rewritten) END";
  sql += " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS cfg(v), cnt";
  return sql;
}

void append_ids(const pqxx::field& f, std::vector<std::string>& out) {
  if (f.is_null()) return;
  auto parser = f.as_array();
  for (auto e = parser.get_next(); e.first != pqxx::array_parser::done; e = parser.get_next())
    if (e.first == pqxx::array_parser::string_value) out.push_back(e.second);
}

// The statement's one result row: what it applied, the ids it missed and the ids whose
// stored value is not what it wrote. Added to `out` (a split batch adds its parts).
void add_applied(const pqxx::row& row, BatchResult& out) {
  out.rotated += row[0].as<std::int64_t>();
  out.flag_fixed += row[1].as<std::int64_t>();
  append_ids(row[3], out.missed);
  append_ids(row[4], out.rewritten);
}

BatchResult applied(const pqxx::row& row) {
  BatchResult out;
  add_applied(row, out);
  return out;
}

// A chunk batch that found its chunk's checkpoint elsewhere than where this worker left
// it. Either an earlier attempt of this batch committed (its reply was lost): the
// checkpoint is this batch's, and the rows holding our new tokens are the ones it
// changed. Or the chunk moved under us (another worker took it, or a server crash lost
// the last asynchronous commits): this lane stops and the run stays resumable from what
// the database holds.
BatchResult recover_repeated(pqxx::transaction_base& tx, const Table& t, const BatchContext& ctx,
                             const BinaryParam& ids, const BinaryParam& old_tokens,
                             const BinaryParam& new_tokens) {
  const ChunkStep& step = *ctx.chunk;
  const std::string chunk_no = std::to_string(step.chunk_no);
  const auto state = tx.exec_params(
      "SELECT checkpoint IS NOT DISTINCT FROM coalesce($3::text, $4::text)"
      "   AND (NOT $5::boolean OR state = 'done')"
      " FROM keymig.chunks WHERE run_id = $1 AND chunk_no = $2::int",
      ctx.run_id, chunk_no, opt_param(step.to), opt_param(step.from), step.done);
  if (state.empty() || !state[0][0].as<bool>())
    throw DbError("chunk " + chunk_no + " of run " + ctx.run_id +
                      " moved under this worker (another worker holds it, or the server "
                      "lost its last batches in a crash); run keymig migrate again to resume",
                  "KM002", false);
  // What that commit applied: the rows that hold this batch's new tokens. With a journal,
  // a row journaled by this run but holding something else was rewritten on the way in
  // (the journal holds what was stored). A row still holding its old token was refused
  // when that attempt split the batch (its reason went with the lost reply).
  const std::string journaled = ctx.journal
                                    ? "EXISTS (SELECT 1 FROM keymig.journal j WHERE j.run_id = $4"
                                      " AND j.row_id = s.row_id)"
                                    : "false";
  const auto held =
      tx.exec_params("SELECT s.row_id, s.new_token = s.old_token, t." + t.q_secret + " = " +
                         secret_value(t, "s.new_token") + ", " + journaled + ", t." + t.q_secret +
                         " = " + secret_value(t, "s.old_token") +
                         " FROM unnest($1::text[], $2::text[], $3::text[])"
                         " AS s(row_id, old_token, new_token) LEFT JOIN " +
                         t.q_table + " AS t ON t." + t.q_id + " = s.row_id::" + t.id_type,
                     ids.get(), old_tokens.get(), new_tokens.get(), ctx.run_id);
  BatchResult out;
  for (const auto& row : held) {
    std::string id = row[0].as<std::string>();
    if (!row[2].is_null() && row[2].as<bool>()) {
      if (row[1].as<bool>())
        ++out.flag_fixed;
      else
        ++out.rotated;
    } else if (row[3].as<bool>()) {
      out.rewritten.push_back(std::move(id));
    } else if (!row[4].is_null() && row[4].as<bool>()) {
      out.rejected.push_back({std::move(id),
                              "refused by the database (the reason went with the lost reply to the "
                              "batch's commit)"});
    } else {
      out.missed.push_back(std::move(id));
    }
  }
  return out;
}

// The reason a row was refused, for reports and logs: SQLSTATE and the server's first
// line. A trigger's RAISE can quote the row: scrub_tokens cuts out anything token- or
// key-shaped.
std::string rejection_reason(const pqxx::sql_error& e) {
  std::string line(e.what());
  line = line.substr(0, line.find('\n'));
  if (line.rfind("ERROR:", 0) == 0) line.erase(0, 6);
  while (!line.empty() && line.front() == ' ') line.erase(0, 1);
  return "SQLSTATE " + e.sqlstate() + ": " + scrub_tokens(line);
}

// Binary parameters and arguments of one batch statement over `part`.
struct Encoded {
  Arrays arrays;
  BinaryParam ids, old_tokens, new_tokens, old_flags, old_journal, new_journal;
  Encoded(Changes part, bool journal)
      : arrays(encode(part, journal)),
        ids(arrays.ids),
        old_tokens(arrays.old_tokens.view()),
        new_tokens(arrays.new_tokens.view()),
        old_flags(arrays.old_flags),
        old_journal(arrays.old_journal.view()),
        new_journal(arrays.new_journal.view()) {}
  void set(Args& args) const {
    args.set(kIds, ids);
    args.set(kOldTokens, old_tokens);
    args.set(kNewTokens, new_tokens);
    args.set(kOldFlags, old_flags);
    args.set(kOldJournal, old_journal);
    args.set(kNewJournal, new_journal);
  }
};

// Writes `part` under a savepoint with the per-row statement (no checkpoint, no counts);
// a part the database refuses for a row's sake is halved until the refused rows stand
// alone. Other errors end the whole transaction.
void write_halves(pqxx::dbtransaction& tx, const std::string& statement, const BatchContext& ctx,
                  Changes part, BatchResult& out) {
  if (part.empty()) return;
  const Encoded enc(part, ctx.journal);
  Args args;
  args.set(kRunId, ctx.run_id);
  enc.set(args);
  args.set(kChunkDone, "false");
  for (Param p : {kRowsScanned, kAlreadyActive, kEmpty, kUndecryptable}) args.set(p, "0");
  args.set(kChanges, pqxx::to_string(static_cast<std::int64_t>(part.size())));
  // A savepoint by hand: libpqxx's subtransaction left the transaction aborted after a
  // failed statement.
  tx.exec("SAVEPOINT keymig_split");
  try {
    const auto r =
        ctx.journal ? args.exec<kParamCount>(tx, statement) : args.exec<kOldJournal>(tx, statement);
    tx.exec("RELEASE SAVEPOINT keymig_split");
    add_applied(r.at(0), out);
  } catch (const pqxx::sql_error& e) {
    if (!is_row_error(e.sqlstate())) throw;
    tx.exec("ROLLBACK TO SAVEPOINT keymig_split");
    tx.exec("RELEASE SAVEPOINT keymig_split");
    if (part.size() == 1) {
      out.rejected.push_back({part.front().id, rejection_reason(e)});
      return;
    }
    const std::size_t half = part.size() / 2;
    write_halves(tx, statement, ctx, part.first(half), out);
    write_halves(tx, statement, ctx, part.from(half), out);
  }
}

}  // namespace

bool is_lock_wait(std::string_view s) noexcept {
  return s == "55P03" || s == "40P01";
}

bool is_row_error(std::string_view s) noexcept {
  if (s.size() != 5) return false;
  const std::string_view cls = s.substr(0, 2);
  return cls == "22" || cls == "23" || cls == "44" || s == "P0001" || s == "P0004";
}

namespace {

// A batch the database refused for a row's sake: one transaction that first moves the
// chunk's checkpoint (and so holds its row against any other worker), then writes the
// changes in halves under savepoints, then adds the counts to the run. The checkpoint
// moves once, with everything written; a repeat after a lost reply finds it moved and is
// recognised as before. With `skip_locked` (the batch waited lock_timeout for a row the
// application holds), the rows it can lock at once are locked first and the others left
// out, as missed: the application is never kept waiting again by this batch.
BatchResult write_split(Connection& conn, const Table& t, const std::vector<Change>& changes,
                        const BatchContext& ctx, bool skip_locked) {
  const bool chunked = ctx.chunk.has_value();
  return guarded(conn, "writing a batch split around refused rows", [&](pqxx::connection& c) {
    const std::string statement = prepared(conn.impl(), batch_statement(t, ctx.journal, false));
    BatchResult out;
    bool moved = false;
    {
      pqxx::work tx(c);
      tx.exec("SELECT set_config('synchronous_commit', 'off', true)");
      if (chunked) {
        const ChunkStep& step = *ctx.chunk;
        const auto chk = tx.exec_params(
            "UPDATE keymig.chunks SET checkpoint = coalesce($3::text, checkpoint),"
            " state = CASE WHEN $4::boolean THEN 'done' ELSE state END"
            " WHERE run_id = $1 AND chunk_no = $2::int"
            " AND checkpoint IS NOT DISTINCT FROM $5::text RETURNING 1",
            ctx.run_id, std::to_string(step.chunk_no), opt_param(step.to), step.done,
            opt_param(step.from));
        moved = chk.empty();
      }
      if (!moved) {
        std::vector<Change> lockable;
        if (skip_locked) {
          std::vector<std::string> ids;
          ids.reserve(changes.size());
          for (const auto& ch : changes) ids.push_back(ch.id);
          const auto got = tx.exec_params(
              "SELECT " + t.q_id + "::text FROM " + t.q_table + " WHERE " + t.q_id +
                  " = ANY($1::text[]::" + t.id_type + "[]) FOR NO KEY UPDATE SKIP LOCKED",
              text_array(ids));
          std::unordered_set<std::string> free;
          for (const auto& row : got) free.insert(row[0].as<std::string>());
          for (const auto& ch : changes) {
            if (free.count(ch.id)) {
              lockable.push_back({ch.id, ch.old_token.clone(), ch.new_token.clone(), ch.old_flag});
            } else {
              out.missed.push_back(ch.id);
              ++out.locked;
            }
          }
        }
        write_halves(tx, statement, ctx, skip_locked ? Changes(lockable) : Changes(changes), out);
        if (chunked) {
          const auto n = [](std::size_t v) { return static_cast<std::int64_t>(v); };
          const std::int64_t applied = out.rotated + out.flag_fixed + n(out.rewritten.size());
          tx.exec_params(
              "UPDATE keymig.runs SET checkpoint = coalesce($2::text, checkpoint),"
              " updated_at = now(), rows_scanned = rows_scanned + $3,"
              " rotated = rotated + $4, already_active = already_active + $5 + $6,"
              " flag_fixed = flag_fixed + $6, empty = empty + $7,"
              " undecryptable = undecryptable + $8, conflicts = conflicts + $9,"
              " rejected = rejected + $10, rewritten = rewritten + $11 WHERE run_id = $1",
              ctx.run_id, opt_param(ctx.chunk->to), ctx.counts.rows_scanned, out.rotated,
              ctx.counts.already_active, out.flag_fixed, ctx.counts.empty, ctx.counts.undecryptable,
              n(changes.size()) - applied - n(out.rejected.size()), n(out.rejected.size()),
              n(out.rewritten.size()));
        }
        tx.commit();
        return out;
      }
    }
    // The checkpoint is not where this worker left it: a lost reply, or another worker.
    const Encoded enc(changes, ctx.journal);
    pqxx::nontransaction tx(c);
    return recover_repeated(tx, t, ctx, enc.ids, enc.old_tokens, enc.new_tokens);
  });
}

}  // namespace

BatchResult write_batch(Connection& conn, const Table& t, const std::vector<Change>& changes,
                        const BatchContext& ctx) {
  const bool chunked = ctx.chunk.has_value();
  const std::string sql = batch_statement(t, ctx.journal, chunked);
  const Arrays arrays = encode(changes, ctx.journal);
  const BinaryParam ids(arrays.ids), old_tokens(arrays.old_tokens.view()),
      new_tokens(arrays.new_tokens.view()), old_flags(arrays.old_flags),
      old_journal(arrays.old_journal.view()), new_journal(arrays.new_journal.view());

  Args args;
  args.set(kRunId, ctx.run_id);
  args.set(kIds, ids);
  args.set(kOldTokens, old_tokens);
  args.set(kNewTokens, new_tokens);
  args.set(kOldFlags, old_flags);
  if (chunked) {
    args.set(kChunkNo, std::to_string(ctx.chunk->chunk_no));
    args.set(kCheckpointFrom, ctx.chunk->from);
    args.set(kCheckpointTo, ctx.chunk->to);
  }
  args.set(kChunkDone, pqxx::to_string(chunked && ctx.chunk->done));
  args.set(kRowsScanned, pqxx::to_string(ctx.counts.rows_scanned));
  args.set(kAlreadyActive, pqxx::to_string(ctx.counts.already_active));
  args.set(kEmpty, pqxx::to_string(ctx.counts.empty));
  args.set(kUndecryptable, pqxx::to_string(ctx.counts.undecryptable));
  args.set(kChanges, pqxx::to_string(static_cast<std::int64_t>(changes.size())));
  args.set(kOldJournal, old_journal);
  args.set(kNewJournal, new_journal);

  try {
    return guarded(conn, "writing a batch", [&](pqxx::connection& c) {
      const std::string statement = prepared(conn.impl(), sql);
      pqxx::nontransaction tx(c);  // one statement = one transaction = one round trip
      const auto r = ctx.journal ? args.exec<kParamCount>(tx, statement)
                                 : args.exec<kOldJournal>(tx, statement);
      if (!chunked || r.at(0)[2].as<std::int64_t>() > 0) return applied(r.at(0));
      return recover_repeated(tx, t, ctx, ids, old_tokens, new_tokens);
    });
  } catch (const DbError& e) {
    // Nothing was written (one statement): find the refused rows, or the rows the
    // application holds locked, and write the others.
    if (changes.empty()) throw;
    if (is_lock_wait(e.sqlstate())) return write_split(conn, t, changes, ctx, true);
    if (!is_row_error(e.sqlstate())) throw;
    return write_split(conn, t, changes, ctx, false);
  }
}

}  // namespace keymig::db
