#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace keymig {

/// Overwrites memory in a way the optimiser cannot drop.
void secure_wipe(void* data, std::size_t size) noexcept;

/// A move-only string for keys, tokens and plaintexts: wiped on destruction, on
/// reassignment and when moved from, never printable. Reserve capacity up front where it may grow:
/// a reallocation leaves the old buffer unwiped.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  explicit SecretString(std::string_view value) : value_(value) {}
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&& other) noexcept {
    const bool inline_bytes = is_inline(other.value_);
    value_ = std::move(other.value_);
    if (inline_bytes) scrub_inline(other.value_);
  }
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      wipe();
      const bool inline_bytes = is_inline(other.value_);
      value_ = std::move(other.value_);
      if (inline_bytes) scrub_inline(other.value_);
    }
    return *this;
  }
  ~SecretString() { wipe(); }

  [[nodiscard]] std::string_view view() const noexcept { return value_; }
  [[nodiscard]] bool empty() const noexcept { return value_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return value_.size(); }
  /// Explicit copy, so that every duplicate of a secret is visible in the code.
  [[nodiscard]] SecretString clone() const { return SecretString(std::string_view(value_)); }
  void wipe() noexcept {
    secure_wipe(value_.data(), value_.size());
    value_.clear();
  }

 private:
  // Whether the bytes sit in std::string's inline buffer, inside the object itself.
  static bool is_inline(const std::string& s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* o = reinterpret_cast<const unsigned char*>(&s);
    return p >= o && p < o + sizeof s;
  }
  // Moving a short string copies it out of the inline buffer and leaves all but its
  // first byte behind at size() 0, out of reach of wipe(). Only then is the whole inline
  // buffer scrubbed (growing to the capacity cannot reallocate): doing it on every wipe
  // cost keymig a sixth of its CPU in a migration, which moves and destroys several
  // secrets per row. A heap buffer is handed over whole and leaves nothing behind, and
  // nothing else writes a secret beyond size(): SecretString never shrinks its content.
  static void scrub_inline(std::string& s) noexcept {
    s.resize(s.capacity());
    secure_wipe(s.data(), s.size());
    s.clear();
  }

  std::string value_;
};

}  // namespace keymig
