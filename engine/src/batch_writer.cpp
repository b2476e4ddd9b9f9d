#include "batch_writer.hpp"

#include <chrono>

#include "connect.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/log.hpp"
#include "progress.hpp"

namespace keymig::engine::detail {

void Outcome::note_conflict(std::string id) {
  if (conflict_ids.size() < kMaxListedRows)
    conflict_ids.push_back(std::move(id));
  else
    ++unswept;
}

void Outcome::note_rejected(db::RejectedRow row) {
  ++rejected;
  if (rejected_rows.size() < kMaxListedRows)
    rejected_rows.push_back({std::move(row.id), std::move(row.reason)});
}

void Outcome::note_rewritten(std::string id) {
  ++rewritten;
  if (rewritten_rows.size() < kMaxListedRows) rewritten_rows.push_back(std::move(id));
}

void Outcome::take_undecryptable(std::vector<UndecryptableRow>& rows) {
  for (auto& r : rows)
    if (undecryptable_rows.size() < kMaxListedRows) undecryptable_rows.push_back(std::move(r));
}

void Outcome::add(Outcome& o) {
  tally.add(o.tally);
  rotated += o.rotated;
  flag_fixed += o.flag_fixed;
  already_active += o.already_active;
  conflicts += o.conflicts;
  for (auto& id : o.conflict_ids) note_conflict(std::move(id));
  unswept += o.unswept;
  take_undecryptable(o.undecryptable_rows);
  rejected += o.rejected;
  rewritten += o.rewritten;
  for (auto& r : o.rejected_rows)
    if (rejected_rows.size() < kMaxListedRows) rejected_rows.push_back(std::move(r));
  for (auto& id : o.rewritten_rows)
    if (rewritten_rows.size() < kMaxListedRows) rewritten_rows.push_back(std::move(id));
  if (o.stopped) stopped = true;
}

void write_and_count(db::Connection& conn, const db::Table& table, const Options& options,
                     const std::string& run_id, Batch& b, bool count_in_run, Outcome& out) {
  auto start = std::chrono::steady_clock::now();
  db::BatchContext ctx;
  ctx.run_id = run_id;
  ctx.journal = options.journal;
  if (count_in_run) {
    ctx.chunk = b.chunk;
    ctx.counts = {b.tally.rows, b.tally.active_ok, b.tally.empty, b.tally.undecryptable};
  }
  db::BatchResult res;
  try {
    res = db::with_retry(
        conn, [&] { return db::write_batch(conn, table, b.changes, ctx); },
        retry_hook(options.metrics, "write"));
  } catch (...) {
    if (options.metrics)
      options.metrics->observe_batch(table.label(), "failed", seconds_since(start));
    throw;
  }
  const auto conflicts = static_cast<std::int64_t>(res.missed.size());
  if (res.locked > 0)
    KEYMIG_LOG(warn, "engine", "rows_locked", {"run_id", run_id}, {"rows", res.locked},
               {"lock_timeout_ms", options.connect.lock_timeout.count()},
               {"note",
                "the application held these rows locked longer than lockTimeout: skipped, "
                "for the end-of-run sweep (else counted as conflicts, for the next run)"});
  for (const auto& id : res.missed) out.note_conflict(id);
  out.rotated += res.rotated;
  out.flag_fixed += res.flag_fixed;
  out.already_active += b.tally.active_ok + res.flag_fixed;
  out.conflicts += conflicts;
  const auto rejected = static_cast<std::int64_t>(res.rejected.size());
  const auto rewritten = static_cast<std::int64_t>(res.rewritten.size());
  for (auto& r : res.rejected) {
    KEYMIG_LOG(warn, "engine", "row_rejected", {"run_id", run_id}, {"id", r.id},
               {"reason", r.reason});
    out.note_rejected(std::move(r));
  }
  for (auto& id : res.rewritten) out.note_rewritten(std::move(id));
  if (auto* m = options.metrics) {
    const auto target = table.label();
    m->observe_batch(target, "ok", seconds_since(start));
    m->add_rows(target, "rotated", res.rotated);
    m->add_rows(target, "already_active", b.tally.active_ok + res.flag_fixed);
    m->add_rows(target, "flag_fixed", res.flag_fixed);
    m->add_rows(target, "empty", b.tally.empty);
    m->add_rows(target, "undecryptable", b.tally.undecryptable);
    m->add_rows(target, "conflict", conflicts);
    m->add_rows(target, "rejected", rejected);
    m->add_rows(target, "rewritten", rewritten);
  }
  for (auto& ch : b.changes) {
    ch.old_token.wipe();
    ch.new_token.wipe();
  }
}

void count_crypto(const Options& options, const Tally& t) {
  if (auto* m = options.metrics) {
    m->add_crypto_operations("classify", t.classify_ops);
    m->add_crypto_operations("decrypt", t.decrypt_ops);
    m->add_crypto_operations("encrypt", t.encrypt_ops);
  }
}

}  // namespace keymig::engine::detail
