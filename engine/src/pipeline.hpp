#pragma once

// The one pipeline of the engine: serial source -> parallel transform -> serial sink.

#include <functional>
#include <memory>

#include "batch.hpp"

namespace keymig::engine::detail {

/// Runs source -> parallel work -> serial sink (in source order) with `threads` workers
/// (0: all cores) and a few batches in flight per worker, so that memory follows the
/// tokens in flight, not the table. The source ends the run by returning null.
/// Exceptions from any stage cancel the pipeline and are rethrown here.
void run_pipeline(int threads, const std::function<std::unique_ptr<Batch>()>& source,
                  const std::function<void(Batch&)>& work,
                  const std::function<void(std::unique_ptr<Batch>)>& sink);

}  // namespace keymig::engine::detail
