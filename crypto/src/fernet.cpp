#include "keymig/crypto/fernet.hpp"

#include <openssl/crypto.h>

#include <cstring>
#include <ctime>
#include <string>
#include <utility>

#include "codec.hpp"
#include "keymig/locked.hpp"
#include "openssl.hpp"
#include "token.hpp"

namespace keymig::crypto {

using detail::kTimestampEnd;
using detail::kVersion;
using detail::parse;
using detail::read_timestamp;
using detail::Shape;

namespace {

constexpr std::int64_t kMaxClockSkew = 60;

constexpr const char* kKeyShape = "a Fernet key must be 32 url-safe base64-encoded bytes";

// Spec order: TTL and skew before the MAC. 128-bit arithmetic: ts may be 2^64-1 and the
// TTL negative, and neither may wrap.
Reason check_time(std::uint64_t timestamp, std::int64_t ttl, std::uint64_t now) noexcept {
  const __int128 ts = timestamp;
  const __int128 current = now;
  if (ts + ttl < current) return Reason::expired;
  if (current + kMaxClockSkew < ts) return Reason::from_future;
  return Reason::ok;
}

std::uint64_t now_seconds() noexcept {
  return static_cast<std::uint64_t>(std::time(nullptr));
}

}  // namespace

void forget_key_schedules() noexcept {
  detail::forget_key_schedules();
}

// ---------------------------------------------------------------------------------------
// Key

Key Key::parse(std::string_view text) {
  if (text.size() != 43 && text.size() != 44)
    throw KeyError(std::string(kKeyShape) + " (44 characters, or 43 without the '='); got " +
                   std::to_string(text.size()) + " characters");
  std::uint8_t decoded[detail::decoded_capacity(44)];
  std::size_t len = 0;
  const bool ok = decode_base64url_strict(text, decoded, len) && len == 32;
  Key key;
  if (ok) std::memcpy(key.bytes_, decoded, kSize);
  OPENSSL_cleanse(decoded, sizeof decoded);
  if (!ok)
    throw KeyError(std::string(kKeyShape) +
                   "; the text is not canonical base64url (only A-Z a-z 0-9 - _, no spaces)");
  return key;
}

Key Key::generate() {
  Key key;
  detail::os_random(key.bytes_, kSize);
  return key;
}

Key::Key() : bytes_(static_cast<std::uint8_t*>(locked_alloc(kSize))) {}

Key::Key(Key&& other) noexcept : bytes_(std::exchange(other.bytes_, nullptr)) {}

Key& Key::operator=(Key&& other) noexcept {
  if (this != &other) {
    locked_free(bytes_, kSize);
    bytes_ = std::exchange(other.bytes_, nullptr);
  }
  return *this;
}

Key::~Key() {
  locked_free(bytes_, kSize);
}

SecretString Key::encode() const {
  std::string text(detail::encoded_length(kSize), '\0');
  detail::encode_base64url(bytes_, kSize, text.data());
  return SecretString(std::move(text));
}

std::string Key::fingerprint() const {
  static constexpr char kDomain[] = "keymig-key-fingerprint-v1";
  detail::MdCtxPtr md = detail::make_md_ctx();
  std::uint8_t digest[32];
  unsigned int n = 0;
  if (EVP_DigestInit_ex2(md.get(), detail::sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(md.get(), kDomain, sizeof kDomain - 1) != 1 ||
      EVP_DigestUpdate(md.get(), bytes_, kSize) != 1 ||
      EVP_DigestFinal_ex(md.get(), digest, &n) != 1)
    detail::throw_openssl("fingerprint");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(12, '0');
  for (int i = 0; i < 6; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0x0F];
  }
  return out;
}

bool Key::same_as(const Key& other) const noexcept {
  return CRYPTO_memcmp(bytes_, other.bytes_, kSize) == 0;
}

// ---------------------------------------------------------------------------------------
// Fernet

Fernet::Fernet(Key key) : impl_(std::make_unique<Impl>(std::move(key))) {}
Fernet::Fernet(Fernet&&) noexcept = default;
Fernet& Fernet::operator=(Fernet&&) noexcept = default;
Fernet::~Fernet() = default;

SecretString Fernet::encrypt(std::string_view plaintext) const {
  return impl_->encrypt(plaintext, now_seconds(), nullptr);
}

SecretString Fernet::encrypt_at_time(std::string_view plaintext, std::uint64_t timestamp) const {
  return impl_->encrypt(plaintext, timestamp, nullptr);
}

SecretString Fernet::encrypt_from_parts(std::string_view plaintext, std::uint64_t timestamp,
                                        const std::array<std::uint8_t, 16>& iv) const {
  return impl_->encrypt(plaintext, timestamp, iv.data());
}

DecryptResult Fernet::decrypt(std::string_view token) const {
  DecryptResult result;
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  bool canonical = true;
  result.reason = parse(token, bytes, result.timestamp, canonical);
  if (!result.ok()) return result;
  if (!impl_->verify(bytes)) {
    result.reason = Reason::unknown_key;
    return result;
  }
  return impl_->decrypt_verified(bytes, result.timestamp, canonical);
}

DecryptResult Fernet::decrypt_at_time(std::string_view token, std::int64_t ttl_seconds,
                                      std::uint64_t now) const {
  DecryptResult result;
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  bool canonical = true;
  result.reason = parse(token, bytes, result.timestamp, canonical);
  if (!result.ok()) return result;
  result.reason = check_time(result.timestamp, ttl_seconds, now);
  if (!result.ok()) return result;
  if (!impl_->verify(bytes)) {
    result.reason = Reason::unknown_key;
    return result;
  }
  return impl_->decrypt_verified(bytes, result.timestamp, canonical);
}

std::optional<std::uint64_t> Fernet::extract_timestamp(std::string_view token) const {
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  std::uint64_t timestamp = 0;
  bool canonical = true;
  if (parse(token, bytes, timestamp, canonical, Shape::mac_only) != Reason::ok || !canonical)
    return std::nullopt;
  if (!impl_->verify(bytes)) return std::nullopt;
  return timestamp;
}

const Key& Fernet::key() const noexcept {
  return impl_->key;
}

bool is_token_text(std::string_view text) noexcept {
  static constexpr std::string_view kPrefix = "gAAAAA";
  if (text.substr(0, kPrefix.size()) != kPrefix) return false;
  detail::Buffer bytes(detail::decoded_capacity(text.size()), /*secret=*/true);
  std::uint64_t timestamp = 0;
  bool canonical = true;
  return parse(text, bytes, timestamp, canonical) == Reason::ok;
}

std::optional<std::uint64_t> unverified_timestamp(std::string_view token) noexcept {
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  std::uint64_t timestamp = 0;
  if (detail::decode_token_text(token, bytes) != Reason::ok) return std::nullopt;
  if (bytes.size() < kTimestampEnd || bytes.data()[0] != kVersion) return std::nullopt;
  timestamp = read_timestamp(bytes.data());
  return timestamp;
}

}  // namespace keymig::crypto
