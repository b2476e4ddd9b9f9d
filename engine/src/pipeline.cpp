#include "pipeline.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <optional>

#include "tsan_handoff.hpp"

namespace keymig::engine::detail {

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
  // TSan does not see how TBB orders the stages (tsan_handoff.hpp): each serial stage
  // follows its own previous invocation, and a batch is released by the stage that hands
  // it on and acquired by the next.
  const TsanRun run;
  const char source_order = 0, sink_order = 0;
  const auto read = tbb::make_filter<void, std::unique_ptr<Batch>>(
      tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> std::unique_ptr<Batch> {
        const TsanRun::Invocation in(run, &source_order);
        auto b = source();
        if (b)
          tsan_release(b.get());
        else
          fc.stop();
        return b;
      });
  const auto rotate = tbb::make_filter<std::unique_ptr<Batch>, std::unique_ptr<Batch>>(
      tbb::filter_mode::parallel, [&](std::unique_ptr<Batch> b) {
        const TsanRun::Invocation in(run);
        tsan_acquire(b.get());
        work(*b);
        tsan_release(b.get());
        return b;
      });
  const auto write = tbb::make_filter<std::unique_ptr<Batch>, void>(
      tbb::filter_mode::serial_in_order, [&](std::unique_ptr<Batch> b) {
        const TsanRun::Invocation in(run, &sink_order);
        tsan_acquire(b.get());
        sink(std::move(b));
      });
  const tbb::filter<void, void> chain = read & rotate & write;
  run.call([&] { arena.execute([&] { tbb::parallel_pipeline(tokens, chain); }); });
}

}  // namespace keymig::engine::detail
