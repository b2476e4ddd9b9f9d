#include "keymig/crypto/floor.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"

using namespace keymig::crypto;

TEST_CASE("token_bytes decodes canonical tokens and refuses any other text", "[crypto][floor]") {
  const Fernet fernet(Key::generate());
  const std::string token(fernet.encrypt("0123456789").view());
  const std::vector<std::uint8_t> bytes = token_bytes(token);
  // version, timestamp, IV, one block, tag
  CHECK(bytes.size() == 1 + 8 + 16 + 16 + 32);
  CHECK(bytes.front() == 0x80);
  CHECK_THROWS_AS(token_bytes("this is not a token!"), CryptoError);
  CHECK_THROWS_AS(token_bytes(token + "\n"), CryptoError);  // only Python's decoder reads it
}

TEST_CASE("the rotation floor verifies tokens under its from-key only", "[crypto][floor]") {
  const Key from = Key::generate();
  const Key to = Key::generate();
  const Fernet under_from(Key::parse(from.encode().view()));
  RotationFloor floor(from, to);

  SECTION("a token under the from-key verifies, run after run") {
    // More runs than one 4 KiB random block has IVs for, with two sizes of token.
    const auto short_token = token_bytes(under_from.encrypt("JBSWY3DPEHPK3PXP").view());
    const auto long_token = token_bytes(under_from.encrypt(std::string(100, 'A')).view());
    for (int i = 0; i < 600; ++i) REQUIRE(floor.run(i % 2 == 0 ? short_token : long_token));
  }
  SECTION("a token under another key does not") {
    const Fernet stranger(Key::generate());
    CHECK_FALSE(floor.run(token_bytes(stranger.encrypt("JBSWY3DPEHPK3PXP").view())));
    const Fernet under_to(Key::parse(to.encode().view()));
    CHECK_FALSE(floor.run(token_bytes(under_to.encrypt("JBSWY3DPEHPK3PXP").view())));
  }
  SECTION("bytes too short to be a token are an error, not a figure") {
    CHECK_THROWS_AS(floor.run(std::vector<std::uint8_t>(72, 0x80)), CryptoError);
  }
}
