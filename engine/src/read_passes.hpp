#pragma once

#include <string>

#include "command_record.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// engine::verify without recording a verify run of its own: finalize verifies as part
/// of its own command. `record` (may be null) learns the resolved target.
[[nodiscard]] VerifyReport verify_pass(const crypto::KeyRing& keys, const Options& options,
                                       const std::string& run_id, CommandRecord* record);

}  // namespace keymig::engine::detail
