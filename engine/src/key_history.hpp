#pragma once

// What earlier runs and the last scan of a target say about the configured keys: whether
// the active key is one an earlier run rotated away from (active and rolling swapped),
// and which keys they used that are not configured now (the likely missing key). Read by
// migrate's pre-flight and by check-config --with-db.

#include <optional>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/scans.hpp"

namespace keymig::engine::detail {

/// A key an earlier run or scan of the target used that the config does not have.
struct MissingKey {
  std::string fingerprint;
  std::string seen;  // where, in words: "rolling_0 of the last scan (..., 5967 rows)"
};

struct KeyHistory {
  std::vector<db::Run> runs;  // the target's migrate runs, newest first
  std::optional<db::ScanRecord> last_scan;
  /// A completed (or finalized) migrate run whose rolling keys include the configured
  /// active key while its own active key is a configured rolling key: the config has the
  /// two swapped, and a migrate would put the rows back under the key rotated away from.
  std::optional<db::Run> swapped;
  std::vector<MissingKey> missing;
};

/// Reads keymig.runs and keymig.scans (nothing when schema keymig is not there).
/// Throws DbError.
[[nodiscard]] KeyHistory read_key_history(db::Connection& conn, const std::string& target,
                                          const crypto::KeyRing& keys);

/// The refusal for a swapped config, in words; names fingerprints, never a key.
[[nodiscard]] std::string swapped_message(const db::Run& run, const crypto::KeyRing& keys);

/// "key F (where); key G (where)", or "" when none.
[[nodiscard]] std::string missing_keys_text(const std::vector<MissingKey>& missing);

}  // namespace keymig::engine::detail
