#pragma once

// Private to crypto/: every OpenSSL handle type, its owner, the algorithms fetched once,
// and the per-thread contexts. Nothing here is part of the public surface.

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace keymig::crypto::detail {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const noexcept { EVP_CIPHER_CTX_free(p); }
};
struct MdDeleter {
  void operator()(EVP_MD* p) const noexcept { EVP_MD_free(p); }
};
struct CipherDeleter {
  void operator()(EVP_CIPHER* p) const noexcept { EVP_CIPHER_free(p); }
};

using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;
using MdPtr = std::unique_ptr<EVP_MD, MdDeleter>;
using CipherPtr = std::unique_ptr<EVP_CIPHER, CipherDeleter>;

/// Throws CryptoError naming `what` and OpenSSL's reason (never data). Clears the queue.
[[noreturn]] void throw_openssl(const char* what);

[[nodiscard]] MdCtxPtr make_md_ctx();
[[nodiscard]] CipherCtxPtr make_cipher_ctx();

/// Fetched once per process: an implicit fetch per call costs a provider lookup.
[[nodiscard]] const EVP_MD* sha256();
[[nodiscard]] const EVP_CIPHER* aes_128_cbc();

/// Per-thread contexts: a libcrypto context must not be used by two threads at once,
/// and creating one per call is an allocation plus a provider lookup.
struct ThreadContexts {
  ThreadContexts();
  MdCtxPtr md;
  CipherCtxPtr encrypt;  // AES-128-CBC, padding off (we pad and check PKCS7 ourselves)
  CipherCtxPtr decrypt;
};
[[nodiscard]] ThreadContexts& thread_contexts();
/// See keymig::crypto::forget_key_schedules.
void forget_key_schedules() noexcept;

/// HMAC-SHA256 with the key's ipad/opad blocks absorbed once: a MAC then costs two
/// context copies instead of two extra compressions. Immutable after construction and
/// safe to share (copies only read it). The key-derived states are cleansed by OpenSSL
/// when freed.
class HmacKey {
 public:
  explicit HmacKey(const std::uint8_t* key, std::size_t key_len);
  HmacKey(const HmacKey&) = delete;
  HmacKey& operator=(const HmacKey&) = delete;

  void compute(const std::uint8_t* data, std::size_t len, std::uint8_t out[32]) const;
  /// Constant-time comparison of the 32-byte tag.
  [[nodiscard]] bool verify(const std::uint8_t* data, std::size_t len,
                            const std::uint8_t* tag) const;

 private:
  MdCtxPtr inner_;
  MdCtxPtr outer_;
};

/// AES-128-CBC over whole blocks with the calling thread's context. `len` % 16 == 0.
void aes_cbc_encrypt(const std::uint8_t* key, const std::uint8_t* iv, const std::uint8_t* in,
                     std::size_t len, std::uint8_t* out);
void aes_cbc_decrypt(const std::uint8_t* key, const std::uint8_t* iv, const std::uint8_t* in,
                     std::size_t len, std::uint8_t* out);

/// 16 CSPRNG bytes from a per-thread block of RAND_bytes output; consumed bytes are
/// wiped, and a forked child never reuses its parent's block.
void random_iv(std::uint8_t out[16]);
/// `len` bytes straight from the OS CSPRNG (getrandom), for keys.
void os_random(std::uint8_t* out, std::size_t len);

}  // namespace keymig::crypto::detail
