#pragma once

// The serial source stage: keyset pages of the target, either one range over the whole
// (filtered) target or the chunks of a run, leased one after another, paced to the
// process's rate. It is the first half of the checkpoint protocol (docs/DESIGN.md
// section 2): each page of a chunk carries the db::ChunkStep it makes, from where this
// worker left the chunk's checkpoint to the page's last id, and db::write_batch (the
// batch writer) applies that step in the page's own transaction or refuses it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "batch.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/target.hpp"
#include "keymig/db/users.hpp"
#include "keymig/engine/engine.hpp"
#include "throttle.hpp"

namespace keymig::engine::detail {

/// Serial source of keyset pages. Not thread-safe: the pipeline's serial stage calls it.
class PageSource {
 public:
  PageSource(db::Connection& conn, const db::Table& table, const Options& options);
  /// Reads the chunks of this run, leased under `worker`, instead of one range.
  void use_run(std::string run_id, std::string worker);
  /// Reads the admin view's username and sysadmin columns too (db::Row's user fields).
  void read_users(const db::UserTable& users) noexcept { users_ = &users; }
  /// Next page, or null when done or on stop. Throws DbError after retries.
  [[nodiscard]] std::unique_ptr<Batch> next();
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }
  /// A second stop signal, internal to the engine (a sibling lane failed).
  void set_abort(const std::atomic<bool>* abort) noexcept { abort_ = abort; }
  /// Lanes of one process share one throttle (by default each source has its own): the
  /// rate is the process's, and critical load ends every lane's source.
  void share_throttle(std::shared_ptr<Throttle> throttle) { throttle_ = std::move(throttle); }

 private:
  void throttle(std::int64_t rows);
  [[nodiscard]] bool stop_requested() const noexcept {
    return (options_.stop && options_.stop->load()) || (abort_ && abort_->load()) ||
           throttle_->critical();
  }
  const std::atomic<bool>* abort_ = nullptr;
  db::Connection& conn_;
  const db::Table& table_;
  const Options& options_;
  const db::UserTable* users_ = nullptr;
  std::string run_id_, worker_;
  bool run_mode_ = false;
  bool have_range_ = false;
  bool finished_ = false;
  bool stopped_ = false;
  int lease_pid_ = 0;  // the backend that holds this source's leases
  std::optional<db::Chunk> chunk_;
  std::optional<std::string> cursor_;         // last id read
  std::optional<std::string> db_checkpoint_;  // the chunk's checkpoint as committed
  std::shared_ptr<Throttle> throttle_ = std::make_shared<Throttle>(options_);
};

}  // namespace keymig::engine::detail
