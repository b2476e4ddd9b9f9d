#pragma once

// Private to crypto/: the token layout, the checks that need no key, and Fernet::Impl,
// which KeyRing drives directly (one parse and one HMAC state per token, whichever key
// turns out to have made it).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "codec.hpp"
#include "keymig/crypto/fernet.hpp"
#include "openssl.hpp"

namespace keymig::crypto::detail {

inline constexpr std::uint8_t kVersion = 0x80;
inline constexpr std::size_t kHeaderSize = 25;  // version, timestamp, IV
inline constexpr std::size_t kMacSize = 32;
inline constexpr std::size_t kOverhead = kHeaderSize + kMacSize;
inline constexpr std::size_t kMinTokenSize = kOverhead + 16;
inline constexpr std::size_t kTimestampEnd = 9;

inline std::uint64_t read_timestamp(const std::uint8_t* p) noexcept {
  std::uint64_t ts = 0;
  for (int i = 1; i <= 8; ++i) ts = (ts << 8) | p[i];
  return ts;
}

inline void write_timestamp(std::uint8_t* p, std::uint64_t ts) noexcept {
  for (int i = 8; i >= 1; --i) {
    p[i] = static_cast<std::uint8_t>(ts);
    ts >>= 8;
  }
}

enum class Shape { full, mac_only };

// Decoding and every check that needs no key. `full` is what decryption needs (at least
// one block, whole blocks); `mac_only` is what extract_timestamp needs, as the reference
// returns the timestamp of any correctly signed token with room for a tag.
//
// Text only Python's lenient decoder reads is decoded that way and checked like any other
// (`canonical` false): Fernet reports non_canonical only when the token behind the text
// would otherwise have been accepted, so that the reason tells an operator the row is
// recoverable, not merely that it holds odd characters; KeyRing reads it as pyca 48 does.
inline Reason parse(std::string_view text, detail::Buffer& bytes, std::uint64_t& timestamp,
                    bool& canonical, Shape shape = Shape::full) noexcept {
  const Reason decoded = detail::decode_token_text(text, bytes);
  if (decoded == Reason::not_base64) return decoded;
  canonical = decoded == Reason::ok;
  const std::uint8_t* b = bytes.data();
  const std::size_t n = bytes.size();
  if (n >= 1 && b[0] != kVersion) return Reason::bad_version;
  if (n < kTimestampEnd) return Reason::too_short;
  timestamp = read_timestamp(b);
  if (shape == Shape::mac_only)
    return n < kTimestampEnd + kMacSize ? Reason::too_short : Reason::ok;
  if (n < kMinTokenSize) return Reason::too_short;
  if ((n - kOverhead) % 16 != 0) return Reason::bad_length;
  return Reason::ok;
}

}  // namespace keymig::crypto::detail

namespace keymig::crypto {

// One key's MAC state and the operations on a token it made.
struct Fernet::Impl {
  explicit Impl(Key k) : key(std::move(k)), mac(key.signing_key(), 16) {}

  [[nodiscard]] bool verify(const detail::Buffer& bytes) const {
    const std::size_t body = bytes.size() - detail::kMacSize;
    return mac.verify(bytes.data(), body, bytes.data() + body);
  }

  // AES and the PKCS7 check of a verified, `full`-shaped token. `padded` receives the
  // still-padded plaintext (it is what a rotation re-encrypts); `plain_len` its unpadded
  // length.
  [[nodiscard]] Reason open(const detail::Buffer& bytes, detail::Buffer& padded,
                            std::size_t& plain_len) const {
    const std::size_t ct_len = bytes.size() - detail::kOverhead;
    detail::aes_cbc_decrypt(key.encryption_key(), bytes.data() + detail::kTimestampEnd,
                            bytes.data() + detail::kHeaderSize, ct_len, padded.data());
    padded.shrink(ct_len);
    // Branch-free over the last block, although only a key holder reaches this point.
    const std::uint8_t* p = padded.data();
    const unsigned pad = p[ct_len - 1];
    unsigned bad = static_cast<unsigned>(pad == 0) | static_cast<unsigned>(pad > 16);
    for (unsigned i = 1; i <= 16; ++i) {
      const unsigned in_pad = static_cast<unsigned>(i <= pad);
      bad |= in_pad & static_cast<unsigned>(p[ct_len - i] != pad);
    }
    if (bad != 0) return Reason::bad_padding;
    plain_len = ct_len - pad;
    return Reason::ok;
  }

  [[nodiscard]] DecryptResult decrypt_verified(const detail::Buffer& bytes, std::uint64_t timestamp,
                                               bool canonical) const {
    DecryptResult result;
    result.timestamp = timestamp;
    detail::Buffer padded(bytes.size() - detail::kOverhead, /*secret=*/true);
    std::size_t plain_len = 0;
    result.reason = open(bytes, padded, plain_len);
    if (result.ok() && !canonical)
      result.reason = Reason::non_canonical;  // readable, but not handed out as text we accept
    else if (result.ok())
      result.plaintext =
          SecretString(std::string_view(reinterpret_cast<const char*>(padded.data()), plain_len));
    return result;
  }

  // Encrypts an already padded plaintext (whole blocks), MACs and encodes it: the one
  // place a token is made.
  [[nodiscard]] SecretString seal(const std::uint8_t* padded, std::size_t padded_len,
                                  std::uint64_t timestamp, const std::uint8_t* iv) const {
    detail::Buffer body(padded_len + detail::kOverhead, /*secret=*/false);
    std::uint8_t* b = body.data();
    b[0] = detail::kVersion;
    detail::write_timestamp(b, timestamp);
    std::memcpy(b + detail::kTimestampEnd, iv, 16);
    detail::aes_cbc_encrypt(key.encryption_key(), iv, padded, padded_len, b + detail::kHeaderSize);
    mac.compute(b, detail::kHeaderSize + padded_len, b + detail::kHeaderSize + padded_len);
    std::string text(detail::encoded_length(body.size()), '\0');
    detail::encode_base64url(b, body.size(), text.data());
    return SecretString(std::move(text));
  }

  [[nodiscard]] SecretString seal_fresh(const std::uint8_t* padded, std::size_t padded_len,
                                        std::uint64_t timestamp) const {
    std::uint8_t iv[16];
    detail::random_iv(iv);
    return seal(padded, padded_len, timestamp, iv);
  }

  [[nodiscard]] SecretString encrypt(std::string_view plaintext, std::uint64_t timestamp,
                                     const std::uint8_t* iv) const {
    const std::size_t padded_len = (plaintext.size() / 16 + 1) * 16;
    detail::Buffer padded(padded_len, /*secret=*/true);
    std::memcpy(padded.data(), plaintext.data(), plaintext.size());
    const auto pad = static_cast<std::uint8_t>(padded_len - plaintext.size());
    std::memset(padded.data() + plaintext.size(), pad, pad);
    if (iv != nullptr) return seal(padded.data(), padded_len, timestamp, iv);
    return seal_fresh(padded.data(), padded_len, timestamp);
  }

  Key key;
  detail::HmacKey mac;
};

}  // namespace keymig::crypto
