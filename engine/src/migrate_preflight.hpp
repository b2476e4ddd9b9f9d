#pragma once

// migrate's pre-flight, before it writes anything: refuses a config whose active key is
// one an earlier run rotated away from, and a config that would leave more rows
// undecryptable than the target's baseline (docs/DESIGN.md section 3).

#include "batch.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// Classifies the selected rows by HMAC alone (unthrottled: it only reads) and checks them
/// against the key history and the baseline; `acknowledged` are the target's
/// acknowledged ids. Throws UsageError (exit 2) naming the reason
/// and the likely missing key, unless options.force (then the check says forced).
/// Throws DbError.
[[nodiscard]] PreflightCheck migrate_preflight(db::Connection& reader, const db::Table& table,
                                               const crypto::KeyRing& keys, const Options& options,
                                               const AcknowledgedIds& acknowledged);

}  // namespace keymig::engine::detail
