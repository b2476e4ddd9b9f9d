#pragma once

// Shared by the libFuzzer harnesses: a fixed key ring, so that the seed corpus can hold
// tokens made under its keys (tests/fuzz/make_seeds.py) and the fuzzer reaches past the
// HMAC check.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "keymig/crypto/fernet.hpp"

namespace keymig::fuzz {

// The keys of tests/fuzz/make_seeds.py: test material, never a real key.
inline constexpr const char* kActiveKey = "HVFRvN_BSt6q130QQRyZ-oMhdAwBWzW8udrfiYTbi9Q=";
inline constexpr const char* kRollingKeys[] = {"gE_BdVeAYy9MQHs2q1VvZwCzIpYEYTusC-3g2CYq3T4=",
                                               "BXyWr4CH80h4HwfNYT-qoeDKEBzHi9u8XBGL_z9UWlM="};

inline const crypto::KeyRing& ring() {
  static const crypto::KeyRing r = [] {
    std::vector<crypto::Key> rolling;
    for (const char* k : kRollingKeys) rolling.push_back(crypto::Key::parse(k));
    return crypto::KeyRing(crypto::Key::parse(kActiveKey), std::move(rolling));
  }();
  return r;
}

// A broken invariant is a crash the fuzzer reports with its input.
inline void require(bool ok) {
  if (!ok) std::abort();
}

inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace keymig::fuzz
