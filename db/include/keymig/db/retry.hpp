#pragma once

// The one retry rule for everything keymig asks of PostgreSQL: which errors are repeated
// (DbError::retryable), how long to wait (exponential backoff with a cap), and how often
// (ConnectOptions::max_retries). Each caller passes a RetryHook, so that every retry is
// logged and counted in keymig_db_retries_total wherever it happens.

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

#include "keymig/db/connection.hpp"
#include "keymig/db/error.hpp"

namespace keymig::db {

/// Sees each retryable error before the pause (`attempt` counts from 1): for logs and
/// metrics. May be empty.
using RetryHook = std::function<void(const DbError&, int attempt)>;

/// min * 2^attempt, at most max (attempt < 0 counts as 0). Pure: the event loop's
/// reconnect timers use it too.
[[nodiscard]] std::chrono::milliseconds backoff_delay(int attempt, std::chrono::milliseconds min,
                                                      std::chrono::milliseconds max) noexcept;

/// Opens a session, repeating while the server is unreachable or starting (retryable
/// errors), up to options.max_retries times; a refused connect only with
/// options.retry_refused. Throws the last DbError.
[[nodiscard]] Connection connect_with_retry(const ConnectOptions& options,
                                            const RetryHook& on_retry = {});

/// Runs `work()` and repeats it after retryable DbErrors with exponential backoff,
/// re-opening the session when it was lost, up to options().max_retries times; then
/// rethrows. Only for work that is safe to repeat (keymig's writes are compare-and-swap).
template <typename Work>
auto with_retry(Connection& conn, Work&& work, const RetryHook& on_retry = {}) {
  const auto& opts = conn.options();
  for (int attempt = 1;; ++attempt) {
    try {
      return work();
    } catch (const DbError& e) {
      if (!e.retryable() || attempt > opts.max_retries) throw;
      if (on_retry) on_retry(e, attempt);
      std::this_thread::sleep_for(
          backoff_delay(attempt - 1, opts.retry_base_delay, opts.retry_max_delay));
      if (e.connection_lost()) {
        try {
          conn.reconnect();
        } catch (const DbError& again) {
          // The server may still be starting: the next attempt fails fast and waits longer.
          if (!again.retryable()) throw;
        }
      }
    }
  }
}

}  // namespace keymig::db
