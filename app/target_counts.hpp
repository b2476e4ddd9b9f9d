#pragma once

// Every configured target's secrets by key, for the commands that show a config's reach
// over all targets (check-config --with-db, status) beside their own first-target view.

#include <nlohmann/json.hpp>
#include <string>

#include "command.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/targets.hpp"

namespace keymig::app {

/// A scan of every target with `keys`, recording no baseline (the config may not be the
/// deployed one). Throws as engine::scan_targets, naming the target that fails.
[[nodiscard]] engine::ScanAcross count_every_target(const Common& common,
                                                    const config::Config& config,
                                                    const crypto::KeyRing& keys);

/// Whether some target holds rows no configured key reads that are not acknowledged.
[[nodiscard]] bool any_unreadable(const engine::ScanAcross& counts);

/// [{name, target, rows, by_key: [{key, fingerprint, rows}], empty, unreadable, acknowledged}]
[[nodiscard]] nlohmann::json target_counts_json(const engine::ScanAcross& counts);

/// One line per target, after `title`.
[[nodiscard]] std::string target_counts_text(const engine::ScanAcross& counts,
                                             const std::string& title);

}  // namespace keymig::app
