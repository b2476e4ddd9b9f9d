#include "keymig/engine/run_control.hpp"

#include <algorithm>
#include <vector>

namespace keymig::engine {

namespace {

std::chrono::microseconds median_of(const std::chrono::microseconds* first, std::size_t n) {
  std::vector<std::chrono::microseconds> sorted(first, first + n);
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(n / 2),
                   sorted.end());
  return sorted[n / 2];
}

}  // namespace

std::chrono::microseconds AdaptiveBackoff::median() const {
  const std::size_t n = std::min(count_, kWindow);
  if (n == 0) return std::chrono::microseconds(0);
  return median_of(window_, n);
}

std::chrono::milliseconds AdaptiveBackoff::observe(std::chrono::microseconds latency) {
  // Judged against the window before this batch joins it: one spike must not raise the
  // bar it is measured against.
  std::chrono::milliseconds wait{0};
  judged_ = std::chrono::microseconds(0);
  if (count_ >= kWarmup) {
    const auto med = median();
    judged_ = med;
    if (latency.count() > kFactor * static_cast<double>(med.count())) {
      const auto excess = std::chrono::duration_cast<std::chrono::milliseconds>(latency - med);
      wait = std::min(excess, kMaxWait);
    }
  }
  window_[count_ % kWindow] = latency;
  ++count_;
  return wait;
}

std::chrono::microseconds CommitCanary::target() const noexcept {
  const auto scaled = std::chrono::microseconds(
      static_cast<std::int64_t>(kFactor * static_cast<double>(baseline_.count())));
  return std::max(scaled, baseline_ + kSlack);
}

std::chrono::milliseconds CommitCanary::observe(std::chrono::microseconds latency) {
  if (count_ < kBaselineSamples) {
    samples_[count_++] = latency;
    if (count_ == kBaselineSamples) baseline_ = median_of(samples_, kBaselineSamples);
    return gap_;
  }
  const std::size_t seen = count_ - kBaselineSamples;
  samples_[seen % kWindow] = latency;
  ++count_;
  recent_ = median_of(samples_, std::min(seen + 1, kWindow));
  // The median of a few, not each canary: one slow fsync is not a saturated server; and
  // the newest too, so that the gap stops growing as soon as the server recovers.
  // Not before the window is full: the median of one canary is that canary.
  if (seen + 1 >= kWindow && recent_ > target() && latency > target()) {
    gap_ = std::min(std::max(gap_ * 2, kStep), kMaxGap);
  } else if (static_cast<double>(recent_.count()) <=
             kRelax * static_cast<double>(baseline_.count())) {
    gap_ = gap_ * 3 / 4;
    if (gap_ < kStep) gap_ = std::chrono::milliseconds(0);
  }
  return gap_;
}

}  // namespace keymig::engine
