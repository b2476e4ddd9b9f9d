#pragma once

// What the keymig process does to itself before it reads a key: no core file, no
// ptrace by other processes of the same user, and the key variables out of its
// environment (/proc/PID/environ), kept in wiped memory instead.

#include <optional>
#include <string>
#include <string_view>

namespace keymig::process {

/// The variables that carry keys: taken out of the environment by capture_secret_env().
inline constexpr const char* kSecretVariables[] = {"KEYMIG_ACTIVE_KEY", "KEYMIG_ROLLING_KEYS"};

/// Set to 1 to allow core dumps (for debugging a crash; a core holds every key and token
/// in memory). Anything else, or unset: no core dumps.
inline constexpr const char* kAllowCoreDumps = "KEYMIG_ALLOW_CORE_DUMPS";

struct Hardening {
  bool core_dumps_allowed = false;  // the operator opted in
};

/// RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 unless KEYMIG_ALLOW_CORE_DUMPS=1. Call first in main.
Hardening harden();

/// Moves kSecretVariables out of the environment: copies each value into memory this
/// module wipes at exit, unsets it, and overwrites the bytes the kernel shows in
/// /proc/PID/environ (every copy of a name given twice; the first is the value, as getenv
/// reads it). Call once, before any thread starts.
void capture_secret_env();

/// A captured variable's value (nullopt: it was not set), else the live environment's.
/// The caller wipes the copy (SecretString, secure_wipe).
[[nodiscard]] std::optional<std::string> secret_env(std::string_view name);

}  // namespace keymig::process
