#pragma once

// The primitive floor of a rotation, in direct OpenSSL calls: what any implementation has
// to spend per token, with contexts reused exactly as keymig's crypto module reuses them
// (precomputed HMAC ipad/opad states, a cipher context bound once and re-keyed per call,
// CSPRNG bytes drawn in 4 KiB blocks), so that rotate / floor measures only keymig's own
// overhead: base64, parsing, finding the key, allocation.

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace keymig::bench::detail {

struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const noexcept { EVP_CIPHER_CTX_free(p); }
};
struct MdFree {
  void operator()(EVP_MD* p) const noexcept { EVP_MD_free(p); }
};
struct CipherFree {
  void operator()(EVP_CIPHER* p) const noexcept { EVP_CIPHER_free(p); }
};

/// Decoded token bytes (outside any timed part).
[[nodiscard]] std::vector<std::uint8_t> decode_token(std::string_view token);

/// One thread's floor machinery. Not thread-safe; make one per thread.
class CryptoFloor {
 public:
  /// `from_*` is the key the input tokens are under, `to_*` the key they move to
  /// (16 bytes each).
  CryptoFloor(const std::uint8_t* from_signing, const std::uint8_t* from_encryption,
              const std::uint8_t* to_signing, const std::uint8_t* to_encryption);
  ~CryptoFloor();
  CryptoFloor(const CryptoFloor&) = delete;
  CryptoFloor& operator=(const CryptoFloor&) = delete;

  /// One rotation's primitives over `token` (whole raw token). False if its HMAC did not
  /// verify (the benchmark's inputs always verify: false means a broken floor).
  [[nodiscard]] bool run(const std::vector<std::uint8_t>& token);

 private:
  struct Hmac {
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> inner;
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> outer;
  };
  Hmac make_hmac(const std::uint8_t* key);
  void mac(const Hmac& key, const std::uint8_t* data, std::size_t len, std::uint8_t* out);

  std::unique_ptr<EVP_MD, MdFree> sha256_;
  std::unique_ptr<EVP_CIPHER, CipherFree> aes_;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> scratch_;
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> encrypt_;
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> decrypt_;
  Hmac from_mac_;
  Hmac to_mac_;
  std::array<std::uint8_t, 16> from_enc_{};
  std::array<std::uint8_t, 16> to_enc_{};
  std::array<std::uint8_t, 4096> random_{};
  std::size_t random_used_ = 4096;
  std::vector<std::uint8_t> plain_;
  std::vector<std::uint8_t> out_;
};

}  // namespace keymig::bench::detail
