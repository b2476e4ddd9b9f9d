#include "conflict_sweep.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "connect.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/log.hpp"
#include "transform.hpp"

namespace keymig::engine::detail {

std::int64_t sweep_conflicts(db::Connection& conn, const db::Table& table,
                             const crypto::KeyRing& keys, const Options& opts,
                             const std::string& run_id, Outcome& out,
                             const AcknowledgedIds* acknowledged, Throttle& throttle) {
  std::vector<std::string> ids;
  ids.swap(out.conflict_ids);
  const std::int64_t first_conflicts = out.conflicts;
  Outcome sweep;
  const std::size_t page = static_cast<std::size_t>(std::max<std::int64_t>(1, opts.batch_size));
  std::int64_t found = 0;
  for (std::size_t i = 0; i < ids.size(); i += page) {
    std::vector<std::string> part(ids.begin() + i, ids.begin() + std::min(ids.size(), i + page));
    Batch b;
    b.rows = db::with_retry(
        conn, [&] { return db::read_rows(conn, table, part); }, retry_hook(opts.metrics, "sweep"));
    found += static_cast<std::int64_t>(b.rows.size());
    transform(b, keys, Mode::migrate, table.has_flag(), acknowledged);
    count_crypto(opts, b.tally);
    sweep.tally.add(b.tally);
    sweep.take_undecryptable(b.undecryptable);
    throttle.admit([&] { return opts.stop && opts.stop->load(); });
    write_and_count(conn, table, opts, run_id, b, false, sweep);
  }
  const std::int64_t resolved = static_cast<std::int64_t>(ids.size()) - sweep.conflicts;
  out.rotated += sweep.rotated;
  out.flag_fixed += sweep.flag_fixed;
  out.already_active += sweep.already_active;
  out.tally.empty += sweep.tally.empty;
  out.tally.undecryptable += sweep.tally.undecryptable;
  out.tally.acknowledged += sweep.tally.acknowledged;
  out.take_undecryptable(sweep.undecryptable_rows);
  for (auto& r : sweep.rejected_rows) out.note_rejected({std::move(r.id), std::move(r.reason)});
  out.rejected += sweep.rejected - static_cast<std::int64_t>(sweep.rejected_rows.size());
  for (auto& id : sweep.rewritten_rows) out.note_rewritten(std::move(id));
  out.rewritten += sweep.rewritten - static_cast<std::int64_t>(sweep.rewritten_rows.size());
  out.conflicts = first_conflicts - resolved;
  db::RunCounts delta;
  delta.rotated = sweep.rotated;
  delta.already_active = sweep.already_active;
  delta.flag_fixed = sweep.flag_fixed;
  delta.empty = sweep.tally.empty;
  delta.undecryptable = sweep.tally.undecryptable;
  delta.conflicts = -resolved;
  delta.rejected = sweep.rejected;
  delta.rewritten = sweep.rewritten;
  db::with_retry(
      conn, [&] { db::add_run_counts(conn, run_id, delta); }, retry_hook(opts.metrics, "sweep"));
  KEYMIG_LOG(info, "engine", "conflict_sweep", {"run_id", run_id},
             {"rows", static_cast<std::int64_t>(ids.size())}, {"found", found},
             {"resolved", resolved}, {"still_conflicting", sweep.conflicts},
             {"not_swept", out.unswept});
  return resolved;
}

}  // namespace keymig::engine::detail
