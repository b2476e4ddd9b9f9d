#include "lanes.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "connect.hpp"
#include "keymig/ids.hpp"
#include "page_source.hpp"
#include "pipeline.hpp"
#include "transform.hpp"

namespace keymig::engine::detail {

namespace {

// The lanes' worker names, host:pid:call:lane. `call` tells this call of run_lanes from
// any other: a serve process migrates many times under one pid, and a restarted container
// has the same host and pid as the one before it, whose dead leases must come free.
std::string worker_prefix() {
  static std::atomic<unsigned> calls{0};
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  return host_name() + ":" + std::to_string(getpid()) + ":" + std::to_string(ms) + "." +
         std::to_string(++calls) + ":";
}

std::future<db::Connection> open_later(const db::ConnectOptions& connect, metrics::Metrics* m) {
  return std::async(std::launch::async, [connect, m] { return open_connection(connect, m); });
}

}  // namespace

LaneSessions::LaneSessions(const Options& options)
    : cores_(options.threads > 0 ? options.threads
                                 : static_cast<int>(std::thread::hardware_concurrency())),
      max_lanes_(
          (options.dry_run || !options.selection.empty()) ? 1 : std::max(1, std::min(cores_, 8))),
      shares_(cores_ / max_lanes_ <= 1) {
  writer_later_ = open_later(options.connect, options.dry_run ? nullptr : options.metrics);
  for (int lane = 1; lane < max_lanes_; ++lane)
    lanes_later_.emplace_back(
        shares_ ? std::future<db::Connection>() : open_later(options.connect, options.metrics),
        open_later(options.connect, options.metrics));
}

db::Connection& LaneSessions::writer() {
  if (!writer_) writer_.emplace(writer_later_.get());
  return *writer_;
}

db::Connection LaneSessions::take_writer(int lane) {
  return lanes_later_[static_cast<std::size_t>(lane - 1)].second.get();
}

db::Connection LaneSessions::take_reader(int lane) {
  return lanes_later_[static_cast<std::size_t>(lane - 1)].first.get();
}

Outcome run_lanes(LaneSessions& sessions, db::Connection& reader, const db::Table& table,
                  const crypto::KeyRing& keys, const Options& opts,
                  const std::optional<db::Run>& run, ProgressMeter& meter,
                  const AcknowledgedIds* acknowledged, const std::shared_ptr<Throttle>& throttle) {
  db::Connection& writer = sessions.writer();
  const bool has_flag = table.has_flag();
  const int lanes = (opts.dry_run || !run || !opts.selection.empty()) ? 1 : sessions.max_lanes();
  const int cores = sessions.cores();
  std::atomic<bool> abort{false};
  const std::string workers = worker_prefix();

  // One lane: its session (or its reading and writing sessions, with more than one thread).
  auto run_lane = [&](int lane, db::Connection& rconn, db::Connection& wconn, Outcome& lane_out) {
    PageSource source(rconn, table, opts);
    source.set_abort(&abort);
    source.share_throttle(throttle);
    const auto stopping = [&] { return (opts.stop && opts.stop->load()) || abort.load(); };
    if (run) source.use_run(run->run_id, workers + std::to_string(lane));
    run_pipeline(
        std::max(1, cores / lanes), [&] { return source.next(); },
        [&](Batch& b) { transform(b, keys, Mode::migrate, has_flag, acknowledged); },
        [&](std::unique_ptr<Batch> b) {
          lane_out.tally.add(b->tally);
          lane_out.take_undecryptable(b->undecryptable);
          count_crypto(opts, b->tally);
          if (opts.dry_run) {
            lane_out.rotated += b->tally.rolling + b->tally.respelled;
            lane_out.flag_fixed += b->tally.flag_wrong;
            lane_out.already_active += b->tally.active;
          } else {
            // Here rather than at the source: the pages already in flight wait too, so no
            // batch commits while the throttle holds.
            throttle->admit(stopping);
            const auto began = std::chrono::steady_clock::now();
            write_and_count(wconn, table, opts, run->run_id, *b, true, lane_out);
            // The commit's latency is the server's own measure of how busy it is: what
            // the adaptive default backs off on.
            throttle->committed(std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - began));
          }
          meter.add(b->tally.rows);
        });
    lane_out.stopped = source.stopped() && !abort.load();
  };

  Outcome out;
  if (lanes == 1) {
    run_lane(0, reader, writer, out);
    return out;
  }
  std::vector<Outcome> outs(lanes);
  std::vector<std::exception_ptr> errors(lanes);
  std::vector<std::thread> threads;
  for (int lane = 0; lane < lanes; ++lane) {
    threads.emplace_back([&, lane] {
      try {
        if (lane == 0) {
          run_lane(0, sessions.lane_shares_session() ? writer : reader, writer, outs[0]);
        } else {
          db::Connection w = sessions.take_writer(lane);
          if (sessions.lane_shares_session()) {
            run_lane(lane, w, w, outs[lane]);
          } else {
            db::Connection r = sessions.take_reader(lane);
            run_lane(lane, r, w, outs[lane]);
          }
        }
      } catch (...) {
        errors[lane] = std::current_exception();
        abort = true;  // the other lanes drain: their batches in flight commit
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (auto& o : outs) out.add(o);
  return out;
}

}  // namespace keymig::engine::detail
