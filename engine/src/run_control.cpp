#include "keymig/engine/run_control.hpp"

#include <algorithm>
#include <vector>

namespace keymig::engine {

std::chrono::microseconds AdaptiveBackoff::median() const {
  const std::size_t n = std::min(count_, kWindow);
  if (n == 0) return std::chrono::microseconds(0);
  std::vector<std::chrono::microseconds> sorted(window_, window_ + n);
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(n / 2),
                   sorted.end());
  return sorted[n / 2];
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

}  // namespace keymig::engine
