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
  SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      wipe();
      value_ = std::move(other.value_);
      other.wipe();
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
    // The whole buffer, not only size(): moving a short string copies it out of the
    // inline buffer and leaves all but its first byte behind, at size() 0. Growing to
    // the capacity cannot reallocate.
    value_.resize(value_.capacity());
    secure_wipe(value_.data(), value_.size());
    value_.clear();
  }

 private:
  std::string value_;
};

}  // namespace keymig
