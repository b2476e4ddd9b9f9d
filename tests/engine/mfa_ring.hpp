#pragma once

// Keys and tokens for the MFA admin tests: an active and a rolling key in the ring, and
// one that is not configured.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/mfa_admin.hpp"

using keymig::db::Selection;
using keymig::engine::UserStatus;

namespace keymig::test {

struct Ring {
  keymig::crypto::Key active_copy = keymig::crypto::Key::generate();
  keymig::crypto::Key rolling_copy = keymig::crypto::Key::generate();
  keymig::crypto::Key other = keymig::crypto::Key::generate();
  keymig::crypto::KeyRing ring = make();

  keymig::crypto::KeyRing make() {
    std::vector<keymig::crypto::Key> rolling;
    rolling.push_back(keymig::crypto::Key::parse(rolling_copy.encode().view()));
    return keymig::crypto::KeyRing(keymig::crypto::Key::parse(active_copy.encode().view()),
                                   std::move(rolling));
  }
  std::string token_under(const keymig::crypto::Key& key, std::string_view plain) {
    keymig::crypto::Fernet f(keymig::crypto::Key::parse(key.encode().view()));
    return std::string(f.encrypt(plain).view());
  }
};

inline UserStatus classify(Ring& r, std::string_view token, bool is_null, std::optional<bool> flag,
                           bool has_flag = true, bool admin = false) {
  return keymig::engine::classify_user(r.ring, "7", "alice", token, is_null, flag, has_flag, admin);
}

}  // namespace keymig::test

using keymig::test::classify;
using keymig::test::Ring;
