#include <unistd.h>

#include <algorithm>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "keymig/db/batch.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "pipeline.hpp"

namespace keymig::engine {

using namespace detail;

namespace {

std::string selection_json(const db::Selection& f) {
  if (f.empty()) return "null";
  nlohmann::json j;
  if (!f.ids.empty()) j["ids"] = f.ids;
  if (!f.usernames.empty()) j["usernames"] = f.usernames;
  return j.dump();
}

db::Selection selection_from_json(const std::string& text) {
  db::Selection f;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return f;
  if (j.contains("ids")) f.ids = j["ids"].get<std::vector<std::string>>();
  if (j.contains("usernames")) f.usernames = j["usernames"].get<std::vector<std::string>>();
  return f;
}

// Sums what the writer learns; one thread (the serial sink) touches it.
struct Outcome {
  Tally tally;
  std::int64_t rotated = 0, flag_fixed = 0, already_active = 0, conflicts = 0;
  // Ids for the sweep, at most kMaxListedRows: memory must not follow the table when an
  // application rewrites secrets as fast as we do. The rest stay counted as conflicts
  // (a later run picks those rows up).
  std::vector<std::string> conflict_ids;
  std::int64_t unswept = 0;
  std::vector<UndecryptableRow> undecryptable_rows;
  void note_conflict(std::string id) {
    if (conflict_ids.size() < kMaxListedRows)
      conflict_ids.push_back(std::move(id));
    else
      ++unswept;
  }
  void take_undecryptable(std::vector<UndecryptableRow>& rows) {
    for (auto& r : rows)
      if (undecryptable_rows.size() < kMaxListedRows) undecryptable_rows.push_back(std::move(r));
  }
};

// Writes one batch (with retries) and folds its results into `out`.
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
  for (const auto& id : res.missed) out.note_conflict(id);
  out.rotated += res.rotated;
  out.flag_fixed += res.flag_fixed;
  out.already_active += b.tally.active_ok + res.flag_fixed;
  out.conflicts += conflicts;
  if (auto* m = options.metrics) {
    const auto target = table.label();
    m->observe_batch(target, "ok", seconds_since(start));
    m->add_rows(target, "rotated", res.rotated);
    m->add_rows(target, "already_active", b.tally.active_ok + res.flag_fixed);
    m->add_rows(target, "flag_fixed", res.flag_fixed);
    m->add_rows(target, "empty", b.tally.empty);
    m->add_rows(target, "undecryptable", b.tally.undecryptable);
    m->add_rows(target, "conflict", conflicts);
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

}  // namespace

MigrateReport migrate(const crypto::KeyRing& keys, const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  MigrateReport report;
  report.dry_run = options.dry_run;

  db::Connection reader = open_connection(options.connect, options.metrics);
  // Opening a session costs tens of milliseconds (a server process each). The writer's
  // and the other lanes' sessions open in the background while the reader checks the
  // target and plans the run: only once the reader is in, so that a database that cannot
  // be reached is reported (and retried) once, not once per session. Sessions a resumed
  // run's selection turns out not to need are closed unused.
  const int cores =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  const int max_lanes = (options.dry_run || !options.selection.empty())
                            ? 1
                            : std::max(1, std::min(options.lanes > 0 ? options.lanes : cores, 8));
  auto open_later = [&options](metrics::Metrics* m) {
    return std::async(std::launch::async,
                      [connect = options.connect, m] { return open_connection(connect, m); });
  };
  std::future<db::Connection> writer_later =
      open_later(options.dry_run ? nullptr : options.metrics);
  // A lane whose pipeline has one thread never reads while it writes: it reads and
  // writes on one session. Its backend then updates pages it has just read, instead of
  // a second backend faulting the same shared buffers into its own address space.
  const bool lane_shares_session = cores / max_lanes <= 1;
  std::vector<std::pair<std::future<db::Connection>, std::future<db::Connection>>> lanes_later;
  for (int lane = 1; lane < max_lanes; ++lane)
    lanes_later.emplace_back(
        lane_shares_session ? std::future<db::Connection>() : open_later(options.metrics),
        open_later(options.metrics));

  db::ensure_schema(reader);
  const db::Table table = db::check_target(reader, target_spec(options.target));
  report.target = table.label();
  Options opts = options;  // the selection may come from the resumed run

  // Which run: the named one (joined, or created under that id), the newest unfinished
  // one of this target and selection, or a new one.
  std::optional<db::Run> run;
  const std::string active_fp = keys.fingerprint(0);
  if (!opts.dry_run) {
    if (!opts.run_id.empty()) {
      run = db::load_run(reader, opts.run_id);
      if (run) {
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
        report.resumed = true;
      }
    } else if (opts.resume) {
      run =
          db::find_unfinished_run(reader, table.label(), "migrate", selection_json(opts.selection));
      if (run && !run->active_fingerprint.empty() && run->active_fingerprint != active_fp) {
        KEYMIG_LOG(warn, "engine", "unfinished_run_other_key", {"run_id", run->run_id},
                   {"run_active_key", run->active_fingerprint}, {"active_key", active_fp});
        db::set_run_state(reader, run->run_id, "failed", "superseded: the active key changed");
        run.reset();
      }
      if (run) report.resumed = true;
    }
  }
  if (report.resumed) {
    KEYMIG_LOG(info, "engine", "run_resumed", {"run_id", run->run_id}, {"state", run->state},
               {"checkpoint", run->checkpoint.value_or("")},
               {"rows_scanned", run->counts.rows_scanned});
  }

  report.not_found = db::missing_selection(reader, table, opts.selection);
  const bool new_run = !opts.dry_run && !run;
  // Chunks of up to 10 batches, but at least 16 per lane when the table is small, so that
  // the lanes (and the workers sharing a run) end together instead of one finishing a
  // last large chunk alone; sized from PostgreSQL's estimate of the table, in whole batches.
  const std::int64_t batch = std::max<std::int64_t>(1, opts.batch_size);
  std::int64_t per_chunk = opts.rows_per_chunk;
  if (per_chunk <= 0) {
    per_chunk = batch * 10;
    if (new_run && opts.selection.empty()) {
      const std::int64_t estimate = db::estimated_rows(reader, table);
      if (estimate >= 0)
        per_chunk =
            std::clamp(estimate / (16 * max_lanes) / batch, std::int64_t{1}, std::int64_t{10}) *
            batch;
    }
  }
  // A new run over the whole table counts its rows while it plans the chunks.
  std::int64_t total = 0;
  std::vector<std::optional<std::string>> bounds{std::nullopt};
  if (new_run && opts.selection.empty())
    bounds = db::chunk_boundaries(reader, table, per_chunk, &total);
  else
    total = db::count_rows(reader, table, opts.selection.empty() ? nullptr : &opts.selection);

  if (new_run) {
    db::Run fresh;
    fresh.run_id = opts.run_id.empty() ? new_run_id("m", 8) : opts.run_id;
    fresh.kind = "migrate";
    fresh.target = table.label();
    fresh.active_fingerprint = active_fp;
    for (std::size_t i = 1; i <= keys.rolling_count(); ++i)
      fresh.rolling_fingerprints.push_back(keys.fingerprint(static_cast<int>(i)));
    fresh.selection_json = selection_json(opts.selection);
    fresh.journal = opts.journal;
    fresh.host = host_name();
    fresh.pid = static_cast<int>(getpid());
    if (!db::create_run(reader, fresh, bounds)) {
      // Another worker created it a moment ago: join it.
      report.resumed = true;
    }
    run = db::load_run(reader, fresh.run_id);
    if (!run) throw db::DbError("run " + fresh.run_id + " vanished after creation", "KM002", false);
    KEYMIG_LOG(info, "engine", report.resumed ? "run_joined" : "run_started",
               {"run_id", run->run_id}, {"target", run->target}, {"active_key", active_fp},
               {"chunks", static_cast<std::int64_t>(bounds.size())}, {"rows", total});
  }
  if (run) {
    report.run_id = run->run_id;
    opts.journal = run->journal;
    db::claim_run(reader, run->run_id, host_name(), static_cast<int>(getpid()));
  }

  if (opts.metrics) opts.metrics->set_run_in_progress(true);
  db::Connection writer = writer_later.get();
  Outcome out;
  ProgressMeter meter(opts, total, run ? run->counts.rows_scanned : 0);
  const bool has_flag = table.has_flag();
  // Lanes: independent reader -> rotate -> writer pipelines, each leasing its own chunks,
  // so that PostgreSQL writes on as many backends as there are cores. One lane for a
  // dry run or a selection (nothing to share).
  const int lanes = (opts.dry_run || !run || !opts.selection.empty()) ? 1 : max_lanes;
  std::atomic<bool> abort{false};
  bool stopped = false;
  // --max-rows-per-second is the process's rate, whatever the number of lanes.
  const auto pacer = std::make_shared<Pacer>();

  auto fail_run = [&](const std::exception& e) {
    if (opts.metrics) opts.metrics->set_run_in_progress(false);
    if (!run) return;
    try {
      db::Connection conn = open_connection(opts.connect, nullptr);
      db::set_run_state(conn, run->run_id, "failed", e.what());
    } catch (const std::exception&) {
      // The run stays "running"; a later migrate resumes it all the same.
    }
  };

  // One lane: its session (or its reading and writing sessions, with more than one thread);
  // the first lane uses the ones already open.
  auto run_lane = [&](int lane, db::Connection& rconn, db::Connection& wconn, Outcome& lane_out,
                      bool& lane_stopped) {
    PageSource source(rconn, table, opts);
    source.set_abort(&abort);
    source.share_pacer(pacer);
    if (run)
      source.use_run(run->run_id,
                     host_name() + ":" + std::to_string(getpid()) + ":" + std::to_string(lane));
    run_pipeline(
        std::max(1, cores / lanes), [&] { return source.next(); },
        [&](Batch& b) { transform(b, keys, Mode::migrate, has_flag); },
        [&](std::unique_ptr<Batch> b) {
          lane_out.tally.add(b->tally);
          lane_out.take_undecryptable(b->undecryptable);
          count_crypto(opts, b->tally);
          if (opts.dry_run) {
            lane_out.rotated += b->tally.rolling;
            lane_out.flag_fixed += b->tally.flag_wrong;
            lane_out.already_active += b->tally.active;
          } else {
            write_and_count(wconn, table, opts, run->run_id, *b, true, lane_out);
          }
          meter.add(b->tally.rows);
        });
    lane_stopped = source.stopped() && !abort.load();
  };

  try {
    if (lanes == 1) {
      run_lane(0, reader, writer, out, stopped);
    } else {
      std::vector<Outcome> outs(lanes);
      std::vector<char> lane_stopped(lanes, 0);
      std::vector<std::exception_ptr> errors(lanes);
      std::vector<std::thread> threads;
      for (int lane = 0; lane < lanes; ++lane) {
        threads.emplace_back([&, lane] {
          try {
            bool st = false;
            if (lane == 0) {
              run_lane(0, lane_shares_session ? writer : reader, writer, outs[0], st);
            } else {
              auto& later = lanes_later[static_cast<std::size_t>(lane - 1)];
              db::Connection w = later.second.get();
              if (lane_shares_session) {
                run_lane(lane, w, w, outs[lane], st);
              } else {
                db::Connection r = later.first.get();
                run_lane(lane, r, w, outs[lane], st);
              }
            }
            lane_stopped[lane] = st ? 1 : 0;
          } catch (...) {
            errors[lane] = std::current_exception();
            abort = true;  // the other lanes drain: their batches in flight commit
          }
        });
      }
      for (auto& t : threads) t.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      for (int lane = 0; lane < lanes; ++lane) {
        auto& o = outs[lane];
        out.tally.add(o.tally);
        out.rotated += o.rotated;
        out.flag_fixed += o.flag_fixed;
        out.already_active += o.already_active;
        out.conflicts += o.conflicts;
        for (auto& id : o.conflict_ids) out.note_conflict(std::move(id));
        out.unswept += o.unswept;
        out.take_undecryptable(o.undecryptable_rows);
        if (lane_stopped[lane]) stopped = true;
      }
    }

    // The sweep: rows whose CAS missed are read once more and handled as new rows.
    if (!out.conflict_ids.empty() && !opts.dry_run) {
      std::vector<std::string> ids;
      ids.swap(out.conflict_ids);
      const std::int64_t first_conflicts = out.conflicts;
      Outcome sweep;
      const std::size_t page = static_cast<std::size_t>(std::max<std::int64_t>(1, opts.batch_size));
      std::int64_t found = 0;
      for (std::size_t i = 0; i < ids.size(); i += page) {
        std::vector<std::string> part(ids.begin() + i,
                                      ids.begin() + std::min(ids.size(), i + page));
        Batch b;
        b.rows = db::with_retry(
            writer, [&] { return db::read_rows(writer, table, part); },
            retry_hook(opts.metrics, "sweep"));
        found += static_cast<std::int64_t>(b.rows.size());
        transform(b, keys, Mode::migrate, has_flag);
        count_crypto(opts, b.tally);
        sweep.tally.add(b.tally);
        sweep.take_undecryptable(b.undecryptable);
        write_and_count(writer, table, opts, run->run_id, b, false, sweep);
      }
      const std::int64_t resolved = static_cast<std::int64_t>(ids.size()) - sweep.conflicts;
      out.rotated += sweep.rotated;
      out.flag_fixed += sweep.flag_fixed;
      out.already_active += sweep.already_active;
      out.tally.empty += sweep.tally.empty;
      out.tally.undecryptable += sweep.tally.undecryptable;
      out.take_undecryptable(sweep.undecryptable_rows);
      out.conflicts = first_conflicts - resolved;
      report.conflicts_resolved = resolved;
      db::RunCounts delta;
      delta.rotated = sweep.rotated;
      delta.already_active = sweep.already_active;
      delta.flag_fixed = sweep.flag_fixed;
      delta.empty = sweep.tally.empty;
      delta.undecryptable = sweep.tally.undecryptable;
      delta.conflicts = -resolved;
      db::with_retry(
          writer, [&] { db::add_run_counts(writer, run->run_id, delta); },
          retry_hook(opts.metrics, "sweep"));
      KEYMIG_LOG(info, "engine", "conflict_sweep", {"run_id", run->run_id},
                 {"rows", static_cast<std::int64_t>(ids.size())}, {"found", found},
                 {"resolved", resolved}, {"still_conflicting", sweep.conflicts},
                 {"not_swept", out.unswept});
    }
  } catch (const std::exception& e) {
    fail_run(e);
    throw;
  }
  meter.finish();

  report.stopped = stopped;
  report.rows_scanned = out.tally.rows;
  report.rotated = out.rotated;
  report.already_active = out.already_active;
  report.flag_fixed = out.flag_fixed;
  report.empty = out.tally.empty;
  report.undecryptable = out.tally.undecryptable;
  report.conflicts = out.conflicts;
  report.undecryptable_rows = std::move(out.undecryptable_rows);
  report.by_key = key_rows(keys, out.tally.by_key);
  if (run) {
    bool done = false;
    if (!report.stopped)
      done = db::with_retry(reader, [&] { return db::complete_run_if_done(reader, run->run_id); });
    auto final_run = db::load_run(reader, run->run_id);
    report.state = final_run ? final_run->state : "unknown";
    if (final_run) report.run_totals = final_run->counts;
    KEYMIG_LOG(info, "engine", done ? "run_completed" : "run_left", {"run_id", run->run_id},
               {"state", report.state}, {"rotated", report.rotated},
               {"conflicts", report.conflicts}, {"undecryptable", report.undecryptable});
  } else {
    report.state = "dry_run";
  }
  report.seconds = seconds_since(start);
  publish_rows_by_key(opts.metrics, report.target, report.by_key, report.undecryptable,
                      report.empty);
  if (auto* m = opts.metrics) {
    m->set_run_in_progress(false);
    if (!opts.dry_run && report.state == "completed")
      m->set_last_success("migrate", std::chrono::duration<double>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  }
  return report;
}

}  // namespace keymig::engine
