#include "keymig/engine/run_control.hpp"

#include <catch2/catch.hpp>
#include <thread>
#include <vector>

using keymig::engine::AdaptiveBackoff;
using keymig::engine::CommitCanary;
using keymig::engine::RunControl;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

// Feeds `n` batches of `latency`; returns the total wait they earned.
milliseconds feed(AdaptiveBackoff& a, int n, microseconds latency) {
  milliseconds total{0};
  for (int i = 0; i < n; ++i) total += a.observe(latency);
  return total;
}

}  // namespace

TEST_CASE("the adaptive backoff waits on a latency spike and not on steady batches",
          "[engine][adaptive]") {
  AdaptiveBackoff a;
  SECTION("steady latencies never wait") {
    CHECK(feed(a, 200, microseconds(20'000)) == milliseconds(0));
    CHECK(a.median() == microseconds(20'000));
  }
  SECTION("jitter below the factor never waits") {
    for (int i = 0; i < 200; ++i)
      CHECK(a.observe(microseconds(i % 2 ? 10'000 : 25'000)) == milliseconds(0));
  }
  SECTION("no wait during the warm-up, however slow") {
    CHECK(feed(a, static_cast<int>(AdaptiveBackoff::kWarmup), microseconds(20'000)) ==
          milliseconds(0));
    AdaptiveBackoff cold;
    cold.observe(microseconds(1'000));
    CHECK(cold.observe(microseconds(900'000)) == milliseconds(0));
    CHECK(cold.judged_median() == microseconds(0));
  }
  SECTION("a 5x spike waits the excess over the median, and recovery goes at once") {
    feed(a, 30, microseconds(20'000));
    CHECK(a.observe(microseconds(100'000)) == milliseconds(80));
    CHECK(a.judged_median() == microseconds(20'000));  // what the status line quotes
    CHECK(a.observe(microseconds(100'000)) == milliseconds(80));
    CHECK(a.observe(microseconds(20'000)) == milliseconds(0));
    CHECK(feed(a, 20, microseconds(20'000)) == milliseconds(0));
  }
  SECTION("a wait is capped at kMaxWait") {
    feed(a, 30, microseconds(20'000));
    CHECK(a.observe(microseconds(30'000'000)) == AdaptiveBackoff::kMaxWait);
  }
  SECTION("a lasting slowdown becomes the new median instead of a wait per batch forever") {
    feed(a, 50, microseconds(10'000));
    const auto waited = feed(a, 100, microseconds(50'000));
    CHECK(waited > milliseconds(0));
    CHECK(a.median() == microseconds(50'000));
    CHECK(a.observe(microseconds(50'000)) == milliseconds(0));
  }
}

TEST_CASE("the commit canary widens the gap while commits are slower than before the run",
          "[engine][adaptive]") {
  CommitCanary c;
  const auto idle = microseconds(2'000);
  // The baseline: the median, so one slow fsync among the first canaries does not count.
  for (const auto l : {idle, idle, microseconds(40'000), idle, microseconds(2'100)}) {
    CHECK_FALSE(c.ready());
    CHECK(c.observe(l) == milliseconds(0));
  }
  REQUIRE(c.ready());
  CHECK(c.baseline() == idle);
  CHECK(c.target() == microseconds(4'000));  // 2x, which is over baseline + kSlack

  SECTION("commits near the baseline never open a gap") {
    for (int i = 0; i < 100; ++i)
      CHECK(c.observe(microseconds(i % 3 ? 2'500 : 3'900)) == milliseconds(0));
  }
  SECTION("one slow commit among fast ones opens no gap") {
    for (int i = 0; i < 50; ++i)
      CHECK(c.observe(microseconds(i % 5 == 0 ? 50'000 : 2'000)) == milliseconds(0));
  }
  SECTION("lasting slow commits double the gap from kStep up to kMaxGap") {
    for (std::size_t i = 1; i < CommitCanary::kWindow; ++i)  // the window fills first
      CHECK(c.observe(microseconds(9'000)) == milliseconds(0));
    CHECK(c.observe(microseconds(9'000)) == milliseconds(5));
    CHECK(c.observe(microseconds(9'000)) == milliseconds(10));
    CHECK(c.observe(microseconds(9'000)) == milliseconds(20));
    CHECK(c.recent() == microseconds(9'000));
    for (int i = 0; i < 20; ++i) (void)c.observe(microseconds(9'000));
    CHECK(c.gap() == CommitCanary::kMaxGap);
  }
  SECTION("the gap stops growing once the newest commit is fast, and shrinks back to none") {
    for (int i = 0; i < 9; ++i) (void)c.observe(microseconds(9'000));
    const auto widest = c.gap();
    REQUIRE(widest == milliseconds(80));
    // The median is still slow, the newest is not: hold.
    CHECK(c.observe(microseconds(2'000)) == widest);
    // Between the relax line (1.5x) and the target: hold.
    for (int i = 0; i < 5; ++i) (void)c.observe(microseconds(3'500));
    CHECK(c.gap() == widest);
    // Back near the baseline: a quarter less each canary, then none.
    for (int i = 0; i < 3; ++i) (void)c.observe(microseconds(2'000));
    CHECK(c.gap() < widest);
    for (int i = 0; i < 20; ++i) (void)c.observe(microseconds(2'000));
    CHECK(c.gap() == milliseconds(0));
  }
  SECTION("a fast server still needs kSlack more before a gap opens") {
    CommitCanary fast;
    for (int i = 0; i < 5; ++i) (void)fast.observe(microseconds(300));
    CHECK(fast.target() == microseconds(1'300));
    for (int i = 0; i < 20; ++i) CHECK(fast.observe(microseconds(1'200)) == milliseconds(0));
    for (int i = 0; i < 6; ++i) (void)fast.observe(microseconds(2'000));
    CHECK(fast.gap() > milliseconds(0));
  }
}

TEST_CASE("run control overrides fall back to the config's values until set", "[engine][control]") {
  RunControl c;
  CHECK_FALSE(c.paused());
  CHECK(c.rows_per_second(300) == 300);
  CHECK(c.batch_size(2000) == 2000);
  CHECK(c.state().since == std::chrono::system_clock::time_point{});
  c.pause("127.0.0.1:5000");
  CHECK(c.paused());
  CHECK(c.state().by == "127.0.0.1:5000");
  c.retune(0, std::nullopt, "x");  // 0: unthrottled, an override all the same
  CHECK(c.rows_per_second(300) == 0);
  CHECK(c.batch_size(2000) == 2000);
  c.retune(std::nullopt, 500, "x");
  CHECK(c.rows_per_second(300) == 0);
  CHECK(c.batch_size(2000) == 500);
  CHECK(c.paused());  // a retune leaves the pause alone
  c.resume("y");
  CHECK_FALSE(c.paused());
  CHECK(c.state().since != std::chrono::system_clock::time_point{});
}

TEST_CASE("run control is read and written from several threads at once", "[engine][control]") {
  RunControl c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&c, t] {
      for (int i = 0; i < 2000; ++i) {
        if (t == 0) {
          if (i % 2)
            c.pause("a");
          else
            c.resume("a");
        } else if (t == 1) {
          c.retune(i, i + 1, "b");
        } else {
          (void)c.paused();
          CHECK(c.batch_size(1) >= 1);
          (void)c.state();
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(c.rows_per_second(0) == 1999);
  CHECK(c.batch_size(0) == 2000);
}
