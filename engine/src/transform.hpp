#pragma once

// The parallel stage: what each mode makes of a page of rows.

#include "batch.hpp"
#include "keymig/crypto/fernet.hpp"

namespace keymig::engine::detail {

enum class Mode {
  scan,       // classify by HMAC, and one AES block per row for double encryption
  preflight,  // migrate's lockout pre-flight: scan's classes by HMAC alone
  migrate,    // rotate rolling-key tokens, fix flags: fills Batch::changes
  verify,     // decrypt under the active key alone
  status,     // the admin view: one UserStatus per row (HMAC alone)
};

/// Runs `mode` over every row of the batch and wipes the tokens it no longer needs (a
/// migrate batch keeps only those moved into its changes). `has_flag`: the target has a
/// flag column. `acknowledged` (may be null): undecryptable rows with these ids are
/// counted and marked acknowledged. Thread-safe for distinct batches: the ring and the
/// ids are immutable.
void transform(Batch& batch, const crypto::KeyRing& keys, Mode mode, bool has_flag,
               const AcknowledgedIds* acknowledged = nullptr);

}  // namespace keymig::engine::detail
