#include "keymig/locked.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

using keymig::LockedSecret;
using keymig::SecretString;

namespace {

// AddressSanitizer and ThreadSanitizer intercept mlock and lock nothing (their shadow
// memory would be locked with it), so the pages are dump-excluded but never "lo" there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerLocksNothing = true;
#else
constexpr bool kSanitizerLocksNothing = false;
#endif

// The VmFlags of the mapping of /proc/self/smaps that holds `address`, "" if none does.
std::string vm_flags_of(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(' ') > line.find('-')) {
      inside = lo <= a && a < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

bool has_flag(const std::string& flags, const char* flag) {
  std::istringstream in(flags.substr(std::strlen("VmFlags:")));
  std::string f;
  while (in >> f)
    if (f == flag) return true;
  return false;
}

}  // namespace

TEST_CASE("locked_alloc gives zeroed, aligned, distinct blocks in dump-excluded pages") {
  std::vector<std::pair<void*, std::size_t>> blocks;
  std::set<void*> seen;
  for (std::size_t size : {1u, 16u, 32u, 33u, 44u, 100u, 32u}) {
    void* p = keymig::locked_alloc(size);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 16 == 0);
    const auto* bytes = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < size; ++i) REQUIRE(bytes[i] == 0);
    CHECK(seen.insert(p).second);
    std::memset(p, 0xAB, size);  // overlapping blocks would clobber each other
    blocks.emplace_back(p, size);
  }
  for (const auto& [p, size] : blocks) {
    const auto* bytes = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < size; ++i) REQUIRE(bytes[i] == 0xAB);
    const std::string flags = vm_flags_of(p);
    INFO(flags);
    CHECK(has_flag(flags, "dd"));
    if (keymig::locked_memory_state().all_locked && !kSanitizerLocksNothing)
      CHECK(has_flag(flags, "lo"));
  }
  for (const auto& [p, size] : blocks) keymig::locked_free(p, size);
  CHECK(keymig::locked_memory_state().bytes_mapped > 0);
}

TEST_CASE("locked_free wipes a block, and its slots are handed out again") {
  void* p = keymig::locked_alloc(32);
  std::memset(p, 0x5A, 32);
  keymig::locked_free(p, 32);
  void* q = keymig::locked_alloc(32);
  CHECK(q == p);  // first fit: the freed slot is the first free one
  const auto* bytes = static_cast<const unsigned char*>(q);
  for (int i = 0; i < 32; ++i) REQUIRE(bytes[i] == 0);
  keymig::locked_free(q, 32);
}

TEST_CASE("a secret larger than a chunk gets pages of its own, also excluded from dumps") {
  const std::size_t size = 1 << 20;
  const std::size_t before = keymig::locked_memory_state().bytes_mapped;
  void* p = keymig::locked_alloc(size);
  CHECK(keymig::locked_memory_state().bytes_mapped >= before + size);
  CHECK(has_flag(vm_flags_of(static_cast<char*>(p) + size - 1), "dd"));
  keymig::locked_free(p, size);
  CHECK(keymig::locked_memory_state().bytes_mapped == before);
}

TEST_CASE("LockedSecret keeps a text in locked memory and wipes the SecretString it took") {
  SecretString source(std::string(44, 'k'));
  LockedSecret secret(std::move(source));
  CHECK(source.empty());
  CHECK(secret.view() == std::string(44, 'k'));
  CHECK(has_flag(vm_flags_of(secret.view().data()), "dd"));

  LockedSecret moved(std::move(secret));
  CHECK(secret.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  CHECK(moved.view() == std::string(44, 'k'));
  LockedSecret copy = moved.clone();
  CHECK(copy.view() == moved.view());
  CHECK(copy.view().data() != moved.view().data());

  LockedSecret empty(SecretString{});
  CHECK(empty.empty());
}
