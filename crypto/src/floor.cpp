#include "keymig/crypto/floor.hpp"

#include <openssl/crypto.h>

#include <array>
#include <cstring>

#include "codec.hpp"
#include "openssl.hpp"

namespace keymig::crypto {

namespace {

// version(1) timestamp(8) IV(16) ciphertext(>= 16) tag(32)
constexpr std::size_t kHeader = 25;
constexpr std::size_t kTag = 32;
constexpr std::size_t kSmallest = kHeader + 16 + kTag;

}  // namespace

std::vector<std::uint8_t> token_bytes(std::string_view token) {
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  if (detail::decode_token_text(token, bytes) != Reason::ok)
    throw CryptoError("floor: an input token is not canonical base64url");
  return {bytes.data(), bytes.data() + bytes.size()};
}

struct RotationFloor::Impl {
  Impl(const Key& from, const Key& to)
      : from_mac(from.signing_key(), 16), to_mac(to.signing_key(), 16) {
    std::memcpy(from_enc.data(), from.encryption_key(), from_enc.size());
    std::memcpy(to_enc.data(), to.encryption_key(), to_enc.size());
  }
  ~Impl() {
    OPENSSL_cleanse(from_enc.data(), from_enc.size());
    OPENSSL_cleanse(to_enc.data(), to_enc.size());
    if (!plain.empty()) OPENSSL_cleanse(plain.data(), plain.size());
  }
  detail::HmacKey from_mac;
  detail::HmacKey to_mac;
  std::array<std::uint8_t, 16> from_enc{};
  std::array<std::uint8_t, 16> to_enc{};
  std::vector<std::uint8_t> plain;  // grown once, reused: no allocation per token
  std::vector<std::uint8_t> out;
};

RotationFloor::RotationFloor(const Key& from, const Key& to)
    : impl_(std::make_unique<Impl>(from, to)) {}

RotationFloor::~RotationFloor() = default;

bool RotationFloor::run(const std::vector<std::uint8_t>& token) {
  Impl& s = *impl_;
  if (token.size() < kSmallest) throw CryptoError("floor: an input token is too short");
  const std::size_t body = token.size() - kTag;
  const std::size_t ct_len = body - kHeader;
  if (s.plain.size() < ct_len) s.plain.resize(ct_len);
  if (s.out.size() < token.size()) s.out.resize(token.size());

  const bool verified = s.from_mac.verify(token.data(), body, token.data() + body);
  detail::aes_cbc_decrypt(s.from_enc.data(), token.data() + 9, token.data() + kHeader, ct_len,
                          s.plain.data());

  std::uint8_t* out = s.out.data();
  std::memcpy(out, token.data(), 9);
  detail::random_iv(out + 9);
  detail::aes_cbc_encrypt(s.to_enc.data(), out + 9, s.plain.data(), ct_len, out + kHeader);
  s.to_mac.compute(out, body, out + body);
  return verified;
}

}  // namespace keymig::crypto
