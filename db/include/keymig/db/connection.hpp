#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "keymig/db/error.hpp"

namespace keymig::db {

/// How to reach PostgreSQL and how patient to be with it.
struct ConnectOptions {
  std::string dsn;  // libpq DSN or URI; empty: libpq's PG* environment variables
  std::chrono::milliseconds lock_timeout{2000};
  std::chrono::milliseconds statement_timeout{60000};
  int max_retries = 8;  // attempts after the first, for retryable errors
  std::chrono::milliseconds retry_base_delay{100};
  std::chrono::milliseconds retry_max_delay{5000};
};

/// One PostgreSQL session with application_name=keymig and the configured timeouts.
/// Not thread-safe: one owner (a pipeline's serial stage, a command) at a time.
/// Throws DbError when it cannot connect.
class Connection {
 public:
  explicit Connection(ConnectOptions options);
  ~Connection();
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Drops the session (if any) and opens a new one. Throws DbError.
  void reconnect();
  /// Server process id of the current session (for leases).
  [[nodiscard]] int backend_pid() const;
  [[nodiscard]] const ConnectOptions& options() const noexcept;

  struct Impl;  // db internals only
  [[nodiscard]] Impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

/// Runs `work()` and repeats it after retryable DbErrors with exponential backoff,
/// re-opening the session when it was lost, up to options().max_retries times; then
/// rethrows. Only for work that is safe to repeat (keymig's writes are compare-and-swap).
/// `on_retry` (may be empty) sees each error before the pause, for logs and metrics.
template <typename Work>
auto with_retry(Connection& conn, Work&& work,
                const std::function<void(const DbError&, int attempt)>& on_retry = {}) {
  const auto& opts = conn.options();
  auto delay = opts.retry_base_delay;
  for (int attempt = 1;; ++attempt) {
    try {
      return work();
    } catch (const DbError& e) {
      if (!e.retryable() || attempt > opts.max_retries) throw;
      if (on_retry) on_retry(e, attempt);
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, opts.retry_max_delay);
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
