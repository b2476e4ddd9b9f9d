#pragma once

// Engine internals: the batch that flows through the oneTBB pipeline, the keyset page
// source (serial, owns the reading connection and the chunk leases), the per-row
// transforms (parallel), and the pipeline runner.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/db/batch.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// Per-batch counts, summed by the serial sink.
struct Tally {
  std::int64_t rows = 0;
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t active = 0;      // under the active key
  std::int64_t active_ok = 0;   // active and nothing to write (flag fine or no flag)
  std::int64_t rolling = 0;     // under a rolling key
  std::int64_t flag_wrong = 0;  // active, flag column not true
  std::int64_t verified_ok = 0;
  std::vector<std::int64_t> by_key;  // index = key_index
  std::map<std::string, std::int64_t> by_reason;
  std::int64_t classify_ops = 0, decrypt_ops = 0, encrypt_ops = 0;
  void add(const Tally& other);
};

/// A page of rows on its way through the pipeline, owned by one stage at a time.
struct Batch {
  std::vector<db::Row> rows;
  std::vector<db::Change> changes;  // migrate: what to write
  std::vector<UndecryptableRow> undecryptable;
  std::vector<std::string> needs_rolling;  // verify: ids
  Tally tally;
  std::optional<db::ChunkStep> chunk;  // run mode: the checkpoint step this batch makes
};

enum class Mode { scan, migrate, verify };

/// Classifies (scan), rotates (migrate) or verifies (verify) every row of the batch and
/// wipes the tokens it no longer needs. Thread-safe for distinct batches.
void transform(Batch& batch, const crypto::KeyRing& keys, Mode mode, bool has_flag);

/// Opens a connection, retrying while the server is unreachable or starting.
[[nodiscard]] db::Connection open_connection(const db::ConnectOptions& options,
                                             metrics::Metrics* metrics);

/// The retry hook: a log line and keymig_db_retries_total.
[[nodiscard]] db::RetryHook retry_hook(metrics::Metrics* metrics, const char* what);

/// Paces reads to options.max_rows_per_second across every lane that shares it: the
/// limit is the process's, not each lane's. Thread-safe.
class Pacer {
 public:
  /// The time at which `rows` more rows may be read (now or later); counts them.
  [[nodiscard]] std::chrono::steady_clock::time_point reserve(std::int64_t rows,
                                                              double rows_per_second);

 private:
  std::mutex mutex_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::int64_t reserved_ = 0;
};

/// Serial source of keyset pages: either one range over the whole (filtered) target, or
/// the chunks of a run, leased one after another until none is left.
class PageSource {
 public:
  PageSource(db::Connection& conn, const db::Table& table, const Options& options);
  void use_run(std::string run_id, std::string worker);
  /// Next page, or null when done or on stop. Throws DbError after retries.
  [[nodiscard]] std::unique_ptr<Batch> next();
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }
  /// A second stop signal, internal to the engine (a sibling lane failed).
  void set_abort(const std::atomic<bool>* abort) noexcept { abort_ = abort; }
  /// Lanes of one process share one pacer (by default each source has its own).
  void share_pacer(std::shared_ptr<Pacer> pacer) { pacer_ = std::move(pacer); }

 private:
  void throttle(std::int64_t rows);
  [[nodiscard]] bool stop_requested() const noexcept {
    return (options_.stop && options_.stop->load()) || (abort_ && abort_->load());
  }
  const std::atomic<bool>* abort_ = nullptr;
  db::Connection& conn_;
  const db::Table& table_;
  const Options& options_;
  std::string run_id_, worker_;
  bool run_mode_ = false;
  bool have_range_ = false;
  bool finished_ = false;
  bool stopped_ = false;
  int lease_pid_ = 0;  // the backend that holds this source's leases
  std::optional<db::Chunk> chunk_;
  std::optional<std::string> cursor_;         // last id read
  std::optional<std::string> db_checkpoint_;  // the chunk's checkpoint as committed
  std::shared_ptr<Pacer> pacer_ = std::make_shared<Pacer>();
};

/// Runs source -> parallel transform -> serial sink with `threads` workers and a few
/// batches in flight per worker. Exceptions from any stage cancel the pipeline and are
/// rethrown here.
void run_pipeline(int threads, const std::function<std::unique_ptr<Batch>()>& source,
                  const std::function<void(Batch&)>& work,
                  const std::function<void(std::unique_ptr<Batch>)>& sink);

/// Progress pacing: calls options.progress at most every 200 ms (and on finish).
/// Thread-safe: lanes share one.
class ProgressMeter {
 public:
  ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before);
  void add(std::int64_t rows);
  void finish();

 private:
  void emit();
  std::mutex mutex_;
  const Options& options_;
  std::int64_t total_, done_before_, done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

[[nodiscard]] db::TargetSpec target_spec(const config::Target& target);
[[nodiscard]] std::vector<KeyRows> key_rows(const crypto::KeyRing& keys,
                                            const std::vector<std::int64_t>& by_key);
[[nodiscard]] double seconds_since(std::chrono::steady_clock::time_point start);

/// keymig_rows_by_key for every configured key plus undecryptable and empty rows.
void publish_rows_by_key(metrics::Metrics* metrics, const std::string& target,
                         const std::vector<KeyRows>& by_key, std::int64_t undecryptable,
                         std::int64_t empty);

}  // namespace keymig::engine::detail
