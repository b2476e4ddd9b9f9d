#pragma once

// Rows per configured key: in the reports and in keymig_rows_by_key.

#include <cstdint>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::engine::detail {

/// One entry per configured key, in ring order, with the counts of `by_key` (by index).
[[nodiscard]] std::vector<KeyRows> key_rows(const crypto::KeyRing& keys,
                                            const std::vector<std::int64_t>& by_key);

/// The rolling keys' fingerprints in ring order, as keymig.runs records them.
[[nodiscard]] std::vector<std::string> rolling_fingerprints(const crypto::KeyRing& keys);

/// keymig_rows_by_key for every configured key plus undecryptable, acknowledged and empty
/// rows. `undecryptable` counts every row no key reads, `acknowledged` those of them in
/// keymig.acknowledged: the series `undecryptable` holds the others, so that known
/// orphans do not keep KeymigUndecryptableRows firing while a new one still does.
void publish_rows_by_key(metrics::Metrics* metrics, const std::string& target,
                         const std::vector<KeyRows>& by_key, std::int64_t undecryptable,
                         std::int64_t acknowledged, std::int64_t empty);

}  // namespace keymig::engine::detail
