#pragma once

#include <functional>
#include <string>
#include <vector>

#include "batch.hpp"
#include "command_record.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"
#include "transform.hpp"

namespace keymig::engine::detail {

/// The read-only passes (scan, verify, migrate's pre-flight): every selected row through
/// `mode`, with progress; `sink` sees each batch in order after it is counted. Rows whose
/// ids are `acknowledged` (may be null) are counted and marked so. Returns the totals.
[[nodiscard]] Tally read_pass(const crypto::KeyRing& keys, const Options& options,
                              db::Connection& reader, const db::Table& table, Mode mode,
                              std::vector<UndecryptableRow>& undecryptable,
                              const std::function<void(Batch&)>& sink,
                              const AcknowledgedIds* acknowledged);

/// A token's clear-text timestamp as ISO 8601 UTC; "" for 0 (none seen).
[[nodiscard]] std::string unix_time_text(std::uint64_t seconds);

/// engine::verify without recording a verify run of its own: finalize verifies as part
/// of its own command. `record` (may be null) learns the resolved target.
[[nodiscard]] VerifyReport verify_pass(const crypto::KeyRing& keys, const Options& options,
                                       const std::string& run_id, CommandRecord* record);

}  // namespace keymig::engine::detail
