#pragma once

// Shared by the crypto tests: vector files, RFC 3339 times, and hand-made tokens signed
// with a chosen key (to reach the checks after the HMAC).

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"

namespace keymig::crypto::test {

inline nlohmann::json load_vectors(const std::string& name) {
  const std::string path = std::string(KEYMIG_SOURCE_DIR) + "/tests/vectors/" + name;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

inline std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  // Howard Hinnant's algorithm: proleptic Gregorian calendar to days since 1970-01-01.
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

/// "1985-10-26T01:20:00-07:00" to Unix seconds, honouring the UTC offset.
inline std::uint64_t parse_rfc3339(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, oh = 0, om = 0;
  char sign = 0;
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d%c%d:%d", &y, &mo, &d, &h, &mi, &s, &sign, &oh,
                  &om) < 7)
    throw std::runtime_error("bad time " + text);
  std::int64_t t = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
                   h * 3600 + mi * 60 + s;
  const std::int64_t offset = oh * 3600 + om * 60;
  if (sign == '+') t -= offset;
  if (sign == '-') t += offset;
  return static_cast<std::uint64_t>(t);
}

inline std::string b64url(const std::vector<std::uint8_t>& bytes, bool padded = true) {
  std::string out(static_cast<std::size_t>(4 * ((bytes.size() + 2) / 3)), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  if (!padded)
    while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

inline std::vector<std::uint8_t> b64url_decode(std::string text) {
  for (char& c : text) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  std::vector<std::uint8_t> out(text.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) throw std::runtime_error("test helper: bad base64");
  std::size_t len = static_cast<std::size_t>(n);
  if (!text.empty() && text.back() == '=') --len;
  if (text.size() > 1 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

/// A token of arbitrary shape with a correct HMAC under `key`: body bytes, then the tag.
inline std::string signed_token(const Key& key, std::vector<std::uint8_t> body) {
  std::array<unsigned char, 32> tag{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.signing_key(), 16, body.data(), body.size(), tag.data(), &len);
  body.insert(body.end(), tag.begin(), tag.end());
  return b64url(body);
}

/// Version byte, big-endian timestamp, then `rest` (IV and ciphertext), unsigned.
inline std::vector<std::uint8_t> body_with(std::uint64_t timestamp, std::size_t rest_len,
                                           std::uint8_t fill = 0x41) {
  std::vector<std::uint8_t> body{0x80};
  for (int shift = 56; shift >= 0; shift -= 8)
    body.push_back(static_cast<std::uint8_t>(timestamp >> shift));
  body.insert(body.end(), rest_len, fill);
  return body;
}

/// AES-128-CBC without padding under the key's encryption half: whole blocks in, out.
inline std::vector<std::uint8_t> cbc_encrypt(const Key& key, const std::vector<std::uint8_t>& iv,
                                             const std::vector<std::uint8_t>& blocks) {
  std::vector<std::uint8_t> out(blocks.size() + 16);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int n = 0;
  EVP_EncryptInit_ex(ctx, EVP_aes_128_cbc(), nullptr, key.encryption_key(), iv.data());
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EVP_EncryptUpdate(ctx, out.data(), &n, blocks.data(), static_cast<int>(blocks.size()));
  EVP_CIPHER_CTX_free(ctx);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

inline std::vector<Key> keys_of(std::vector<std::string> texts) {
  std::vector<Key> keys;
  for (const auto& text : texts) keys.push_back(Key::parse(text));
  return keys;
}

inline std::vector<Key> generated(int n) {
  std::vector<Key> keys;
  for (int i = 0; i < n; ++i) keys.push_back(Key::generate());
  return keys;
}

/// A fresh copy of a key, for building several objects from one key.
inline Key copy_of(const Key& key) {
  return Key::parse(key.encode().view());
}

}  // namespace keymig::crypto::test
