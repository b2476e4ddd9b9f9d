#pragma once

// Turning configured key texts into a crypto::KeyRing, with errors that say where a bad
// key came from and never what it was.

#include <string>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"

namespace keymig::engine {

/// A configured key, described without the key: for check-config, reports and logs.
struct KeyInfo {
  int key_index = 0;        // 0 active, i + 1 rolling[i] (as crypto::KeyRing)
  std::string label;        // "active", "rolling[0]", ...
  std::string fingerprint;  // crypto::Key::fingerprint()
  config::Origin origin;    // where it was configured
  std::string key_file;     // set when it came from a key file
};

/// Parses every configured key and builds the ring (active first, rolling in order).
/// Throws config::ConfigError naming the origin (file, line, setting; never the key) when
/// there is no active key, a key does not parse, a rolling key equals the active key, or
/// two rolling keys are the same key. Thread-safe (reads `config` only).
[[nodiscard]] crypto::KeyRing build_keyring(const config::Config& config);

/// Same checks as build_keyring; returns what each key is and where it came from.
[[nodiscard]] std::vector<KeyInfo> describe_keys(const config::Config& config);

/// "active" for 0, "rolling[i]" for i + 1.
[[nodiscard]] std::string key_display_name(int key_index);

}  // namespace keymig::engine
