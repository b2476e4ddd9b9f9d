#include "keymig/db/retry.hpp"

namespace keymig::db {

std::chrono::milliseconds backoff_delay(int attempt, std::chrono::milliseconds min,
                                        std::chrono::milliseconds max) noexcept {
  if (attempt < 0) attempt = 0;
  auto delay = min;
  for (int i = 0; i < attempt && delay < max; ++i) delay *= 2;
  return delay < max ? delay : max;
}

Connection connect_with_retry(const ConnectOptions& options, const RetryHook& on_retry) {
  for (int attempt = 1;; ++attempt) {
    try {
      return Connection(options);
    } catch (const DbError& e) {
      if (!e.retryable() || attempt > options.max_retries) throw;
      if (e.refused() && !options.retry_refused) throw;
      if (on_retry) on_retry(e, attempt);
      std::this_thread::sleep_for(
          backoff_delay(attempt - 1, options.retry_base_delay, options.retry_max_delay));
    }
  }
}

}  // namespace keymig::db
