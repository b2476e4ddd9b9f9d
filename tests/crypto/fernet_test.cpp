#include "keymig/crypto/fernet.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <ctime>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "crypto_test_support.hpp"

using namespace keymig::crypto;
using namespace keymig::crypto::test;

namespace {

std::array<std::uint8_t, 16> iv_of(const nlohmann::json& list) {
  std::array<std::uint8_t, 16> iv{};
  REQUIRE(list.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) iv[i] = list[i].get<std::uint8_t>();
  return iv;
}

const std::string kSpecKey = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

}  // namespace

TEST_CASE("the RFC 3339 test helper honours the UTC offset", "[crypto]") {
  // Independently: python3 datetime.fromisoformat(...).timestamp()
  CHECK(parse_rfc3339("1985-10-26T01:20:00-07:00") == 499162800u);
  CHECK(parse_rfc3339("1970-01-01T00:00:00+00:00") == 0u);
  CHECK(parse_rfc3339("1970-01-01T01:00:00+01:00") == 0u);
}

TEST_CASE("every generate vector produces exactly the expected token", "[crypto][vectors]") {
  const auto vectors = load_vectors("generate.json");
  REQUIRE_FALSE(vectors.empty());
  for (const auto& v : vectors) {
    const Fernet fernet(Key::parse(v.at("secret").get<std::string>()));
    const auto token = fernet.encrypt_from_parts(v.at("src").get<std::string>(),
                                                 parse_rfc3339(v.at("now")), iv_of(v.at("iv")));
    CHECK(std::string(token.view()) == v.at("token").get<std::string>());
  }
}

TEST_CASE("every verify vector decrypts at its time with its TTL and without a TTL",
          "[crypto][vectors]") {
  const auto vectors = load_vectors("verify.json");
  REQUIRE_FALSE(vectors.empty());
  for (const auto& v : vectors) {
    const Fernet fernet(Key::parse(v.at("secret").get<std::string>()));
    const std::string token = v.at("token");
    const auto at_time = fernet.decrypt_at_time(token, v.at("ttl_sec"), parse_rfc3339(v.at("now")));
    REQUIRE(at_time.ok());
    CHECK(at_time.plaintext.view() == v.at("src").get<std::string>());
    const auto no_ttl = fernet.decrypt(token);
    REQUIRE(no_ttl.ok());
    CHECK(no_ttl.plaintext.view() == v.at("src").get<std::string>());
    CHECK(no_ttl.timestamp == at_time.timestamp);
  }
}

TEST_CASE("every invalid vector is rejected, each with its own reason", "[crypto][vectors]") {
  const std::map<std::string, Reason> expected{
      {"incorrect mac", Reason::unknown_key},
      {"too short", Reason::too_short},
      {"invalid base64", Reason::not_base64},
      // 72 bytes: a 15-byte ciphertext, shorter than the smallest token.
      {"payload size not multiple of block size", Reason::too_short},
      {"payload padding error", Reason::bad_padding},
      {"far-future TS (unacceptable clock skew)", Reason::from_future},
      {"expired TTL", Reason::expired},
      {"incorrect IV (causes padding error)", Reason::bad_padding},
  };
  const auto vectors = load_vectors("invalid.json");
  REQUIRE(vectors.size() == expected.size());
  for (const auto& v : vectors) {
    const std::string desc = v.at("desc");
    INFO(desc);
    const Fernet fernet(Key::parse(v.at("secret").get<std::string>()));
    const auto result = fernet.decrypt_at_time(v.at("token").get<std::string>(), v.at("ttl_sec"),
                                               parse_rfc3339(v.at("now")));
    CHECK_FALSE(result.ok());
    CHECK(result.plaintext.empty());
    REQUIRE(expected.count(desc) == 1);
    CHECK(reason_name(result.reason) == std::string(reason_name(expected.at(desc))));
  }
}

TEST_CASE("structurally wrong tokens get their pre-key reasons", "[crypto]") {
  const Fernet fernet(Key::generate());
  SECTION("the single byte 0x81 is a wrong version") {
    CHECK(fernet.decrypt(b64url({0x81})).reason == Reason::bad_version);
  }
  SECTION("0x80 and three bytes is too short for a timestamp") {
    CHECK(fernet.decrypt(b64url({0x80, 1, 2, 3})).reason == Reason::too_short);
  }
  SECTION("nonsensetoken is not base64, since 13 characters cannot be") {
    CHECK(fernet.decrypt("nonsensetoken").reason == Reason::not_base64);
  }
  SECTION("a NUL byte is too short, since Python's decoder skips it and gets nothing") {
    CHECK(fernet.decrypt(std::string(1, '\0')).reason == Reason::too_short);
  }
  SECTION("the empty token is too short") {
    CHECK(fernet.decrypt("").reason == Reason::too_short);
  }
  SECTION("sixteen zero bytes are a wrong version") {
    CHECK(fernet.decrypt(b64url(std::vector<std::uint8_t>(16, 0))).reason == Reason::bad_version);
  }
}

TEST_CASE("round trips keep every plaintext and have the reference token length", "[crypto]") {
  const Fernet fernet(Key::generate());
  for (const std::string& plaintext :
       {std::string(), std::string("Abc!"), std::string("\x00\xff\x00\x80", 4)}) {
    const auto token = fernet.encrypt(plaintext);
    const auto result = fernet.decrypt(token.view());
    REQUIRE(result.ok());
    CHECK(result.plaintext.view() == plaintext);
  }
  for (std::size_t len = 0; len <= 200; ++len) {
    const std::string plaintext(len, static_cast<char>('a' + len % 26));
    const auto token = fernet.encrypt_at_time(plaintext, 1234567890);
    const std::size_t raw = 57 + 16 * (len / 16 + 1);
    CHECK(token.size() == 4 * ((raw + 2) / 3));
    const auto result = fernet.decrypt(token.view());
    REQUIRE(result.ok());
    CHECK(result.plaintext.view() == plaintext);
    CHECK(result.timestamp == 1234567890u);
  }
}

TEST_CASE("encrypt uses the current time and a fresh IV each time", "[crypto]") {
  const Fernet fernet(Key::generate());
  const auto before = static_cast<std::uint64_t>(std::time(nullptr));
  std::set<std::string> ivs;
  for (int i = 0; i < 1000; ++i) {
    const auto token = fernet.encrypt("same plaintext");
    const auto bytes = b64url_decode(std::string(token.view()));
    ivs.insert(std::string(bytes.begin() + 9, bytes.begin() + 25));
    const auto ts = unverified_timestamp(token.view());
    REQUIRE(ts.has_value());
    CHECK(*ts >= before);
    CHECK(*ts <= static_cast<std::uint64_t>(std::time(nullptr)));
  }
  CHECK(ivs.size() == 1000);
}

TEST_CASE("the TTL and the 60 s future skew are checked at their edges", "[crypto][ttl]") {
  const Fernet fernet(Key::generate());
  const auto token = fernet.encrypt_at_time("x", 1000);
  SECTION("age equal to the TTL is valid, one second more is expired") {
    CHECK(fernet.decrypt_at_time(token.view(), 60, 1060).ok());
    CHECK(fernet.decrypt_at_time(token.view(), 60, 1061).reason == Reason::expired);
  }
  SECTION("60 s in the future is valid, 61 s is from the future") {
    CHECK(fernet.decrypt_at_time(token.view(), 60, 940).ok());
    CHECK(fernet.decrypt_at_time(token.view(), 60, 939).reason == Reason::from_future);
  }
  SECTION("a TTL of 0 accepts only while now is not past the timestamp") {
    CHECK(fernet.decrypt_at_time(token.view(), 0, 1000).ok());
    CHECK(fernet.decrypt_at_time(token.view(), 0, 1001).reason == Reason::expired);
  }
  SECTION("a negative TTL rejects a token of now") {
    CHECK(fernet.decrypt_at_time(token.view(), -1, 1000).reason == Reason::expired);
  }
  SECTION("the times are checked before the HMAC, as the spec orders") {
    const Fernet other(Key::generate());
    CHECK(other.decrypt_at_time(token.view(), 60, 5000).reason == Reason::expired);
    CHECK(other.decrypt_at_time(token.view(), 60, 1000).reason == Reason::unknown_key);
  }
  SECTION("no TTL means no time check at all") {
    CHECK(fernet.decrypt(token.view()).ok());
  }
}

TEST_CASE("the largest timestamp round-trips and compares without overflow", "[crypto][ttl]") {
  const Fernet fernet(Key::generate());
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  const auto token = fernet.encrypt_at_time("x", kMax);
  CHECK(fernet.extract_timestamp(token.view()) == kMax);
  CHECK(fernet.decrypt(token.view()).timestamp == kMax);
  CHECK(fernet.decrypt_at_time(token.view(), 60, kMax).ok());
  CHECK(fernet.decrypt_at_time(token.view(), std::numeric_limits<std::int64_t>::max(), kMax).ok());
  CHECK(fernet.decrypt_at_time(token.view(), 60, 0).reason == Reason::from_future);
  CHECK(fernet.decrypt_at_time(token.view(), 60, kMax - 60).ok());
  CHECK(fernet.decrypt_at_time(token.view(), 60, kMax - 61).reason == Reason::from_future);
  const auto old = fernet.encrypt_at_time("x", 0);
  constexpr std::int64_t kMaxTtl = std::numeric_limits<std::int64_t>::max();
  CHECK(fernet.decrypt_at_time(old.view(), kMaxTtl, static_cast<std::uint64_t>(kMaxTtl)).ok());
  CHECK(
      fernet.decrypt_at_time(old.view(), kMaxTtl, static_cast<std::uint64_t>(kMaxTtl) + 1).reason ==
      Reason::expired);
  CHECK(fernet.decrypt_at_time(old.view(), 60, kMax).reason == Reason::expired);
}

TEST_CASE("correctly signed malformed tokens are rejected without a crash", "[crypto]") {
  const Key key = Key::generate();
  const Fernet fernet(copy_of(key));
  // Sizes are of the whole decoded token, tag included: 41, 49 and 57 bytes, then a
  // 15-byte ciphertext (72 bytes) and a 17-byte one (74 bytes).
  for (const std::size_t total : {41u, 49u, 57u, 72u}) {
    INFO(total);
    const auto token = signed_token(key, body_with(77, total - 32 - 9));
    CHECK(fernet.decrypt(token).reason == Reason::too_short);
    CHECK(fernet.decrypt_at_time(token, 60, 77).reason == Reason::too_short);
  }
  const auto ragged = signed_token(key, body_with(77, 16 + 17));
  CHECK(fernet.decrypt(ragged).reason == Reason::bad_length);
  SECTION("extract_timestamp, like the reference, returns a signed short token's time") {
    CHECK(fernet.extract_timestamp(signed_token(key, body_with(77, 0))) == 77u);
    CHECK_FALSE(fernet.extract_timestamp(b64url(body_with(77, 20))).has_value());
  }
  SECTION("a signed token with bad padding is bad_padding") {
    // Plaintext blocks ending in 0x00: no valid PKCS7 padding ends in zero.
    auto body = body_with(77, 16, 0x11);
    const auto ct =
        cbc_encrypt(key, std::vector<std::uint8_t>(16, 0x11), std::vector<std::uint8_t>(32, 0x00));
    body.insert(body.end(), ct.begin(), ct.end());
    const auto bad = signed_token(key, body);
    CHECK(fernet.decrypt(bad).reason == Reason::bad_padding);
  }
}

TEST_CASE("extract_timestamp verifies the HMAC and nothing else", "[crypto]") {
  const Fernet fernet(Key::generate());
  const auto token = fernet.encrypt_at_time("x", 1526138327);
  CHECK(fernet.extract_timestamp(token.view()) == 1526138327u);
  CHECK_FALSE(fernet.extract_timestamp("nonsensetoken").has_value());
  CHECK_FALSE(fernet.extract_timestamp("").has_value());
  CHECK_FALSE(Fernet(Key::generate()).extract_timestamp(token.view()).has_value());
  CHECK(unverified_timestamp(token.view()) == 1526138327u);
  CHECK_FALSE(unverified_timestamp("abc").has_value());
}

TEST_CASE("keys parse from canonical base64url, with or without padding", "[crypto][key]") {
  const Key key = Key::parse(kSpecKey);
  CHECK(std::string(key.encode().view()) == kSpecKey);
  CHECK(Key::parse(kSpecKey.substr(0, 43)).same_as(key));
  SECTION("the halves are signing first, encryption second") {
    const auto raw = b64url_decode(kSpecKey);
    CHECK(std::equal(raw.begin(), raw.begin() + 16, key.signing_key()));
    CHECK(std::equal(raw.begin() + 16, raw.end(), key.encryption_key()));
  }
}

TEST_CASE("bad keys are usage errors whose message never holds the key", "[crypto][key]") {
  std::string plus = kSpecKey;
  plus[plus.find('-')] = '+';
  std::string bits = kSpecKey;
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  bits[42] = alphabet[alphabet.find(bits[42]) | 1];  // sets one of the two unused bits
  const std::vector<std::string> bad{
      "AQID",  // base64 of 3 bytes
      "abc",
      "",
      kSpecKey + "=",
      " " + kSpecKey,
      kSpecKey.substr(0, 43) + "\n",
      plus,
      bits,
      std::string(32, 'k'),  // raw 32 bytes, not base64
      kSpecKey.substr(0, 42) + "==",
  };
  for (const auto& text : bad) {
    INFO("case " << &text - bad.data());
    try {
      (void)Key::parse(text);
      FAIL("accepted a bad key");
    } catch (const KeyError& error) {
      const std::string message = error.what();
      CHECK(message.find("32 url-safe base64-encoded bytes") != std::string::npos);
      if (text.size() >= 8) CHECK(message.find(text.substr(0, 8)) == std::string::npos);
      CHECK(message.find(kSpecKey.substr(0, 8)) == std::string::npos);
    }
  }
  // A KeyError is what the operator got wrong: exit 2.
  CHECK_THROWS_AS(Key::parse("abc"), keymig::UsageError);
}

TEST_CASE("fingerprints are stable, distinct and one-way", "[crypto][key]") {
  // python3: hashlib.sha256(b"keymig-key-fingerprint-v1" + key_bytes).hexdigest()[:12]
  CHECK(Key::parse(kSpecKey).fingerprint() == "8f54380b3e47");
  CHECK(Key::parse(kSpecKey).fingerprint() == Key::parse(kSpecKey.substr(0, 43)).fingerprint());
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const auto fp = Key::generate().fingerprint();
    CHECK(fp.size() == 12);
    CHECK(fp.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(fp);
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("generated keys are distinct and round-trip through their text", "[crypto][key]") {
  const Key a = Key::generate();
  const Key b = Key::generate();
  CHECK_FALSE(a.same_as(b));
  const auto text = a.encode();
  CHECK(text.size() == 44);
  CHECK(text.view().back() == '=');
  CHECK(Key::parse(text.view()).same_as(a));
}

TEST_CASE("a token under another key is unknown_key", "[crypto]") {
  const Fernet mine(Key::generate());
  const Fernet theirs(Key::generate());
  const auto token = theirs.encrypt("secret");
  const auto result = mine.decrypt(token.view());
  CHECK(result.reason == Reason::unknown_key);
  CHECK(result.plaintext.empty());
}
