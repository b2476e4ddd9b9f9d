#include "openssl.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sys/random.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "keymig/crypto/fernet.hpp"

namespace keymig::crypto::detail {

void throw_openssl(const char* what) {
  std::string message = std::string("OpenSSL failure: ") + what;
  const unsigned long code = ERR_get_error();
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (reason != nullptr) message += std::string(" (") + reason + ")";
  }
  ERR_clear_error();
  throw CryptoError(message);
}

MdCtxPtr make_md_ctx() {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) throw_openssl("EVP_MD_CTX_new");
  return ctx;
}

CipherCtxPtr make_cipher_ctx() {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) throw_openssl("EVP_CIPHER_CTX_new");
  return ctx;
}

const EVP_MD* sha256() {
  static const MdPtr md = [] {
    MdPtr fetched(EVP_MD_fetch(nullptr, "SHA256", nullptr));
    if (!fetched) throw_openssl("EVP_MD_fetch(SHA256)");
    return fetched;
  }();
  return md.get();
}

const EVP_CIPHER* aes_128_cbc() {
  static const CipherPtr cipher = [] {
    CipherPtr fetched(EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr));
    if (!fetched) throw_openssl("EVP_CIPHER_fetch(AES-128-CBC)");
    return fetched;
  }();
  return cipher.get();
}

ThreadContexts::ThreadContexts()
    : md(make_md_ctx()), encrypt(make_cipher_ctx()), decrypt(make_cipher_ctx()) {
  // Bind the cipher once; later inits pass only key and IV, which keeps the provider
  // context instead of freeing and re-creating it.
  if (EVP_CipherInit_ex2(encrypt.get(), aes_128_cbc(), nullptr, nullptr, 1, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(encrypt.get(), 0) != 1)
    throw_openssl("AES encrypt context");
  if (EVP_CipherInit_ex2(decrypt.get(), aes_128_cbc(), nullptr, nullptr, 0, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(decrypt.get(), 0) != 1)
    throw_openssl("AES decrypt context");
}

namespace {
thread_local ThreadContexts* made_contexts = nullptr;  // set once the thread has its own
}  // namespace

ThreadContexts& thread_contexts() {
  thread_local ThreadContexts contexts;
  made_contexts = &contexts;
  return contexts;
}

void forget_key_schedules() noexcept {
  if (made_contexts == nullptr) return;
  static constexpr std::uint8_t kNoKey[16] = {};
  // Cannot fail once the cipher is bound (key expansion only); a failure would leave the
  // old schedule, which the context's free still cleanses.
  (void)EVP_CipherInit_ex2(made_contexts->encrypt.get(), nullptr, kNoKey, nullptr, -1, nullptr);
  (void)EVP_CipherInit_ex2(made_contexts->decrypt.get(), nullptr, kNoKey, nullptr, -1, nullptr);
}

HmacKey::HmacKey(const std::uint8_t* key, std::size_t key_len)
    : inner_(make_md_ctx()), outer_(make_md_ctx()) {
  // RFC 2104 with a key shorter than the block: zero-extend, XOR with 0x36 / 0x5c.
  if (key_len > 64) throw CryptoError("HMAC key longer than the SHA-256 block");
  std::array<std::uint8_t, 64> ipad{};
  std::array<std::uint8_t, 64> opad{};
  for (std::size_t i = 0; i < 64; ++i) {
    const std::uint8_t k = i < key_len ? key[i] : 0;
    ipad[i] = k ^ 0x36;
    opad[i] = k ^ 0x5c;
  }
  const bool ok = EVP_DigestInit_ex2(inner_.get(), sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(inner_.get(), ipad.data(), ipad.size()) == 1 &&
                  EVP_DigestInit_ex2(outer_.get(), sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(outer_.get(), opad.data(), opad.size()) == 1;
  OPENSSL_cleanse(ipad.data(), ipad.size());
  OPENSSL_cleanse(opad.data(), opad.size());
  if (!ok) throw_openssl("HMAC key schedule");
}

void HmacKey::compute(const std::uint8_t* data, std::size_t len, std::uint8_t out[32]) const {
  EVP_MD_CTX* md = thread_contexts().md.get();
  std::uint8_t inner_digest[32];
  unsigned int n = 0;
  if (EVP_MD_CTX_copy_ex(md, inner_.get()) != 1 || EVP_DigestUpdate(md, data, len) != 1 ||
      EVP_DigestFinal_ex(md, inner_digest, &n) != 1 || EVP_MD_CTX_copy_ex(md, outer_.get()) != 1 ||
      EVP_DigestUpdate(md, inner_digest, sizeof inner_digest) != 1 ||
      EVP_DigestFinal_ex(md, out, &n) != 1)
    throw_openssl("HMAC-SHA256");
}

bool HmacKey::verify(const std::uint8_t* data, std::size_t len, const std::uint8_t* tag) const {
  std::uint8_t expected[32];
  compute(data, len, expected);
  return CRYPTO_memcmp(expected, tag, sizeof expected) == 0;
}

namespace {

void aes_cbc(EVP_CIPHER_CTX* ctx, const std::uint8_t* key, const std::uint8_t* iv,
             const std::uint8_t* in, std::size_t len, std::uint8_t* out, const char* what) {
  int produced = 0;
  if (len % 16 != 0 || len > static_cast<std::size_t>(INT32_MAX))
    throw CryptoError(std::string("AES-CBC input is not whole blocks: ") + what);
  if (EVP_CipherInit_ex2(ctx, nullptr, key, iv, -1, nullptr) != 1 ||
      EVP_CipherUpdate(ctx, out, &produced, in, static_cast<int>(len)) != 1)
    throw_openssl(what);
  // With padding off every whole block comes out of the update; anything else means the
  // context is not in the state we set up, and the output must not be used.
  if (static_cast<std::size_t>(produced) != len) throw CryptoError(std::string(what) + " short");
}

}  // namespace

void aes_cbc_encrypt(const std::uint8_t* key, const std::uint8_t* iv, const std::uint8_t* in,
                     std::size_t len, std::uint8_t* out) {
  aes_cbc(thread_contexts().encrypt.get(), key, iv, in, len, out, "AES-128-CBC encrypt");
}

void aes_cbc_decrypt(const std::uint8_t* key, const std::uint8_t* iv, const std::uint8_t* in,
                     std::size_t len, std::uint8_t* out) {
  aes_cbc(thread_contexts().decrypt.get(), key, iv, in, len, out, "AES-128-CBC decrypt");
}

namespace {

// Bumped in every forked child, so that a thread's cached random block, copied into the
// child, is thrown away instead of handing out the parent's IVs a second time.
std::atomic<std::uint64_t> fork_generation{0};

void on_fork_child() {
  fork_generation.fetch_add(1, std::memory_order_relaxed);
}

struct RandomBlock {
  static constexpr std::size_t kSize = 4096;
  std::array<std::uint8_t, kSize> bytes{};
  std::size_t used = kSize;
  std::uint64_t generation = 0;
  ~RandomBlock() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

}  // namespace

void random_iv(std::uint8_t out[16]) {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, on_fork_child);
    return true;
  }();
  (void)registered;
  thread_local RandomBlock block;
  const std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (block.used + 16 > RandomBlock::kSize || block.generation != generation) {
    if (RAND_bytes(block.bytes.data(), static_cast<int>(block.bytes.size())) != 1)
      throw_openssl("RAND_bytes");
    block.used = 0;
    block.generation = generation;
  }
  std::memcpy(out, block.bytes.data() + block.used, 16);
  OPENSSL_cleanse(block.bytes.data() + block.used, 16);
  block.used += 16;
}

void os_random(std::uint8_t* out, std::size_t len) {
  std::size_t filled = 0;
  while (filled < len) {
    const ssize_t n = getrandom(out + filled, len - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw CryptoError(std::string("getrandom failed: ") + std::strerror(errno));
    }
    filled += static_cast<std::size_t>(n);
  }
}

}  // namespace keymig::crypto::detail
