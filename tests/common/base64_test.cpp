#include "keymig/base64.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

using namespace keymig;

TEST_CASE("only canonical padded base64url decodes canonically", "[common][base64]") {
  auto decode = [](std::string_view text) -> std::optional<std::string> {
    std::string out(text.size() / 4 * 3, '\0');
    std::size_t len = 0;
    if (!decode_canonical_base64url(text, reinterpret_cast<std::uint8_t*>(out.data()), len))
      return std::nullopt;
    out.resize(len);
    return out;
  };
  CHECK(decode("") == std::string());
  CHECK(decode("gA==") == std::string("\x80"));
  CHECK(decode("gAA=") == std::string("\x80\x00", 2));
  CHECK(decode("-_-_") == std::string("\xfb\xff\xbf"));
  CHECK_FALSE(decode("gA"));        // unpadded
  CHECK_FALSE(decode("gB=="));      // unused bits set: "gA==" is the spelling of 0x80
  CHECK_FALSE(decode("+/+/"));      // the standard alphabet
  CHECK_FALSE(decode("gA= "));      // whitespace
  CHECK_FALSE(decode("g==="));      // too much padding
  CHECK_FALSE(decode("gA==gA=="));  // padding inside
}

TEST_CASE("the encoder spells bytes in canonical padded base64url", "[common][base64]") {
  CHECK(encode_base64url(std::string_view()) == "");
  CHECK(encode_base64url(std::string_view("\x80", 1)) == "gA==");
  CHECK(encode_base64url(std::string_view("\x80\x00", 2)) == "gAA=");
  CHECK(encode_base64url(std::string_view("\xfb\xff\xbf", 3)) == "-_-_");
  for (std::size_t n = 0; n < 70; ++n) {
    std::string bytes;
    for (std::size_t i = 0; i < n; ++i) bytes.push_back(static_cast<char>(i * 37 + 11));
    const std::string text = encode_base64url(bytes);
    CHECK(text.size() == encoded_length(n));
    std::string back(decoded_capacity(text.size()), '\0');
    std::size_t len = 0;
    REQUIRE(decode_canonical_base64url(text, reinterpret_cast<std::uint8_t*>(back.data()), len));
    back.resize(len);
    CHECK(back == bytes);
  }
}
