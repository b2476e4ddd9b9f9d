#include "pipeline.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using keymig::engine::detail::Batch;
using keymig::engine::detail::run_pipeline;

namespace {

// Enough batches on enough threads that the parallel stage really overlaps, so that the
// TSan build checks every hand-off of the pipeline, not just one batch's.
constexpr int kThreads = 4;
constexpr std::int64_t kBatches = 300;

// The pipeline's source: batches numbered 0 to kBatches - 1 in tally.rows, then the end.
std::function<std::unique_ptr<Batch>()> numbered_batches(std::int64_t& made,
                                                         std::size_t payload = 0) {
  return [&made, payload]() -> std::unique_ptr<Batch> {
    if (made == kBatches) return nullptr;
    auto b = std::make_unique<Batch>();
    b->tally.rows = made++;
    b->needs_rolling.assign(payload, std::string(64, 'x'));  // freed wherever TBB drops it
    return b;
  };
}

}  // namespace

TEST_CASE("the pipeline hands each batch on in source order with what every stage wrote",
          "[engine][pipeline]") {
  // Plain, unsynchronised state: each is touched by one serial stage only, or by the
  // caller before and after the run, which TBB orders.
  std::int64_t made = 0;
  std::vector<std::int64_t> order;
  std::vector<std::int64_t> worked;
  std::vector<std::string> names;
  const std::string prefix = "batch-";
  run_pipeline(
      kThreads, numbered_batches(made),
      [&](Batch& b) {
        b.tally.decrypt_ops = b.tally.rows * 2;
        b.needs_rolling.push_back(prefix + std::to_string(b.tally.rows));
      },
      [&](std::unique_ptr<Batch> b) {
        order.push_back(b->tally.rows);
        worked.push_back(b->tally.decrypt_ops);
        names.push_back(b->needs_rolling.at(0));
      });
  REQUIRE(order.size() == static_cast<std::size_t>(kBatches));
  for (std::int64_t i = 0; i < kBatches; ++i) {
    const auto at = static_cast<std::size_t>(i);
    CHECK(order[at] == i);
    CHECK(worked[at] == 2 * i);
    CHECK(names[at] == prefix + std::to_string(i));
  }
}

TEST_CASE("an exception in the parallel stage reaches the caller with its message",
          "[engine][pipeline]") {
  std::int64_t made = 0;
  std::int64_t written = 0;
  const auto run = [&] {
    run_pipeline(
        kThreads, numbered_batches(made, 8),
        [&](Batch& b) {
          if (b.tally.rows == kBatches / 2)
            throw std::runtime_error("batch " + std::to_string(b.tally.rows));
        },
        [&](std::unique_ptr<Batch>) { ++written; });
  };
  REQUIRE_THROWS_WITH(run(), "batch " + std::to_string(kBatches / 2));
  CHECK(written <= kBatches / 2);
}
