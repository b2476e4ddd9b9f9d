// The token text decoder (crypto/src/codec.cpp), seen through Fernet: canonical text is
// ok, what only Python's lenient decoder reads is non_canonical, the rest not_base64.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"

using namespace keymig::crypto;

TEST_CASE("non-canonical spellings of a valid token get their own reason", "[crypto][base64]") {
  const Fernet fernet(Key::generate());
  // 16 bytes of plaintext: 89 raw bytes, one '=' of padding and two unused bits.
  std::string token;
  while (token.find('-') == std::string::npos)
    token = std::string(fernet.encrypt("0123456789abcdef").view());
  REQUIRE(token.size() == 120);
  REQUIRE(token.back() == '=');
  REQUIRE(fernet.decrypt(token).ok());

  SECTION("without its padding it is accepted") {
    CHECK(fernet.decrypt(token.substr(0, token.size() - 1)).ok());
  }
  SECTION("whitespace, '+', '/', junk, extra '=' and unused bits are non-canonical") {
    std::vector<std::string> variants;
    variants.push_back(token + "\n");
    variants.push_back(" " + token);
    variants.push_back(token.substr(0, 40) + "\r\n" + token.substr(40));
    variants.push_back(token + "=");
    variants.push_back(token + "AAAA");
    variants.push_back(token.substr(0, 40) + "%" + token.substr(40));
    std::string plus = token;
    plus[plus.find('-')] = '+';
    variants.push_back(plus);
    std::string bits = token;
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const auto last = alphabet.find(bits[bits.size() - 2]);
    bits[bits.size() - 2] = alphabet[last | 1];  // sets an unused low bit
    variants.push_back(bits);
    const Fernet stranger(Key::generate());
    for (const auto& variant : variants) {
      INFO(variant);
      const auto result = fernet.decrypt(variant);
      CHECK(result.reason == Reason::non_canonical);
      CHECK(result.plaintext.empty());
      CHECK_FALSE(fernet.extract_timestamp(variant).has_value());
      // Under a key that did not make it, odd spelling is not the interesting fact.
      CHECK(stranger.decrypt(variant).reason == Reason::unknown_key);
    }
  }
  SECTION("'/' for '_' is non-canonical too") {
    std::string slash;
    while (slash.find('_') == std::string::npos)
      slash = std::string(fernet.encrypt("0123456789abcdef").view());
    slash[slash.find('_')] = '/';
    CHECK(fernet.decrypt(slash).reason == Reason::non_canonical);
  }
  SECTION("what Python cannot decode is not base64") {
    CHECK(fernet.decrypt(token + "\xc3\xa9").reason == Reason::not_base64);  // non-ASCII
    CHECK(fernet.decrypt(token.substr(0, 117)).reason == Reason::not_base64);
    CHECK(fernet.decrypt(token.substr(0, 119) + "\n").reason == Reason::not_base64);
  }
}
