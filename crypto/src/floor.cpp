#include "keymig/crypto/floor.hpp"

#include <openssl/crypto.h>

#include <array>
#include <cstring>

#include "codec.hpp"
#include "openssl.hpp"
#include "token.hpp"

namespace keymig::crypto {

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
  if (token.size() < detail::kMinTokenSize) throw CryptoError("floor: an input token is too short");
  const std::size_t body = token.size() - detail::kMacSize;
  const std::size_t ct_len = body - detail::kHeaderSize;
  if (s.plain.size() < ct_len) s.plain.resize(ct_len);
  if (s.out.size() < token.size()) s.out.resize(token.size());

  const bool verified = s.from_mac.verify(token.data(), body, token.data() + body);
  detail::aes_cbc_decrypt(s.from_enc.data(), token.data() + detail::kTimestampEnd,
                          token.data() + detail::kHeaderSize, ct_len, s.plain.data());

  std::uint8_t* out = s.out.data();
  std::uint8_t* iv = out + detail::kTimestampEnd;
  std::memcpy(out, token.data(), detail::kTimestampEnd);  // version and timestamp
  detail::random_iv(iv);
  detail::aes_cbc_encrypt(s.to_enc.data(), iv, s.plain.data(), ct_len, out + detail::kHeaderSize);
  s.to_mac.compute(out, body, out + body);
  return verified;
}

}  // namespace keymig::crypto
