#pragma once

// Private to crypto/: the token decoder over keymig/base64.hpp, and the scratch buffer
// that keeps the hot path off the heap.

#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "keymig/base64.hpp"
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

using keymig::decoded_capacity;
using keymig::encode_base64url;
using keymig::encoded_length;

/// ok (strict), non_canonical (only the lenient decoder takes it) or not_base64.
/// `out` is resized to the decoded bytes when ok or non_canonical.
[[nodiscard]] Reason decode_token_text(std::string_view text, Buffer& out) noexcept;

}  // namespace keymig::crypto::detail
