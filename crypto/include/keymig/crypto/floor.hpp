#pragma once

// The primitive floor of a rotation, for `keymig bench crypto`: what any Fernet
// implementation has to spend per token, so that rotate / floor measures only keymig's
// own overhead (base64, parsing, finding the key, allocation). It calls the same OpenSSL
// helpers as Fernet and KeyRing, with contexts reused the same way (precomputed HMAC
// ipad/opad states, per-thread cipher contexts bound once and re-keyed per call, CSPRNG
// bytes drawn in 4 KiB blocks), and skips everything else.

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "keymig/crypto/fernet.hpp"

namespace keymig::crypto {

/// The raw bytes of a canonical token, decoded before any timing so that the floor holds
/// no base64. Throws CryptoError when `token` is not strict base64url.
[[nodiscard]] std::vector<std::uint8_t> token_bytes(std::string_view token);

/// One rotation's primitives: HMAC-SHA256 check under `from`, AES-128-CBC decrypt under
/// `from`, 16 random bytes, AES-128-CBC encrypt under `to`, HMAC-SHA256 under `to`; no
/// padding check, no base64, no output kept. Not thread-safe: one per thread (it reuses
/// its buffers). Keeps copies of the keys, wiped on destruction. Throws CryptoError when
/// OpenSSL fails or a token is too short to be one.
class RotationFloor {
 public:
  RotationFloor(const Key& from, const Key& to);
  ~RotationFloor();
  RotationFloor(const RotationFloor&) = delete;
  RotationFloor& operator=(const RotationFloor&) = delete;

  /// False if the HMAC under `from` did not verify (a benchmark's inputs always do, so
  /// false means a broken floor). `token` is token_bytes() output.
  [[nodiscard]] bool run(const std::vector<std::uint8_t>& token);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::crypto
