#include "pipeline.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <mutex>
#include <optional>
#include <unordered_map>

#include "tsan_handoff.hpp"

namespace keymig::engine::detail {

namespace {

// The batches between the source and the sink. Its lock is no edge TBB makes, so TSan is
// told to look through it (TsanIgnoreScope): otherwise the source's next batch would
// seem ordered before the sink's previous one and hide a race between the two stages.
class InFlight {
 public:
  Batch* adopt(std::unique_ptr<Batch> b) {
    const TsanIgnoreScope unseen;
    std::lock_guard<std::mutex> lock(mu_);
    Batch* raw = b.get();
    live_.emplace(raw, std::move(b));
    return raw;
  }
  std::unique_ptr<Batch> release(Batch* raw) {
    const TsanIgnoreScope unseen;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(raw);
    std::unique_ptr<Batch> b = std::move(it->second);
    live_.erase(it);
    return b;
  }

 private:
  std::mutex mu_;
  std::unordered_map<Batch*, std::unique_ptr<Batch>> live_;
};

}  // namespace

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
  // oneTBB does not destroy what its buffers hold between stages when an exception
  // cancels the pipeline, so a unique_ptr handed to it would leak its batch (and the
  // tokens in it, never wiped). TBB carries bare pointers; the batches in flight are
  // owned here and freed on every way out.
  InFlight in_flight;
  // TSan does not see how TBB orders the stages (tsan_handoff.hpp): each serial stage
  // follows its own previous invocation, and a batch is released by the stage that hands
  // it on and acquired by the next.
  const TsanRun run;
  const char source_order = 0, sink_order = 0;
  const auto read = tbb::make_filter<void, Batch*>(
      tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> Batch* {
        const TsanRun::Invocation in(run, &source_order);
        auto b = source();
        if (!b) {
          fc.stop();
          return nullptr;
        }
        Batch* batch = in_flight.adopt(std::move(b));
        tsan_release(batch);
        return batch;
      });
  const auto rotate = tbb::make_filter<Batch*, Batch*>(tbb::filter_mode::parallel, [&](Batch* b) {
    const TsanRun::Invocation in(run);
    tsan_acquire(b);
    work(*b);
    tsan_release(b);
    return b;
  });
  const auto write =
      tbb::make_filter<Batch*, void>(tbb::filter_mode::serial_in_order, [&](Batch* b) {
        const TsanRun::Invocation in(run, &sink_order);
        tsan_acquire(b);
        sink(in_flight.release(b));
      });
  const tbb::filter<void, void> chain = read & rotate & write;
  run.call([&] { arena.execute([&] { tbb::parallel_pipeline(tokens, chain); }); });
}

}  // namespace keymig::engine::detail
