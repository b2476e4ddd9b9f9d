#include "keymig/crypto/fernet.hpp"

#include <openssl/crypto.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>

#include "codec.hpp"
#include "openssl.hpp"

namespace keymig::crypto {

namespace {

constexpr std::uint8_t kVersion = 0x80;
constexpr std::size_t kHeaderSize = 25;  // version, timestamp, IV
constexpr std::size_t kMacSize = 32;
constexpr std::size_t kOverhead = kHeaderSize + kMacSize;
constexpr std::size_t kMinTokenSize = kOverhead + 16;
constexpr std::size_t kTimestampEnd = 9;
constexpr std::int64_t kMaxClockSkew = 60;

constexpr const char* kKeyShape = "a Fernet key must be 32 url-safe base64-encoded bytes";

std::uint64_t read_timestamp(const std::uint8_t* p) noexcept {
  std::uint64_t ts = 0;
  for (int i = 1; i <= 8; ++i) ts = (ts << 8) | p[i];
  return ts;
}

void write_timestamp(std::uint8_t* p, std::uint64_t ts) noexcept {
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
// (`canonical` false): callers report non_canonical only when the token behind the text
// would otherwise have been accepted, so that the reason tells an operator the row is
// recoverable, not merely that it holds odd characters.
Reason parse(std::string_view text, detail::Buffer& bytes, std::uint64_t& timestamp,
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

std::atomic<std::uint64_t> next_ring_id{1};

}  // namespace

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
  if (ok) std::memcpy(key.bytes_.data(), decoded, 32);
  OPENSSL_cleanse(decoded, sizeof decoded);
  if (!ok)
    throw KeyError(std::string(kKeyShape) +
                   "; the text is not canonical base64url (only A-Z a-z 0-9 - _, no spaces)");
  return key;
}

Key Key::generate() {
  Key key;
  detail::os_random(key.bytes_.data(), key.bytes_.size());
  return key;
}

Key::Key(Key&& other) noexcept : bytes_(other.bytes_) {
  OPENSSL_cleanse(other.bytes_.data(), other.bytes_.size());
}

Key& Key::operator=(Key&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    OPENSSL_cleanse(other.bytes_.data(), other.bytes_.size());
  }
  return *this;
}

Key::~Key() {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

SecretString Key::encode() const {
  std::string text(detail::encoded_length(bytes_.size()), '\0');
  detail::encode_base64url(bytes_.data(), bytes_.size(), text.data());
  return SecretString(std::move(text));
}

std::string Key::fingerprint() const {
  static constexpr char kDomain[] = "keymig-key-fingerprint-v1";
  detail::MdCtxPtr md = detail::make_md_ctx();
  std::uint8_t digest[32];
  unsigned int n = 0;
  if (EVP_DigestInit_ex2(md.get(), detail::sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(md.get(), kDomain, sizeof kDomain - 1) != 1 ||
      EVP_DigestUpdate(md.get(), bytes_.data(), bytes_.size()) != 1 ||
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
  return CRYPTO_memcmp(bytes_.data(), other.bytes_.data(), bytes_.size()) == 0;
}

// ---------------------------------------------------------------------------------------
// Fernet

struct Fernet::Impl {
  explicit Impl(Key k) : key(std::move(k)), mac(key.signing_key(), 16) {}

  [[nodiscard]] bool verify(const detail::Buffer& bytes) const {
    const std::size_t body = bytes.size() - kMacSize;
    return mac.verify(bytes.data(), body, bytes.data() + body);
  }

  // AES and the PKCS7 check of a verified, `full`-shaped token. `padded` receives the
  // still-padded plaintext (it is what a rotation re-encrypts); `plain_len` its unpadded
  // length.
  [[nodiscard]] Reason open(const detail::Buffer& bytes, detail::Buffer& padded,
                            std::size_t& plain_len) const {
    const std::size_t ct_len = bytes.size() - kOverhead;
    detail::aes_cbc_decrypt(key.encryption_key(), bytes.data() + kTimestampEnd,
                            bytes.data() + kHeaderSize, ct_len, padded.data());
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
    detail::Buffer padded(bytes.size() - kOverhead, /*secret=*/true);
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
    detail::Buffer body(padded_len + kOverhead, /*secret=*/false);
    std::uint8_t* b = body.data();
    b[0] = kVersion;
    write_timestamp(b, timestamp);
    std::memcpy(b + kTimestampEnd, iv, 16);
    detail::aes_cbc_encrypt(key.encryption_key(), iv, padded, padded_len, b + kHeaderSize);
    mac.compute(b, kHeaderSize + padded_len, b + kHeaderSize + padded_len);
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

std::optional<std::uint64_t> unverified_timestamp(std::string_view token) noexcept {
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  std::uint64_t timestamp = 0;
  if (detail::decode_token_text(token, bytes) != Reason::ok) return std::nullopt;
  if (bytes.size() < kTimestampEnd || bytes.data()[0] != kVersion) return std::nullopt;
  timestamp = read_timestamp(bytes.data());
  return timestamp;
}

// ---------------------------------------------------------------------------------------
// KeyRing

struct KeyRing::Impl {
  std::vector<Fernet> keys;  // [0] active, [i + 1] rolling[i]
  std::uint64_t id = next_ring_id.fetch_add(1, std::memory_order_relaxed);

  // The first key, in configured order, whose HMAC verifies. The thread's last match is
  // tried first: in a migration nearly every row is under the same key, and this saves
  // the active key's MAC on every rolling row. The answer is the ordered one because no
  // two keys share a signing key (checked at construction), so a token verifying under
  // two keys would be an HMAC-SHA256 forgery.
  [[nodiscard]] int find_key(const detail::Buffer& bytes) const {
    struct Hint {
      std::uint64_t ring = 0;
      int index = 0;
    };
    thread_local Hint hint;
    const int count = static_cast<int>(keys.size());
    const int first = hint.ring == id && hint.index < count ? hint.index : 0;
    if (keys[first].impl_->verify(bytes)) return remember(hint, first);
    for (int i = 0; i < count; ++i)
      if (i != first && keys[i].impl_->verify(bytes)) return remember(hint, i);
    return -1;
  }

  template <typename Hint>
  int remember(Hint& hint, int index) const noexcept {
    hint.ring = id;
    hint.index = index;
    return index;
  }

  [[nodiscard]] Rotation rotate(std::string_view token, bool always) const {
    Rotation result;
    detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
    bool canonical = true;
    result.reason = parse(token, bytes, result.timestamp, canonical);
    if (result.reason != Reason::ok) return result;
    result.key_index = find_key(bytes);
    if (result.key_index < 0 || !canonical) {
      result.reason = result.key_index < 0 ? Reason::unknown_key : Reason::non_canonical;
      result.key_index = -1;
      return result;
    }
    if (result.key_index == 0 && !always) return result;
    detail::Buffer padded(bytes.size() - kOverhead, /*secret=*/true);
    std::size_t plain_len = 0;
    result.reason = keys[result.key_index].impl_->open(bytes, padded, plain_len);
    if (result.reason != Reason::ok) return result;
    // The decrypted block still carries its PKCS7 padding, which is exactly the padding
    // the same plaintext gets again: re-encrypt it as is.
    result.token = keys[0].impl_->seal_fresh(padded.data(), padded.size(), result.timestamp);
    return result;
  }
};

KeyRing::KeyRing(Key active, std::vector<Key> rolling) : impl_(std::make_unique<Impl>()) {
  auto name = [](std::size_t index) {
    return index == 0 ? std::string("the active key") : "rolling key " + std::to_string(index - 1);
  };
  std::vector<const Key*> all{&active};
  for (const Key& key : rolling) all.push_back(&key);
  for (std::size_t i = 0; i < all.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (all[i]->same_as(*all[j])) throw KeyError(name(i) + " is the same key as " + name(j));
      // Same signing half, different encryption half: a token would verify under both,
      // and which one decrypts it would depend on the order tried.
      if (CRYPTO_memcmp(all[i]->signing_key(), all[j]->signing_key(), 16) == 0)
        throw KeyError(name(i) + " has the same signing half as " + name(j));
    }
  }
  impl_->keys.reserve(all.size());
  impl_->keys.emplace_back(std::move(active));
  for (Key& key : rolling) impl_->keys.emplace_back(std::move(key));
}

KeyRing::KeyRing(KeyRing&&) noexcept = default;
KeyRing& KeyRing::operator=(KeyRing&&) noexcept = default;
KeyRing::~KeyRing() = default;

Classification KeyRing::classify(std::string_view token) const {
  Classification result;
  detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
  bool canonical = true;
  result.reason = parse(token, bytes, result.timestamp, canonical);
  if (result.reason != Reason::ok) return result;
  result.key_index = impl_->find_key(bytes);
  if (result.key_index < 0 || !canonical) {
    result.reason = result.key_index < 0 ? Reason::unknown_key : Reason::non_canonical;
    result.key_index = -1;
  }
  return result;
}

Rotation KeyRing::rotate(std::string_view token) const {
  return impl_->rotate(token, false);
}

Rotation KeyRing::rotate_always(std::string_view token) const {
  return impl_->rotate(token, true);
}

DecryptResult KeyRing::decrypt_active(std::string_view token) const {
  return impl_->keys[0].decrypt(token);
}

DecryptResult KeyRing::decrypt_with(std::string_view token, int key_index) const {
  if (key_index < 0 || static_cast<std::size_t>(key_index) >= impl_->keys.size())
    throw CryptoError("key index " + std::to_string(key_index) + " is not configured");
  return impl_->keys[static_cast<std::size_t>(key_index)].decrypt(token);
}

SecretString KeyRing::encrypt(std::string_view plaintext) const {
  return impl_->keys[0].encrypt(plaintext);
}

std::size_t KeyRing::rolling_count() const noexcept {
  return impl_->keys.size() - 1;
}

std::string KeyRing::key_label(int key_index) {
  if (key_index < 0) return "undecryptable";
  if (key_index == 0) return "active";
  return "rolling_" + std::to_string(key_index - 1);
}

std::string KeyRing::fingerprint(int key_index) const {
  if (key_index < 0 || static_cast<std::size_t>(key_index) >= impl_->keys.size())
    throw CryptoError("key index " + std::to_string(key_index) + " is not configured");
  return impl_->keys[static_cast<std::size_t>(key_index)].key().fingerprint();
}

}  // namespace keymig::crypto
