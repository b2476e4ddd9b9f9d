#pragma once

#include <stdexcept>
#include <string>

namespace keymig {

/// Base of every exception keymig throws. Messages carry context (file, line, row id,
/// SQLSTATE), never a key, a token or a plaintext.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A mistake in what the operator asked for: bad flags, config, keys or target. Exits 2;
/// nothing has been written.
class UsageError : public Error {
 public:
  using Error::Error;
};

/// Process exit codes, as docs/DESIGN.md section 3 defines them.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,        // database unreachable after retries, I/O failure, ...
  kExitUsage = 2,          // bad flags, bad config, bad target
  kExitUndecryptable = 3,  // rows no configured key can read
  kExitNeedsRolling = 4,   // rows still need a rolling key, or a check failed
};

}  // namespace keymig
