#include "run_plan.hpp"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "connect.hpp"
#include "key_rows.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"

namespace keymig::engine::detail {

std::string selection_json(const db::Selection& f) {
  if (f.empty()) return "null";
  nlohmann::json j;
  if (!f.ids.empty()) j["ids"] = f.ids;
  if (!f.usernames.empty()) j["usernames"] = f.usernames;
  return j.dump();
}

namespace {

db::Selection selection_from_json(const std::string& text) {
  db::Selection f;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return f;
  if (j.contains("ids")) f.ids = j["ids"].get<std::vector<std::string>>();
  if (j.contains("usernames")) f.usernames = j["usernames"].get<std::vector<std::string>>();
  return f;
}

// Which run: the named one (joined, or created under that id later), or the newest
// unfinished one of this target and selection.
std::optional<db::Run> existing_run(db::Connection& reader, const db::Table& table,
                                    const std::string& active_fp, Options& opts) {
  std::optional<db::Run> run;
  if (!opts.run_id.empty()) {
    run = db::load_run(reader, opts.run_id);
    if (!run) return run;
    if (run->kind != "migrate")
      throw UsageError("run " + run->run_id + " is a " + run->kind + " run, not a migration");
    if (run->target != table.label())
      throw UsageError("run " + run->run_id + " migrates " + run->target + ", not " +
                       table.label());
    if (run->state == "rolled_back" || run->state == "finalized")
      throw UsageError("run " + run->run_id + " is " + run->state + ": start a new run");
    if (!run->active_fingerprint.empty() && run->active_fingerprint != active_fp)
      throw UsageError("run " + run->run_id + " was started with active key " +
                       run->active_fingerprint + ", the configured active key is " + active_fp);
    if (opts.selection.empty()) opts.selection = selection_from_json(run->selection_json);
  } else if (opts.resume) {
    run = db::find_unfinished_run(reader, table.label(), "migrate", selection_json(opts.selection));
    if (run && !run->active_fingerprint.empty() && run->active_fingerprint != active_fp) {
      KEYMIG_LOG(warn, "engine", "unfinished_run_other_key", {"run_id", run->run_id},
                 {"run_active_key", run->active_fingerprint}, {"active_key", active_fp});
      db::set_run_state(reader, run->run_id, "failed", "superseded: the active key changed");
      run.reset();
    }
  }
  return run;
}

// Chunks of up to 10 batches, but at least 16 per lane when the table is small, so that
// the lanes (and the workers sharing a run) end together instead of one finishing a
// last large chunk alone; sized from PostgreSQL's estimate of the table, in whole batches.
std::int64_t rows_per_chunk(db::Connection& reader, const db::Table& table, const Options& opts,
                            bool new_run, int max_lanes) {
  const std::int64_t batch = std::max<std::int64_t>(1, opts.batch_size);
  if (opts.rows_per_chunk > 0) return opts.rows_per_chunk;
  std::int64_t per_chunk = batch * 10;
  if (new_run && opts.selection.empty()) {
    const std::int64_t estimate = db::estimated_rows(reader, table);
    if (estimate >= 0)
      per_chunk =
          std::clamp(estimate / (16 * max_lanes) / batch, std::int64_t{1}, std::int64_t{10}) *
          batch;
  }
  return per_chunk;
}

db::Run new_run_record(const crypto::KeyRing& keys, const db::Table& table, const Options& opts) {
  db::Run fresh;
  fresh.run_id = opts.run_id.empty() ? new_run_id("m", 8) : opts.run_id;
  // "RUN/name": one target's part of a run over several (targets.cpp names them so).
  if (const auto slash = fresh.run_id.find('/'); slash != std::string::npos) {
    fresh.run_group = fresh.run_id.substr(0, slash);
    for (const auto& t : opts.targets) fresh.group_targets.push_back(t.name);
  }
  fresh.kind = "migrate";
  fresh.target = table.label();
  fresh.active_fingerprint = keys.fingerprint(0);
  fresh.rolling_fingerprints = rolling_fingerprints(keys);
  fresh.selection_json = selection_json(opts.selection);
  fresh.journal = opts.journal;
  fresh.host = host_name();
  fresh.pid = static_cast<int>(getpid());
  return fresh;
}

}  // namespace

RunPlan plan_run(db::Connection& reader, const db::Table& table, const crypto::KeyRing& keys,
                 Options& opts, int max_lanes) {
  RunPlan plan;
  const std::string active_fp = keys.fingerprint(0);
  if (!opts.dry_run) {
    plan.run = existing_run(reader, table, active_fp, opts);
    plan.resumed = plan.run.has_value();
  }
  if (plan.resumed) {
    const auto& run = *plan.run;
    KEYMIG_LOG(info, "engine", "run_resumed", {"run_id", run.run_id}, {"state", run.state},
               {"checkpoint", run.checkpoint.value_or("")},
               {"rows_scanned", run.counts.rows_scanned});
  }

  const bool new_run = !opts.dry_run && !plan.run;
  const std::int64_t per_chunk = rows_per_chunk(reader, table, opts, new_run, max_lanes);
  // A new run over the whole table counts its rows while it plans the chunks.
  std::vector<std::optional<std::string>> bounds{std::nullopt};
  if (new_run && opts.selection.empty())
    bounds = db::chunk_boundaries(reader, table, per_chunk, &plan.total);
  else
    plan.total = db::count_rows(reader, table, opts.selection.empty() ? nullptr : &opts.selection);

  if (new_run) {
    const db::Run fresh = new_run_record(keys, table, opts);
    // false: another worker created it a moment ago: join it.
    if (!db::create_run(reader, fresh, bounds)) plan.resumed = true;
    plan.run = db::load_run(reader, fresh.run_id);
    if (!plan.run)
      throw db::DbError("run " + fresh.run_id + " vanished after creation", "KM002", false);
    KEYMIG_LOG(info, "engine", plan.resumed ? "run_joined" : "run_started",
               {"run_id", plan.run->run_id}, {"target", plan.run->target},
               {"active_key", active_fp}, {"chunks", static_cast<std::int64_t>(bounds.size())},
               {"rows", plan.total});
  }
  if (plan.run) {
    // Held shared by the reader until migrate ends: a rollback of this run (exclusive)
    // cannot start while rows are rotated, nor rows be rotated while it restores them.
    const std::string& id = plan.run->run_id;
    if (!db::try_lock_run(reader, id, /*exclusive=*/false))
      throw UsageError("run " + id + " is being rolled back: wait for the rollback to end");
    auto now = db::load_run(reader, id);  // a rollback may have ended since it was read
    if (now && (now->state == "rolled_back" || now->state == "finalized"))
      throw UsageError("run " + id + " is " + now->state + ": start a new run");
    opts.journal = plan.run->journal;
    db::claim_run(reader, id, host_name(), static_cast<int>(getpid()));
  }
  return plan;
}

}  // namespace keymig::engine::detail
