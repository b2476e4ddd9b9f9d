#include "pipeline.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <thread>

#include "keymig/log.hpp"

namespace keymig::engine::detail {

void Tally::add(const Tally& o) {
  rows += o.rows;
  empty += o.empty;
  undecryptable += o.undecryptable;
  active += o.active;
  active_ok += o.active_ok;
  rolling += o.rolling;
  flag_wrong += o.flag_wrong;
  verified_ok += o.verified_ok;
  if (by_key.size() < o.by_key.size()) by_key.resize(o.by_key.size(), 0);
  for (std::size_t i = 0; i < o.by_key.size(); ++i) by_key[i] += o.by_key[i];
  for (const auto& [reason, n] : o.by_reason) by_reason[reason] += n;
  classify_ops += o.classify_ops;
  decrypt_ops += o.decrypt_ops;
  encrypt_ops += o.encrypt_ops;
}

namespace {

void note_undecryptable(Batch& b, const db::Row& row, crypto::Reason reason) {
  ++b.tally.undecryptable;
  ++b.tally.by_reason[crypto::reason_name(reason)];
  b.undecryptable.push_back({row.id, crypto::reason_name(reason)});
}

}  // namespace

void transform(Batch& b, const crypto::KeyRing& keys, Mode mode, bool has_flag) {
  b.tally.by_key.assign(keys.rolling_count() + 1, 0);
  if (mode == Mode::migrate) b.changes.reserve(b.rows.size());
  for (auto& row : b.rows) {
    ++b.tally.rows;
    if (row.is_null || row.token.empty()) {
      ++b.tally.empty;
      continue;
    }
    const bool flag_true = row.flag.value_or(false);
    if (mode == Mode::verify) {
      ++b.tally.decrypt_ops;
      auto d = keys.decrypt_active(row.token.view());
      if (d.ok()) {
        ++b.tally.by_key[0];
        ++b.tally.active;
        ++b.tally.verified_ok;
        if (has_flag && !flag_true) ++b.tally.flag_wrong;
        continue;
      }
      ++b.tally.classify_ops;
      auto c = keys.classify(row.token.view());
      if (c.reason == crypto::Reason::ok && c.key_index > 0) {
        ++b.tally.by_key[c.key_index];
        ++b.tally.rolling;
        b.needs_rolling.push_back(row.id);
      } else {
        note_undecryptable(b, row, c.reason == crypto::Reason::ok ? d.reason : c.reason);
      }
      continue;
    }
    if (mode == Mode::scan) {
      ++b.tally.classify_ops;
      auto c = keys.classify(row.token.view());
      if (c.reason != crypto::Reason::ok || c.key_index < 0) {
        note_undecryptable(b, row,
                           c.reason == crypto::Reason::ok ? crypto::Reason::unknown_key : c.reason);
        continue;
      }
      ++b.tally.by_key[c.key_index];
      if (c.key_index == 0) {
        ++b.tally.active;
        if (has_flag && !flag_true) ++b.tally.flag_wrong;
      } else {
        ++b.tally.rolling;
      }
      continue;
    }
    // migrate
    ++b.tally.classify_ops;
    auto r = keys.rotate(row.token.view());
    if (r.reason != crypto::Reason::ok || r.key_index < 0) {
      note_undecryptable(b, row,
                         r.reason == crypto::Reason::ok ? crypto::Reason::unknown_key : r.reason);
      continue;
    }
    ++b.tally.by_key[r.key_index];
    if (r.key_index == 0) {
      ++b.tally.active;
      if (has_flag && !flag_true) {
        ++b.tally.flag_wrong;
        db::Change ch;
        ch.id = row.id;
        ch.new_token = row.token.clone();
        ch.old_token = std::move(row.token);
        ch.old_flag = row.flag;
        b.changes.push_back(std::move(ch));
      } else {
        ++b.tally.active_ok;
      }
      continue;
    }
    ++b.tally.rolling;
    ++b.tally.decrypt_ops;
    ++b.tally.encrypt_ops;
    db::Change ch;
    ch.id = row.id;
    ch.old_token = std::move(row.token);
    ch.new_token = std::move(r.token);
    ch.old_flag = row.flag;
    b.changes.push_back(std::move(ch));
  }
  // Tokens not moved into changes are wiped now rather than when the batch dies.
  for (auto& row : b.rows) row.token.wipe();
}

db::Connection open_connection(const db::ConnectOptions& options, metrics::Metrics* metrics) {
  return db::connect_with_retry(options, [metrics](const db::DbError& e, int attempt) {
    if (metrics) metrics->add_db_retry();
    KEYMIG_LOG(warn, "engine", "connect_retry", {"attempt", attempt}, {"sqlstate", e.sqlstate()},
               {"error", e.what()});
  });
}

db::RetryHook retry_hook(metrics::Metrics* metrics, const char* what) {
  return [metrics, what](const db::DbError& e, int attempt) {
    if (metrics) metrics->add_db_retry();
    KEYMIG_LOG(warn, "engine", "db_retry", {"during", what}, {"attempt", attempt},
               {"sqlstate", e.sqlstate()}, {"error", e.what()});
  };
}

PageSource::PageSource(db::Connection& conn, const db::Table& table, const Options& options)
    : conn_(conn), table_(table), options_(options) {}

void PageSource::use_run(std::string run_id, std::string worker) {
  run_id_ = std::move(run_id);
  worker_ = std::move(worker);
  run_mode_ = true;
}

std::chrono::steady_clock::time_point Pacer::reserve(std::int64_t rows, double rows_per_second) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto due =
      start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(static_cast<double>(reserved_) / rows_per_second));
  reserved_ += rows;
  return due;
}

void PageSource::throttle(std::int64_t rows) {
  if (options_.max_rows_per_second <= 0) return;
  // Pace page reads so that rows leave the sources no faster than the rate; the writers
  // follow the sources, so this bounds the write rate too.
  const auto due = pacer_->reserve(rows, static_cast<double>(options_.max_rows_per_second));
  while (std::chrono::steady_clock::now() < due) {
    if (stop_requested()) return;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        due - std::chrono::steady_clock::now(), std::chrono::milliseconds(100)));
  }
}

std::unique_ptr<Batch> PageSource::next() {
  const auto on_retry = retry_hook(options_.metrics, "read");
  const std::int64_t limit = std::max<std::int64_t>(1, options_.batch_size);
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
        chunk_ = db::with_retry(
            conn_, [&] { return db::lease_chunk(conn_, run_id_, worker_); }, on_retry);
        if (!chunk_) {
          // Chunks held by live sessions of other processes (another worker, or the
          // backend of a killed process that has not noticed yet) may still come free:
          // wait for them. This process's other lanes finish theirs themselves; waiting
          // on them added up to the poll interval to the end of every run.
          const std::string this_process = worker_.substr(0, worker_.rfind(':') + 1);
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

void run_pipeline(int threads, const std::function<std::unique_ptr<Batch>()>& source,
                  const std::function<void(Batch&)>& work,
                  const std::function<void(std::unique_ptr<Batch>)>& sink) {
  int n = threads > 0 ? threads : tbb::info::default_concurrency();
  // A few batches per worker in flight: enough to overlap reading, rotating and
  // writing; bounded so memory does not grow with the table.
  const std::size_t tokens = static_cast<std::size_t>(n) * 2 + 2;
  // More threads than cores is allowed (the serial stages mostly wait on the database),
  // but TBB caps its worker pool at the core count unless told otherwise.
  std::optional<tbb::global_control> allow;
  if (n > tbb::info::default_concurrency())
    allow.emplace(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
  tbb::task_arena arena(n);
  arena.execute([&] {
    tbb::parallel_pipeline(tokens,
                           tbb::make_filter<void, std::unique_ptr<Batch>>(
                               tbb::filter_mode::serial_in_order,
                               [&](tbb::flow_control& fc) -> std::unique_ptr<Batch> {
                                 auto b = source();
                                 if (!b) fc.stop();
                                 return b;
                               }) &
                               tbb::make_filter<std::unique_ptr<Batch>, std::unique_ptr<Batch>>(
                                   tbb::filter_mode::parallel,
                                   [&](std::unique_ptr<Batch> b) {
                                     work(*b);
                                     return b;
                                   }) &
                               tbb::make_filter<std::unique_ptr<Batch>, void>(
                                   tbb::filter_mode::serial_in_order,
                                   [&](std::unique_ptr<Batch> b) { sink(std::move(b)); }));
  });
}

ProgressMeter::ProgressMeter(const Options& options, std::int64_t total, std::int64_t done_before)
    : options_(options), total_(total), done_before_(done_before) {}

void ProgressMeter::add(std::int64_t rows) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ += rows;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  emit();
}

void ProgressMeter::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  emit();
}

void ProgressMeter::emit() {
  Progress p;
  p.rows_done = done_before_ + done_;
  p.rows_total = std::max(total_, p.rows_done);
  double secs = seconds_since(start_);
  p.rows_per_second = secs > 0 ? static_cast<double>(done_) / secs : 0;
  p.eta_seconds = p.rows_per_second > 0
                      ? static_cast<double>(p.rows_total - p.rows_done) / p.rows_per_second
                      : -1;
  if (options_.metrics && p.rows_total > 0) {
    options_.metrics->set_progress(static_cast<double>(p.rows_done) / p.rows_total,
                                   static_cast<double>(p.rows_total - p.rows_done));
  }
  if (options_.progress) options_.progress(p);
}

db::TargetSpec target_spec(const config::Target& t) {
  return db::TargetSpec{t.table, t.id_column, t.secret_column, t.flag_column, t.username_column};
}

std::vector<KeyRows> key_rows(const crypto::KeyRing& keys,
                              const std::vector<std::int64_t>& by_key) {
  std::vector<KeyRows> out;
  for (int i = 0; i <= static_cast<int>(keys.rolling_count()); ++i) {
    std::int64_t n = i < static_cast<int>(by_key.size()) ? by_key[i] : 0;
    out.push_back({crypto::KeyRing::key_label(i), keys.fingerprint(i), n});
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void publish_rows_by_key(metrics::Metrics* metrics, const std::string& target,
                         const std::vector<KeyRows>& by_key, std::int64_t undecryptable,
                         std::int64_t empty) {
  if (!metrics) return;
  for (const auto& k : by_key) metrics->set_rows_by_key(target, k.key, static_cast<double>(k.rows));
  metrics->set_rows_by_key(target, "undecryptable", static_cast<double>(undecryptable));
  metrics->set_rows_by_key(target, "empty", static_cast<double>(empty));
}

}  // namespace keymig::engine::detail
