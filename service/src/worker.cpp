// The worker lanes: scheduled runs, draining keymig.requests, executing a job and writing
// its result. The main lane runs the schedule and any request under the per-target lock;
// the selected lane takes only selected-user requests (db::ClaimScope::selected) and
// runs them meanwhile, without the lock, so that a "Remove MFA" for three users does not
// wait for a whole-table run. Each lane's thread owns its session, whose backend pid and
// start mark the lane's claims as live.

#include <algorithm>
#include <boost/asio/post.hpp>

#include "keymig/db/schema.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"
#include "keymig/redact.hpp"
#include "service_impl.hpp"

namespace keymig::service {

using std::chrono::milliseconds;
using std::chrono::system_clock;

namespace {

// The worker's patience with its database: a result must reach its row across a short
// outage (a failover, a restart), bounded so that shutdown does not hang on a database
// that is gone for good.
db::ConnectOptions worker_options(const std::string& dsn) {
  db::ConnectOptions o;
  o.dsn = dsn;
  o.max_retries = 6;
  o.retry_base_delay = milliseconds(250);
  o.retry_max_delay = milliseconds(4000);
  o.retry_refused = true;  // the database may be restarting: serve waits for it
  return o;
}

// requested_by and reason are the application's text, shown in logs, results and /status:
// one line, no terminal escapes, nothing token- or key-shaped (an admin may paste one into
// a reason), and short.
std::string audit_text(const std::string& text) {
  constexpr std::size_t kMaxAuditBytes = 200;
  std::string shown = scrub_tokens(text);
  const bool cut = shown.size() > kMaxAuditBytes;
  if (cut) shown.resize(kMaxAuditBytes);
  // After the cut: a UTF-8 sequence it split becomes a visible escape, not invalid JSON.
  return escape_control(shown) + (cut ? "..." : "");
}

bool table_missing_error(const db::DbError& e) {
  return e.sqlstate() == "42P01";  // undefined_table: keymig.requests is not there
}

}  // namespace

db::RetryHook Service::Impl::retry_hook(Lane& lane, const char* what, bool while_stopping) {
  return [this, &lane, what, while_stopping](const db::DbError& e, int attempt) {
    // A drain that is told to stop gives up at once, except for the write that puts the
    // interrupted request back in the queue.
    if (stop_flag && !while_stopping) throw e;
    if (e.connection_lost()) lane.named = false;
    metrics.add_db_retry();
    KEYMIG_LOG(warn, "service", "db_retry", {"lane", lane.name}, {"during", what},
               {"attempt", attempt}, {"sqlstate", e.sqlstate()}, {"error", one_line(e.what())});
  };
}

// A lane's queue work on its session under the one retry rule. The session is (re)named
// for this instance first (a reconnect resets application_name), so that people can tell
// it in pg_stat_activity.
template <typename Work>
auto Service::Impl::on_worker_session(Lane& lane, const char* what, Work&& work,
                                      bool while_stopping) {
  db::Connection& conn = *lane.conn;
  return db::with_retry(
      conn,
      [&] {
        if (!lane.named) {
          db::set_request_session_name(conn, instance);
          lane.named = true;
        }
        return work(conn);
      },
      retry_hook(lane, what, while_stopping));
}

std::vector<std::string> Service::Impl::target_tables(const Settings& s) {
  std::vector<std::string> tables;
  for (const auto& t : s.config.migration.targets)
    if (std::find(tables.begin(), tables.end(), t.table) == tables.end()) tables.push_back(t.table);
  return tables;
}

Service::Impl::TargetGuard Service::Impl::lock_target(Lane& lane, const Settings& s) {
  // Every configured table, without waiting: one held by another serve defers this one's
  // work whole (the locks taken so far go with the guard), so no two serves can deadlock.
  TargetGuard guard;
  for (const auto& table : target_tables(s)) {
    try {
      auto lock = on_worker_session(lane, "taking the target lock", [&](db::Connection& c) {
        return db::TargetLock::try_acquire(c, table);
      });
      if (!lock) return TargetGuard{true, {}};
      guard.locks.push_back(std::move(*lock));
    } catch (const db::TargetError& e) {
      // Nothing to keep others off: the job itself fails and reports the missing table.
      KEYMIG_LOG(warn, "service", "target_not_locked", {"error", one_line(e.what())});
    }
  }
  return guard;
}

void Service::Impl::lane_main(Lane& lane) {
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    cv.wait(lock, [&] {
      return stopping || lane.drain_wanted || (!lane.selected && (run_wanted || journal_wanted));
    });
    if (stopping) break;
    bool run = !lane.selected && std::exchange(run_wanted, false);
    bool drain = std::exchange(lane.drain_wanted, false);
    bool journal = !lane.selected && std::exchange(journal_wanted, false);
    lock.unlock();
    try {
      if (run) scheduled_run();
      if (drain) drain_requests(lane);
      if (journal) journal_round();
    } catch (const db::DbError& e) {
      KEYMIG_LOG(warn, "service", "database_unavailable", {"lane", lane.name},
                 {"error", one_line(e.what())}, {"sqlstate", e.sqlstate()});
      lane.conn.reset();
    } catch (const std::exception& e) {
      KEYMIG_LOG(error, "service", "worker_error", {"lane", lane.name},
                 {"error", one_line(e.what())});
      lane.conn.reset();
    }
    lock.lock();
  }
  lock.unlock();
  lane.conn.reset();
  if (lane.selected) return;
  // The main lane ends the service once both have let go of their work.
  if (selected_lane.thread.joinable()) selected_lane.thread.join();
  asio::post(io, [this] { finish_stop(); });
}

db::Connection& Service::Impl::work(Lane& lane, const Settings& s) {
  if (lane.conn && lane.dsn != s.dsn) lane.conn.reset();
  if (!lane.conn) {
    lane.conn = std::make_unique<db::Connection>(
        db::connect_with_retry(worker_options(s.dsn), retry_hook(lane, "connecting", false)));
    lane.dsn = s.dsn;
    lane.named = false;
  }
  if (!schema_ok_for(s.dsn)) {
    // keymig.requests must exist before the application can queue anything, so the
    // service creates the schema up front rather than at its first run.
    on_worker_session(lane, "creating the keymig schema",
                      [](db::Connection& c) { db::ensure_schema(c); });
    {
      std::lock_guard<std::mutex> lock(status_mu);
      schema_ok_dsn = s.dsn;
    }
    asio::post(io, [this] { update_ready(); });
  }
  return *lane.conn;
}

void Service::Impl::scheduled_run() {
  auto s = current_settings();
  work(main_lane, *s);
  TargetGuard target = lock_target(main_lane, *s);
  if (target.busy) {
    KEYMIG_LOG(info, "service", "scheduled_run_skipped",
               {"reason", "another keymig serve is running on the target"});
    return;
  }
  Job migrate;
  migrate.kind = JobKind::migrate;
  migrate.source = "schedule";
  RunOutcome out = execute(main_lane, migrate, s);
  if (!out.interrupted && (out.exit_code == kExitOk || out.exit_code == kExitUndecryptable)) {
    Job verify = migrate;
    verify.kind = JobKind::verify;
    json summary = json::parse(out.summary_json, nullptr, false);
    if (summary.is_object() && summary.contains("run_id") && summary["run_id"].is_string())
      verify.run_id = summary["run_id"].get<std::string>();
    execute(main_lane, verify, s);
  }
}

void Service::Impl::drain_requests(Lane& lane) {
  auto s = current_settings();
  std::vector<unsigned> own_tables;
  std::vector<db::TargetLock> target_locks;
  try {
    work(lane, *s);
    if (!lane.selected) {
      // Requests left `running` by an instance whose session is gone (crash, kill -9).
      const auto requeued =
          on_worker_session(lane, "requeueing stale requests",
                            [](db::Connection& c) { return db::requeue_stale_requests(c); });
      if (requeued > 0) KEYMIG_LOG(warn, "service", "stale_requests_requeued", {"count", requeued});
    }
  } catch (const db::DbError& e) {
    if (!table_missing_error(e)) throw;
    table_missing(lane);
    return;
  }
  if (lane.selected) {
    // No target lock: a selected-user request touches only its users, and the engine
    // runs it beside a whole-table run (its own run, its own run lock; a row both change
    // is a compare-and-swap conflict the sweep re-reads), which holds the lock meanwhile.
    for (const auto& table : target_tables(*s)) {
      try {
        own_tables.push_back(on_worker_session(
            lane, "resolving the target",
            [&](db::Connection& c) { return db::TargetLock::resolve(c, table); }));
      } catch (const db::TargetError&) {
        // A configured table is missing: requests naming it are refused at claim.
      }
    }
  } else {
    TargetGuard target = lock_target(lane, *s);
    if (target.busy) {
      KEYMIG_LOG(info, "service", "requests_deferred",
                 {"reason", "another keymig serve is running on the target"});
      retry_drain_later();
      return;
    }
    // Only requests naming this serve's table are ours: another deployment on the same
    // database works its own. A missing table leaves them queued (lock_target logged why).
    for (const auto& lock : target.locks) own_tables.push_back(lock.table_oid());
    target_locks = std::move(target.locks);
  }
  const auto scope = lane.selected ? db::ClaimScope::selected : db::ClaimScope::any;
  try {
    while (!stop_flag) {
      auto claimed = on_worker_session(lane, "claiming a request", [&](db::Connection& c) {
        return db::claim_next_request(c, instance, own_tables, scope, kMaxSelectedUsers);
      });
      if (!claimed) break;
      if (process(lane, *claimed, s) == db::RequestEnd::requeued && !stop_flag) {
        // The database went away under the job: give it time before the next claim
        // resumes it, rather than claiming it again at once.
        retry_drain_later();
        break;
      }
      s = current_settings();  // a SIGHUP between requests applies to the next one
    }
  } catch (const db::DbError& e) {
    if (!table_missing_error(e)) throw;
    table_missing(lane);
  }
}

void Service::Impl::table_missing(Lane& lane) {
  if (!lane.table_missing_logged)
    KEYMIG_LOG(warn, "service", "requests_table_missing", {"table", "keymig.requests"},
               {"hint", "run any keymig command once to create the keymig schema"});
  lane.table_missing_logged = true;
}

db::RequestEnd Service::Impl::process(Lane& lane, const db::ClaimedRequest& claimed,
                                      std::shared_ptr<const Settings> s) {
  const std::string requested_by = audit_text(claimed.requested_by);
  const std::string reason = audit_text(claimed.reason);
  KEYMIG_LOG(info, "service", "request_claimed", {"lane", lane.name}, {"request_id", claimed.id},
             {"kind", claimed.kind.substr(0, 32)}, {"queued_ms", claimed.wait_ms},
             {"requested_by", requested_by}, {"reason", reason});
  ParsedRequest parsed = parse_request(claimed.kind, claimed.params);
  RunOutcome out;
  bool database_lost = false;
  if (!claimed.refusal.empty()) {
    out.exit_code = kExitUsage;
    out.error = claimed.refusal;
  } else if (!parsed.job) {
    out.exit_code = kExitUsage;
    out.error = parsed.error;
  } else {
    parsed.job->request_id = claimed.id;
    parsed.job->requested_by = requested_by;
    parsed.job->reason = reason;
    out = execute(lane, *parsed.job, s, &database_lost);
  }
  json result = result_json(out);
  result["claimed_by"] = instance;
  // Nested: a report has fields of its own named "reason" (finalize's).
  result["request"] = {{"id", claimed.id}, {"requested_by", requested_by}, {"reason", reason}};
  if (out.interrupted) result["requeued"] = database_lost ? "database_unavailable" : "shutdown";
  const auto end = out.interrupted ? db::RequestEnd::requeued
                   : out.ok        ? db::RequestEnd::done
                                   : db::RequestEnd::failed;
  write_result(lane, claimed.id, end, result.dump());
  {
    std::lock_guard<std::mutex> lock(status_mu);
    if (out.interrupted)
      ++requests_requeued;
    else if (out.ok)
      ++requests_done;
    else
      ++requests_failed;
  }
  KEYMIG_LOG(info, "service",
             out.interrupted ? "request_requeued"
             : out.ok        ? "request_done"
                             : "request_failed",
             {"request_id", claimed.id}, {"exit_code", out.exit_code}, {"error", out.error},
             {"requested_by", requested_by}, {"reason", reason});
  return end;
}

void Service::Impl::write_result(Lane& lane, std::int64_t id, db::RequestEnd end,
                                 const std::string& result) {
  try {
    on_worker_session(
        lane, "writing a request's result",
        [&](db::Connection& c) { db::finish_request(c, id, end, result); },
        /*while_stopping=*/true);
  } catch (const db::DbError& e) {
    KEYMIG_LOG(error, "service", "request_result_lost", {"request_id", id},
               {"error", one_line(e.what())});
    throw;
  }
}

// The engine records the run metrics (last success, last failure, in progress) of every
// command on every way out; the service only reports the run in /status and its logs.
RunOutcome Service::Impl::execute(Lane& lane, const Job& job,
                                  const std::shared_ptr<const Settings>& s, bool* database_lost) {
  auto start = system_clock::now();
  const char* kind = job_kind_name(job.kind);
  {
    std::lock_guard<std::mutex> lock(status_mu);
    lane.current = {{"kind", kind},
                    {"lane", lane.name},
                    {"source", job.source},
                    {"started_at", iso8601_utc(start)},
                    {"selected_ids", job.selection.ids.size()},
                    {"selected_usernames", job.selection.usernames.size()}};
    if (job.request_id) {
      lane.current["request_id"] = job.request_id;
      lane.current["request"] = {
          {"id", job.request_id}, {"requested_by", job.requested_by}, {"reason", job.reason}};
    }
  }
  KEYMIG_LOG(info, "service", "run_started", {"lane", lane.name}, {"kind", kind},
             {"source", job.source}, {"request_id", job.request_id},
             {"requested_by", job.requested_by});
  RunOutcome out;
  try {
    // /status shows where the job is and why it waits, if it does ("paused (operator)").
    const ProgressSink progress = [this, &lane](const engine::Progress& p) {
      json doc = {{"rows_done", p.rows_done},
                  {"rows_total", p.rows_total},
                  {"rows_per_second", p.rows_per_second},
                  {"status", p.status.empty() ? std::string("running") : p.status}};
      if (p.eta_seconds >= 0) doc["eta_seconds"] = p.eta_seconds;
      std::lock_guard<std::mutex> lock(status_mu);
      if (!lane.current.is_null()) lane.current["progress"] = std::move(doc);
    };
    out = runner(job, *s, stop_flag, metrics, progress);
  } catch (const db::DbError& e) {
    out = RunOutcome{};
    out.exit_code = kExitRuntime;
    out.error = one_line(e.what());
    if (e.connection_lost()) {
      // The job lost its database after the engine's retries gave up: the job did not
      // fail, it was cut short, as by a drain (every batch is its own transaction, so the
      // next claim resumes it).
      out.interrupted = true;
      out.error = "database unavailable, queued again to resume: " + out.error;
      if (database_lost) *database_lost = true;
    }
  } catch (const std::exception& e) {
    out = RunOutcome{};
    out.exit_code = dynamic_cast<const keymig::UsageError*>(&e) ? kExitUsage : kExitRuntime;
    out.error = one_line(e.what());
  }
  if (stop_flag && !out.ok && out.error.empty()) out.interrupted = true;
  auto end = system_clock::now();
  double seconds = std::chrono::duration<double>(end - start).count();
  KEYMIG_LOG(info, "service", "run_finished", {"lane", lane.name}, {"kind", kind},
             {"source", job.source}, {"ok", out.ok}, {"exit_code", out.exit_code},
             {"interrupted", out.interrupted}, {"seconds", seconds});
  json record = result_json(out);
  record["source"] = job.source;
  record["lane"] = lane.name;
  if (job.request_id) {
    record["request_id"] = job.request_id;
    record["request"] = {
        {"id", job.request_id}, {"requested_by", job.requested_by}, {"reason", job.reason}};
  }
  record["started_at"] = iso8601_utc(start);
  record["finished_at"] = iso8601_utc(end);
  record["duration_seconds"] = seconds;
  std::lock_guard<std::mutex> lock(status_mu);
  lane.current = nullptr;
  last[kind] = std::move(record);
  return out;
}

}  // namespace keymig::service
