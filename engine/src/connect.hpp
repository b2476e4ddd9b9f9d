#pragma once

// Sessions and retries as the engine does them: every database call the engine repeats
// goes through db::with_retry or db::connect_with_retry with this hook, so that each retry
// is logged and counted.

#include "keymig/config/config.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/retry.hpp"
#include "keymig/db/target.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::engine::detail {

/// The retry hook: a log line and keymig_db_retries_total. `what` names the step.
[[nodiscard]] db::RetryHook retry_hook(metrics::Metrics* metrics, const char* what);

/// Opens a connection, retrying while the server is unreachable or starting.
[[nodiscard]] db::Connection open_connection(const db::ConnectOptions& options,
                                             metrics::Metrics* metrics);

/// The configured target as the database library takes it.
[[nodiscard]] db::TargetSpec target_spec(const config::Target& target);

}  // namespace keymig::engine::detail
