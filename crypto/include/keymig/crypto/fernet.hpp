#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keymig/error.hpp"
#include "keymig/secure.hpp"

namespace keymig::crypto {

/// Thrown for what stops work: an OpenSSL failure, a key that does not parse.
class CryptoError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

/// A key text that is not a Fernet key. The message never contains the key.
class KeyError : public keymig::UsageError {
 public:
  using keymig::UsageError::UsageError;
};

/// Why a token was not accepted. Per-row data, not an exception.
enum class Reason : std::uint8_t {
  ok,
  not_base64,     // not base64url at all
  non_canonical,  // Fernet alone: not canonical text (whitespace, '+', '/', junk, bad bits),
                  // but Python's lenient decoder reads it and the key verifies what it
                  // reads. KeyRing reads such text as pyca 48 does (Classification and
                  // Rotation say `canonical` false) instead: the platform reads it.
  bad_version,    // first byte is not 0x80
  too_short,      // shorter than the smallest token (73 bytes)
  bad_length,     // ciphertext not a multiple of the block size
  unknown_key,    // no configured key's HMAC verifies it
  bad_padding,    // HMAC verified, PKCS7 padding wrong
  expired,        // only with a TTL
  from_future,    // only with a TTL: more than 60 s ahead
};

/// Stable lower-case name, used in reports, JSON and metrics labels.
[[nodiscard]] const char* reason_name(Reason reason) noexcept;

/// A Fernet key: 16-byte signing key and 16-byte encryption key. Move-only, wiped on
/// destruction, never printable; its bytes live in locked, dump-excluded memory
/// (keymig/locked.hpp). A moved-from Key may only be destroyed or assigned to.
class Key {
 public:
  /// Accepts base64url with or without '=' padding. Throws KeyError.
  [[nodiscard]] static Key parse(std::string_view text);
  /// 32 bytes from the OS CSPRNG.
  [[nodiscard]] static Key generate();

  Key(Key&&) noexcept;
  Key& operator=(Key&&) noexcept;
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;
  ~Key();

  /// Canonical padded base64url text (for `keymig keygen` only).
  [[nodiscard]] SecretString encode() const;
  /// Short one-way digest, safe to print and to use as a metric label.
  [[nodiscard]] std::string fingerprint() const;
  /// Constant-time comparison.
  [[nodiscard]] bool same_as(const Key& other) const noexcept;

  [[nodiscard]] const std::uint8_t* signing_key() const noexcept { return bytes_; }
  [[nodiscard]] const std::uint8_t* encryption_key() const noexcept { return bytes_ + 16; }

 private:
  static constexpr std::size_t kSize = 32;
  Key();
  std::uint8_t* bytes_;  // kSize bytes from locked_alloc; null once moved from
};

struct DecryptResult {
  Reason reason = Reason::ok;
  std::uint64_t timestamp = 0;  // valid once the token parsed
  SecretString plaintext;       // set only when reason == ok
  [[nodiscard]] bool ok() const noexcept { return reason == Reason::ok; }
};

/// Whether `text` is itself a Fernet token's text: it starts as every token of this era
/// does ("gAAAAA": version 0x80 and a timestamp below 2^36) and parses as one (no key, no
/// MAC). What a field library that encrypts twice leaves as the plaintext.
[[nodiscard]] bool is_token_text(std::string_view text) noexcept;

/// Replaces the calling thread's AES key schedules with a zero key's. Each thread keeps
/// one AES context per direction for its whole life, and the last key it used stays
/// expanded there (in ordinary heap memory: its first round key is the key itself);
/// re-keying after every token would cost a fifth of a rotation's CPU. Code that runs a
/// batch of Fernet work calls this when the batch is done, so that no key schedule
/// outlives the batch.
void forget_key_schedules() noexcept;

/// Reads the clear-text timestamp without any key (no verification).
[[nodiscard]] std::optional<std::uint64_t> unverified_timestamp(std::string_view token) noexcept;

/// One key, as pyca/cryptography's `Fernet`. Thread-safe: immutable after construction;
/// OpenSSL contexts are per thread. Per-token problems come back as a Reason; methods throw
/// CryptoError only when OpenSSL itself fails. A moved-from Fernet may only be destroyed.
class Fernet {
 public:
  explicit Fernet(Key key);
  Fernet(Fernet&&) noexcept;
  Fernet& operator=(Fernet&&) noexcept;
  ~Fernet();

  [[nodiscard]] SecretString encrypt(std::string_view plaintext) const;
  [[nodiscard]] SecretString encrypt_at_time(std::string_view plaintext,
                                             std::uint64_t timestamp) const;
  /// Deterministic, for the spec vectors only.
  [[nodiscard]] SecretString encrypt_from_parts(std::string_view plaintext, std::uint64_t timestamp,
                                                const std::array<std::uint8_t, 16>& iv) const;
  /// No TTL: no clock, no timestamp check.
  [[nodiscard]] DecryptResult decrypt(std::string_view token) const;
  /// TTL and 60 s future skew checked against `now` before the HMAC, as the spec orders.
  [[nodiscard]] DecryptResult decrypt_at_time(std::string_view token, std::int64_t ttl_seconds,
                                              std::uint64_t now) const;
  /// HMAC only; nullopt when the token does not parse or the HMAC fails.
  [[nodiscard]] std::optional<std::uint64_t> extract_timestamp(std::string_view token) const;
  [[nodiscard]] const Key& key() const noexcept;

 private:
  friend class KeyRing;  // shares the parsed token and the HMAC state, no re-parse per key
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Which configured key made a token. key_index: 0 = active, i + 1 = rolling[i],
/// -1 = none (see reason).
/// canonical false: the text is a spelling only Python's lenient decoder reads
/// (whitespace, '+', '/', junk after the padding, ...); pyca 48, and so the platform,
/// reads it all the same, so the key that verifies it is still needed.
struct Classification {
  Reason reason = Reason::ok;
  int key_index = -1;
  std::uint64_t timestamp = 0;
  bool canonical = true;
  // classify_deep only: the plaintext is itself a Fernet token (is_token_text).
  bool double_encrypted = false;
  // Characters of the token's canonical text (what a rotation of it writes); 0 when the
  // text did not parse.
  std::size_t canonical_length = 0;
};

struct Rotation {
  Reason reason = Reason::ok;
  int key_index = -1;
  std::uint64_t timestamp = 0;
  bool canonical = true;
  // The new token, canonical: set when a rolling key made the input, and when the active
  // key made a non-canonical spelling (then the same bytes, spelled canonically).
  SecretString token;
};

/// The active key plus ordered rolling keys, as MultiFernet([active, *rolling]).
/// Thread-safe: immutable; share one across all workers. Each thread tries the key that
/// last matched first (migrations are runs of one key); the answer is still the ordered
/// one, as no two keys may share a signing key. Throws CryptoError only when OpenSSL fails.
class KeyRing {
 public:
  /// Throws KeyError when a rolling key equals the active key or another rolling key.
  KeyRing(Key active, std::vector<Key> rolling);
  KeyRing(KeyRing&&) noexcept;
  KeyRing& operator=(KeyRing&&) noexcept;
  ~KeyRing();

  // Every method reads token text as pyca 48 does (Python's lenient base64, see
  // `canonical`), and also takes canonical text without its padding.

  /// By HMAC alone: no AES.
  [[nodiscard]] Classification classify(std::string_view token) const;
  /// classify, and whether the plaintext is itself a token: one AES block per verified
  /// token (the first, where a token's "gAAAAA" would be), the whole plaintext only when
  /// that block starts like one. The plaintext never leaves.
  [[nodiscard]] Classification classify_deep(std::string_view token) const;
  /// Under a rolling key: decrypt and re-encrypt under the active key with a fresh IV and
  /// the original timestamp. Under the active key: key_index 0 and, for canonical text,
  /// no new token (no AES); a non-canonical spelling gets its canonical one.
  [[nodiscard]] Rotation rotate(std::string_view token) const;
  /// MultiFernet.rotate: re-encrypts even tokens already under the active key.
  [[nodiscard]] Rotation rotate_always(std::string_view token) const;
  /// Decrypt under the active key alone (verify).
  [[nodiscard]] DecryptResult decrypt_active(std::string_view token) const;
  /// Decrypt under key_index (0 active, i + 1 rolling[i]); reason unknown_key if it fails.
  [[nodiscard]] DecryptResult decrypt_with(std::string_view token, int key_index) const;
  [[nodiscard]] SecretString encrypt(std::string_view plaintext) const;

  [[nodiscard]] std::size_t rolling_count() const noexcept;
  /// Label for key_index: "active", "rolling_0", ...; "undecryptable" for -1.
  [[nodiscard]] static std::string key_label(int key_index);
  /// Fingerprint of key_index (0 active, i + 1 rolling[i]).
  [[nodiscard]] std::string fingerprint(int key_index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keymig::crypto
