#include "page_source.hpp"

#include <algorithm>
#include <thread>

#include "connect.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/log.hpp"

namespace keymig::engine::detail {

PageSource::PageSource(db::Connection& conn, const db::Table& table, const Options& options)
    : conn_(conn), table_(table), options_(options) {}

void PageSource::use_run(std::string run_id, std::string worker) {
  run_id_ = std::move(run_id);
  worker_ = std::move(worker);
  run_mode_ = true;
}

void PageSource::throttle(std::int64_t rows) {
  // Pace page reads so that rows leave the sources no faster than the rate; the writers
  // follow the sources, so this bounds the write rate too.
  throttle_->pace(rows, [this] { return stop_requested(); });
}

std::unique_ptr<Batch> PageSource::next() {
  const auto on_retry = retry_hook(options_.metrics, "read");
  // Read per page: a batch size retuned over /control/throttle applies to the next page.
  // Pages are keyset ranges inside a chunk whose bounds were fixed when the run was
  // planned, so a page of another size moves the checkpoint just as well.
  const std::int64_t configured = std::max<std::int64_t>(1, options_.batch_size);
  const std::int64_t limit =
      options_.control ? std::max<std::int64_t>(1, options_.control->batch_size(configured))
                       : configured;
  while (true) {
    if (stop_requested()) {
      stopped_ = true;
      return nullptr;
    }
    if (finished_) return nullptr;
    if (!have_range_) {
      if (!run_mode_) {
        have_range_ = true;
        chunk_.reset();
        cursor_.reset();
      } else {
        // The lanes of this call share the worker name up to the lane number: they never
        // take each other's chunks, whose sessions may be reconnecting.
        const std::string this_process = worker_.substr(0, worker_.rfind(':') + 1);
        chunk_ = db::with_retry(
            conn_, [&] { return db::lease_chunk(conn_, run_id_, worker_, this_process); },
            on_retry);
        if (!chunk_) {
          // Chunks held by live sessions of other processes (another worker, or the
          // backend of a killed process that has not noticed yet) may still come free:
          // wait for them. This process's other lanes finish theirs themselves; waiting
          // on them added up to the poll interval to the end of every run.
          auto live = db::with_retry(
              conn_, [&] { return db::live_foreign_leases(conn_, run_id_, this_process); },
              on_retry);
          if (live == 0) {
            finished_ = true;
            return nullptr;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          continue;
        }
        lease_pid_ = conn_.backend_pid();
        KEYMIG_LOG(debug, "engine", "chunk_leased", {"run_id", run_id_},
                   {"chunk", chunk_->chunk_no});
        have_range_ = true;
        db_checkpoint_ = chunk_->checkpoint;
        cursor_ = chunk_->checkpoint ? chunk_->checkpoint : chunk_->lo;
      }
    }
    throttle(limit);
    db::PageQuery q;
    q.after = cursor_;
    q.upto = chunk_ ? chunk_->hi : std::nullopt;
    q.limit = limit;
    q.filter = options_.selection.empty() ? nullptr : &options_.selection;
    q.users = users_;
    auto rows = db::with_retry(
        conn_, [&] { return db::read_page(conn_, table_, q); }, on_retry);
    // A lease names the session that holds it. After a reconnect, whether while reading
    // or while writing on this same session, the new session takes its leases over
    // before another worker finds them dead.
    if (run_mode_ && conn_.backend_pid() != lease_pid_) {
      db::with_retry(
          conn_, [&] { db::renew_leases(conn_, run_id_, worker_); }, on_retry);
      lease_pid_ = conn_.backend_pid();
    }
    auto batch = std::make_unique<Batch>();
    // A short page ends the chunk, and so does reaching its upper bound (the bounds are
    // the same id::text as the rows'): no extra empty read and write per chunk.
    const bool range_done =
        static_cast<std::int64_t>(rows.size()) < limit ||
        (chunk_ && chunk_->hi && !rows.empty() && rows.back().id == *chunk_->hi);
    std::optional<std::string> moved_to;
    if (!rows.empty()) {
      cursor_ = rows.back().id;
      moved_to = cursor_;
    }
    if (chunk_) {
      batch->chunk = db::ChunkStep{chunk_->chunk_no, db_checkpoint_, moved_to, range_done};
      if (moved_to) db_checkpoint_ = moved_to;
    }
    if (range_done) {
      have_range_ = false;
      if (!run_mode_) finished_ = true;
    }
    batch->rows = std::move(rows);
    // An empty page still travels when it closes a chunk: the writer marks it done.
    if (batch->rows.empty() && !(run_mode_ && range_done)) continue;
    return batch;
  }
}

}  // namespace keymig::engine::detail
