#pragma once

// Private to crypto/: base64url as Fernet tokens use it, and the scratch buffer that
// keeps the hot path off the heap.

#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "keymig/crypto/fernet.hpp"

namespace keymig::crypto::detail {

/// Bytes on the stack for every token a TOTP secret makes, on the heap beyond that.
/// A secret buffer (plaintext) is cleansed on destruction.
class Buffer {
 public:
  static constexpr std::size_t kInline = 512;
  Buffer(std::size_t size, bool secret)
      : heap_(size > kInline ? std::make_unique<std::uint8_t[]>(size) : nullptr),
        data_(heap_ ? heap_.get() : inline_),
        capacity_(size),
        size_(size),
        secret_(secret) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (secret_) OPENSSL_cleanse(data_, capacity_);
  }

  [[nodiscard]] std::uint8_t* data() noexcept { return data_; }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  void shrink(std::size_t size) noexcept { size_ = size < size_ ? size : size_; }

 private:
  std::unique_ptr<std::uint8_t[]> heap_;
  std::uint8_t* data_;
  std::size_t capacity_;
  std::size_t size_;
  bool secret_;
  std::uint8_t inline_[kInline];
};

/// Length of the canonical padded encoding of `n` bytes.
[[nodiscard]] constexpr std::size_t encoded_length(std::size_t n) {
  return (n + 2) / 3 * 4;
}
/// Upper bound of the bytes `chars` characters decode to.
[[nodiscard]] constexpr std::size_t decoded_capacity(std::size_t chars) {
  return chars / 4 * 3 + 3;
}

/// Canonical padded base64url; writes exactly encoded_length(len) characters.
void encode_base64url(const std::uint8_t* data, std::size_t len, char* out) noexcept;

/// Strict base64url: URL-safe alphabet only, padding either canonical or absent, unused
/// bits zero. `out` holds decoded_capacity(text.size()) bytes. False if not canonical.
[[nodiscard]] bool decode_strict(std::string_view text, std::uint8_t* out,
                                 std::size_t& out_len) noexcept;

/// What Python 3.11's `base64.urlsafe_b64decode` (binascii, non-strict) makes of a `str`
/// token, as cryptography 48 decodes it: skips non-alphabet characters, accepts '+' and
/// '/', stops at the first complete padding, ignores unused bits; refuses non-ASCII, a
/// missing padding and a lone trailing character. False if Python raises.
[[nodiscard]] bool decode_python_lenient(std::string_view text, std::uint8_t* out,
                                         std::size_t& out_len) noexcept;

/// ok (strict), non_canonical (only the lenient decoder takes it) or not_base64.
/// `out` is resized to the decoded bytes when ok or non_canonical.
[[nodiscard]] Reason decode_token_text(std::string_view text, Buffer& out) noexcept;

}  // namespace keymig::crypto::detail
