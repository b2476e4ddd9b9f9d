#include "crypto_floor.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <string>

#include "keymig/bench/crypto_bench.hpp"

namespace keymig::bench::detail {

namespace {

[[noreturn]] void fail(const char* what) {
  throw CryptoBenchError(std::string("floor: OpenSSL failure in ") + what);
}

}  // namespace

std::vector<std::uint8_t> decode_token(std::string_view token) {
  std::string text(token);
  for (char& c : text) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (text.size() % 4 != 0) text.push_back('=');
  std::vector<std::uint8_t> out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) throw CryptoBenchError("floor: an input token is not base64");
  std::size_t len = static_cast<std::size_t>(n);
  if (text.size() >= 1 && text[text.size() - 1] == '=') --len;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

CryptoFloor::CryptoFloor(const std::uint8_t* from_signing, const std::uint8_t* from_encryption,
                         const std::uint8_t* to_signing, const std::uint8_t* to_encryption)
    : sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)),
      aes_(EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr)),
      scratch_(EVP_MD_CTX_new()),
      encrypt_(EVP_CIPHER_CTX_new()),
      decrypt_(EVP_CIPHER_CTX_new()) {
  if (!sha256_ || !aes_ || !scratch_ || !encrypt_ || !decrypt_) fail("setup");
  if (EVP_CipherInit_ex2(encrypt_.get(), aes_.get(), nullptr, nullptr, 1, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(encrypt_.get(), 0) != 1 ||
      EVP_CipherInit_ex2(decrypt_.get(), aes_.get(), nullptr, nullptr, 0, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(decrypt_.get(), 0) != 1)
    fail("cipher setup");
  from_mac_ = make_hmac(from_signing);
  to_mac_ = make_hmac(to_signing);
  std::memcpy(from_enc_.data(), from_encryption, 16);
  std::memcpy(to_enc_.data(), to_encryption, 16);
}

CryptoFloor::~CryptoFloor() {
  OPENSSL_cleanse(from_enc_.data(), from_enc_.size());
  OPENSSL_cleanse(to_enc_.data(), to_enc_.size());
  OPENSSL_cleanse(random_.data(), random_.size());
  if (!plain_.empty()) OPENSSL_cleanse(plain_.data(), plain_.size());
}

CryptoFloor::Hmac CryptoFloor::make_hmac(const std::uint8_t* key) {
  Hmac h{std::unique_ptr<EVP_MD_CTX, MdCtxFree>(EVP_MD_CTX_new()),
         std::unique_ptr<EVP_MD_CTX, MdCtxFree>(EVP_MD_CTX_new())};
  std::array<std::uint8_t, 64> ipad{};
  std::array<std::uint8_t, 64> opad{};
  for (std::size_t i = 0; i < 64; ++i) {
    const std::uint8_t k = i < 16 ? key[i] : 0;
    ipad[i] = k ^ 0x36;
    opad[i] = k ^ 0x5c;
  }
  const bool ok = h.inner && h.outer &&
                  EVP_DigestInit_ex2(h.inner.get(), sha256_.get(), nullptr) == 1 &&
                  EVP_DigestUpdate(h.inner.get(), ipad.data(), 64) == 1 &&
                  EVP_DigestInit_ex2(h.outer.get(), sha256_.get(), nullptr) == 1 &&
                  EVP_DigestUpdate(h.outer.get(), opad.data(), 64) == 1;
  OPENSSL_cleanse(ipad.data(), ipad.size());
  OPENSSL_cleanse(opad.data(), opad.size());
  if (!ok) fail("HMAC setup");
  return h;
}

void CryptoFloor::mac(const Hmac& key, const std::uint8_t* data, std::size_t len,
                      std::uint8_t* out) {
  std::uint8_t inner[32];
  unsigned int n = 0;
  EVP_MD_CTX* md = scratch_.get();
  if (EVP_MD_CTX_copy_ex(md, key.inner.get()) != 1 || EVP_DigestUpdate(md, data, len) != 1 ||
      EVP_DigestFinal_ex(md, inner, &n) != 1 || EVP_MD_CTX_copy_ex(md, key.outer.get()) != 1 ||
      EVP_DigestUpdate(md, inner, sizeof inner) != 1 || EVP_DigestFinal_ex(md, out, &n) != 1)
    fail("HMAC");
}

bool CryptoFloor::run(const std::vector<std::uint8_t>& token) {
  // Layout: version(1) timestamp(8) IV(16) ciphertext(n) tag(32).
  const std::size_t body = token.size() - 32;
  const std::size_t ct_len = body - 25;
  if (plain_.size() < ct_len) plain_.resize(ct_len);
  if (out_.size() < token.size()) out_.resize(token.size());

  std::uint8_t tag[32];
  mac(from_mac_, token.data(), body, tag);
  const bool verified = CRYPTO_memcmp(tag, token.data() + body, 32) == 0;

  int n = 0;
  if (EVP_CipherInit_ex2(decrypt_.get(), nullptr, from_enc_.data(), token.data() + 9, -1,
                         nullptr) != 1 ||
      EVP_CipherUpdate(decrypt_.get(), plain_.data(), &n, token.data() + 25,
                       static_cast<int>(ct_len)) != 1)
    fail("AES decrypt");

  if (random_used_ + 16 > random_.size()) {
    if (RAND_bytes(random_.data(), static_cast<int>(random_.size())) != 1) fail("RAND_bytes");
    random_used_ = 0;
  }
  std::uint8_t* out = out_.data();
  std::memcpy(out, token.data(), 9);
  std::memcpy(out + 9, random_.data() + random_used_, 16);
  OPENSSL_cleanse(random_.data() + random_used_, 16);
  random_used_ += 16;

  if (EVP_CipherInit_ex2(encrypt_.get(), nullptr, to_enc_.data(), out + 9, -1, nullptr) != 1 ||
      EVP_CipherUpdate(encrypt_.get(), out + 25, &n, plain_.data(), static_cast<int>(ct_len)) != 1)
    fail("AES encrypt");
  mac(to_mac_, out, body, out + body);
  return verified;
}

}  // namespace keymig::bench::detail
