#include "keymig/secure.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>

using keymig::SecretString;
using keymig::secure_wipe;

namespace {

// A short secret lives in std::string's inline buffer, a long one on the heap: the two
// ways a buffer can keep a secret behind.
const std::string kShort = "JBSWY3DPEHPK3PXP";  // 16 chars: the heap already, on libstdc++
const std::string kInline = "JBSWY3DPEHP";      // 11 chars: always inline
const std::string kLong(64, 'K');

bool all_zero(const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != '\0') return false;
  return true;
}

// No byte of `secret` is left where it was (the bytes may since hold something else).
bool none_left(const char* p, const std::string& secret) {
  for (std::size_t i = 0; i < secret.size(); ++i)
    if (p[i] == secret[i]) return false;
  return true;
}

}  // namespace

TEST_CASE("secure_wipe zeroes exactly the bytes it is given", "[common][secure]") {
  unsigned char buffer[64];
  std::memset(buffer, 0xAA, sizeof buffer);
  secure_wipe(buffer + 8, 16);
  for (std::size_t i = 0; i < sizeof buffer; ++i) {
    INFO(i);
    CHECK(buffer[i] == (i >= 8 && i < 24 ? 0x00 : 0xAA));
  }
  secure_wipe(buffer, sizeof buffer);
  CHECK(all_zero(reinterpret_cast<const char*>(buffer), sizeof buffer));
  secure_wipe(nullptr, 0);  // nothing to do, and no crash
  secure_wipe(buffer, 0);
}

TEST_CASE("wipe() zeroes a secret's buffer and leaves it empty", "[common][secure]") {
  for (const std::string& secret : {kInline, kShort, kLong}) {
    INFO(secret.size());
    SecretString s(secret);
    const char* buffer = s.view().data();
    s.wipe();
    CHECK(s.empty());
    CHECK(s.view().empty());
    // The string keeps its buffer after clear(), so it can still be read: all zeros.
    CHECK(all_zero(buffer, secret.size()));
  }
}

TEST_CASE("a moved-from secret keeps no copy of its bytes", "[common][secure]") {
  SECTION("a secret in the inline buffer, whose move copies it") {
    SecretString from(kInline);
    const char* buffer = from.view().data();
    SecretString to(std::move(from));
    CHECK(to.view() == kInline);
    CHECK(from.empty());  // NOLINT(bugprone-use-after-move): the point of the test
    CHECK(all_zero(buffer, kInline.size()));
  }
  SECTION("a secret on the heap, whose buffer is handed over") {
    SecretString from(kLong);
    const char* buffer = from.view().data();
    SecretString to(std::move(from));
    CHECK(to.view() == kLong);
    CHECK(to.view().data() == buffer);  // handed over, not copied
    CHECK(from.empty());                // NOLINT(bugprone-use-after-move)
  }
  SECTION("move assignment wipes the source's inline buffer too") {
    SecretString from(kInline);
    const char* buffer = from.view().data();
    SecretString to;
    to = std::move(from);
    CHECK(to.view() == kInline);
    CHECK(from.empty());  // NOLINT(bugprone-use-after-move)
    CHECK(all_zero(buffer, kInline.size()));
  }
}

TEST_CASE("reassigning a secret wipes the one it held", "[common][secure]") {
  for (const std::string& old_secret : {kInline, kLong}) {
    INFO(old_secret.size());
    SecretString target(old_secret);
    const char* old_buffer = target.view().data();
    SecretString replacement(kShort);
    target = std::move(replacement);
    CHECK(target.view() == kShort);
    // The old buffer is still alive: the target's inline one (part of which now holds
    // the heap capacity), or a heap one libstdc++ hands back to the emptied source.
    CHECK(none_left(old_buffer, old_secret));
  }
  SECTION("assigning a secret to itself keeps it") {
    SecretString s(kLong);
    SecretString& same = s;
    s = std::move(same);
    CHECK(s.view() == kLong);
  }
}

TEST_CASE("a destroyed secret leaves zeros behind", "[common][secure]") {
  // Constructed in storage the test owns, so that its inline buffer can be read after
  // the destructor ran.
  alignas(SecretString) unsigned char storage[sizeof(SecretString)];
  auto* s = new (storage) SecretString(kInline);
  const char* buffer = s->view().data();
  REQUIRE(buffer >= reinterpret_cast<const char*>(storage));
  REQUIRE(buffer < reinterpret_cast<const char*>(storage) + sizeof storage);
  s->~SecretString();
  CHECK(all_zero(buffer, kInline.size()));
}

TEST_CASE("a clone is an independent copy", "[common][secure]") {
  SecretString original(kLong);
  SecretString copy = original.clone();
  CHECK(copy.view() == kLong);
  CHECK(copy.view().data() != original.view().data());
  original.wipe();
  CHECK(copy.view() == kLong);
  copy.wipe();
  CHECK(copy.empty());
  CHECK(original.empty());
}
