#pragma once

// The lanes of a migration: independent reader -> rotate -> writer pipelines, each leasing
// its own chunks, so that PostgreSQL writes on as many backends as there are cores; their
// sessions, their threads, and the joining of their outcomes.

#include <future>
#include <optional>
#include <utility>
#include <vector>

#include "batch_writer.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "progress.hpp"
#include "throttle.hpp"

namespace keymig::engine::detail {

/// The sessions a migration's lanes write (and read) on. Opening one costs tens of
/// milliseconds (a server process each), so they open in the background, from the
/// constructor on, while the reader checks the target and plans the run; the reader is
/// opened first, so that a database that cannot be reached is reported (and retried)
/// once, not once per session. Sessions a resumed run turns out not to need are closed
/// unused. Not thread-safe: the lanes each take their own.
class LaneSessions {
 public:
  explicit LaneSessions(const Options& options);
  /// Cores the lanes share: Options::threads, or all.
  [[nodiscard]] int cores() const noexcept { return cores_; }
  /// One lane per core, up to 8; one for a dry run or a selection (nothing to share).
  [[nodiscard]] int max_lanes() const noexcept { return max_lanes_; }
  /// A lane whose pipeline has one thread never reads while it writes, so it reads and
  /// writes on one session: its backend then updates pages it has just read, instead of
  /// a second backend faulting the same shared buffers into its own address space.
  [[nodiscard]] bool lane_shares_session() const noexcept { return shares_; }
  /// The first lane's writing session (waits until it is open). Throws DbError.
  [[nodiscard]] db::Connection& writer();
  /// Lane `lane` >= 1: its writing session, and its reading one unless it shares.
  [[nodiscard]] db::Connection take_writer(int lane);
  [[nodiscard]] db::Connection take_reader(int lane);

 private:
  int cores_;
  int max_lanes_;
  bool shares_;
  std::future<db::Connection> writer_later_;
  std::optional<db::Connection> writer_;
  std::vector<std::pair<std::future<db::Connection>, std::future<db::Connection>>> lanes_later_;
};

/// Runs the lanes (one without a run, for a dry run or a selection) until the source
/// ends or stops, and returns their joined outcome. Lane 0 reads on `reader`, or on the
/// writer when lanes share their session. A lane that fails makes the others drain
/// (their batches in flight commit); its exception is rethrown here. Undecryptable rows
/// whose ids are `acknowledged` (may be null) are counted and marked so. The lanes
/// share `throttle`: its rate paces their reads, it admits each batch before it is
/// written, and its critical load ends their sources as the stop flag does.
[[nodiscard]] Outcome run_lanes(LaneSessions& sessions, db::Connection& reader,
                                const db::Table& table, const crypto::KeyRing& keys,
                                const Options& options, const std::optional<db::Run>& run,
                                ProgressMeter& meter, const AcknowledgedIds* acknowledged,
                                const std::shared_ptr<Throttle>& throttle);

}  // namespace keymig::engine::detail
