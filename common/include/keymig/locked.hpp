#pragma once

// Memory for the secrets a process keeps for its whole life: the keys, and the key texts
// of the configuration. It lives in pages of its own, excluded from core dumps
// (MADV_DONTDUMP: a core the operator allowed with KEYMIG_ALLOW_CORE_DUMPS=1 still holds
// no key) and locked in RAM (mlock: never written to swap). Locking is best effort: when
// RLIMIT_MEMLOCK forbids it, one warning is logged and the pages stay excluded from dumps.
// Per-row secrets (tokens, plaintexts) stay in SecretString: they are many, short-lived,
// and wiped after use.

#include <cstddef>
#include <string_view>

#include "keymig/secure.hpp"

namespace keymig {

/// `size` zeroed bytes, 16-byte aligned, in locked and dump-excluded pages. Thread-safe.
/// Throws std::bad_alloc when no pages can be mapped.
[[nodiscard]] void* locked_alloc(std::size_t size);
/// Wipes and returns what locked_alloc gave for the same `size`. Null is ignored.
void locked_free(void* data, std::size_t size) noexcept;

struct LockedMemoryState {
  std::size_t bytes_mapped = 0;  // pages mapped for secrets so far
  bool all_locked = true;        // every mapped page is also locked in RAM
};
[[nodiscard]] LockedMemoryState locked_memory_state() noexcept;

/// A secret text the process keeps (a key's text): move-only, in locked_alloc memory,
/// wiped on destruction, never printable. Takes its bytes from a SecretString, which then
/// wipes its own copy.
class LockedSecret {
 public:
  LockedSecret() = default;
  // Implicit: moving a secret into kept memory is what every caller means.
  LockedSecret(SecretString&& value);  // NOLINT(google-explicit-constructor)
  explicit LockedSecret(std::string_view value);
  LockedSecret(LockedSecret&& other) noexcept;
  LockedSecret& operator=(LockedSecret&& other) noexcept;
  LockedSecret(const LockedSecret&) = delete;
  LockedSecret& operator=(const LockedSecret&) = delete;
  ~LockedSecret();

  [[nodiscard]] std::string_view view() const noexcept { return {data_, size_}; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] LockedSecret clone() const { return LockedSecret(view()); }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace keymig
