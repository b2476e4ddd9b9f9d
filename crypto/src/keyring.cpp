// KeyRing: the active key and the rolling keys, as MultiFernet.

#include <openssl/crypto.h>

#include <atomic>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "token.hpp"

namespace keymig::crypto {

using detail::kOverhead;
using detail::parse;

namespace {

std::atomic<std::uint64_t> next_ring_id{1};

}  // namespace

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

  // Fernet::decrypt, but reading non-canonical text as pyca 48 does.
  [[nodiscard]] DecryptResult decrypt(std::string_view token, std::size_t index) const {
    DecryptResult result;
    detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
    bool canonical = true;
    result.reason = parse(token, bytes, result.timestamp, canonical);
    if (!result.ok()) return result;
    const Fernet::Impl& key = *keys[index].impl_;
    if (!key.verify(bytes)) {
      result.reason = Reason::unknown_key;
      return result;
    }
    return key.decrypt_verified(bytes, result.timestamp, /*canonical=*/true);
  }

  // The first block alone decides for nearly every token: a TOTP secret never starts with
  // "gAAAAA" (base32 is upper case), so the rest is decrypted only for a likely inner token.
  [[nodiscard]] bool holds_token(const detail::Buffer& bytes, int index) const {
    static constexpr char kPrefix[] = "gAAAAA";
    const Fernet::Impl& key = *keys[static_cast<std::size_t>(index)].impl_;
    std::uint8_t first[16];
    detail::aes_cbc_decrypt(key.key.encryption_key(), bytes.data() + detail::kTimestampEnd,
                            bytes.data() + detail::kHeaderSize, 16, first);
    const bool likely = std::memcmp(first, kPrefix, sizeof kPrefix - 1) == 0;
    OPENSSL_cleanse(first, sizeof first);
    if (!likely) return false;
    detail::Buffer padded(bytes.size() - kOverhead, /*secret=*/true);
    std::size_t plain_len = 0;
    if (key.open(bytes, padded, plain_len) != Reason::ok) return false;
    return is_token_text(std::string_view(reinterpret_cast<const char*>(padded.data()), plain_len));
  }

  // classify and classify_deep: `deep` also looks inside (holds_token).
  [[nodiscard]] Classification classify(std::string_view token, bool deep) const {
    Classification result;
    detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
    result.reason = parse(token, bytes, result.timestamp, result.canonical);
    if (result.reason != Reason::ok) return result;
    result.canonical_length = detail::encoded_length(bytes.size());
    result.key_index = find_key(bytes);
    if (result.key_index < 0)
      result.reason = Reason::unknown_key;
    else if (deep)
      result.double_encrypted = holds_token(bytes, result.key_index);
    return result;
  }

  template <typename Hint>
  int remember(Hint& hint, int index) const noexcept {
    hint.ring = id;
    hint.index = index;
    return index;
  }

  // A spelling only Python's lenient decoder reads is still a token the platform reads
  // (pyca 48 decodes that way), so it is classified and rotated by the key that verifies
  // what it spells; the output is always canonical.
  [[nodiscard]] Rotation rotate(std::string_view token, bool always) const {
    Rotation result;
    detail::Buffer bytes(detail::decoded_capacity(token.size()), false);
    result.reason = parse(token, bytes, result.timestamp, result.canonical);
    if (result.reason != Reason::ok) return result;
    result.key_index = find_key(bytes);
    if (result.key_index < 0) {
      result.reason = Reason::unknown_key;
      return result;
    }
    if (result.key_index == 0 && !always && result.canonical) return result;
    detail::Buffer padded(bytes.size() - kOverhead, /*secret=*/true);
    std::size_t plain_len = 0;
    result.reason = keys[result.key_index].impl_->open(bytes, padded, plain_len);
    if (result.reason != Reason::ok) return result;
    if (result.key_index == 0 && !always) {
      // Already under the active key: the same bytes, spelled as every decoder reads them
      // (pyca's newer decoder refuses whitespace, '+', '/' and trailing junk).
      std::string text(detail::encoded_length(bytes.size()), '\0');
      detail::encode_base64url(bytes.data(), bytes.size(), text.data());
      result.token = SecretString(std::move(text));
      return result;
    }
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
  return impl_->classify(token, /*deep=*/false);
}

Classification KeyRing::classify_deep(std::string_view token) const {
  return impl_->classify(token, /*deep=*/true);
}

Rotation KeyRing::rotate(std::string_view token) const {
  return impl_->rotate(token, false);
}

Rotation KeyRing::rotate_always(std::string_view token) const {
  return impl_->rotate(token, true);
}

DecryptResult KeyRing::decrypt_active(std::string_view token) const {
  return impl_->decrypt(token, 0);
}

DecryptResult KeyRing::decrypt_with(std::string_view token, int key_index) const {
  if (key_index < 0 || static_cast<std::size_t>(key_index) >= impl_->keys.size())
    throw CryptoError("key index " + std::to_string(key_index) + " is not configured");
  return impl_->decrypt(token, static_cast<std::size_t>(key_index));
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
