#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "crypto_test_support.hpp"
#include "keymig/crypto/fernet.hpp"

using namespace keymig::crypto;
using namespace keymig::crypto::test;

namespace {

// An active key, two rolling keys and a stranger, with a Fernet for each so that tests
// can make tokens under any of them.
struct Ring {
  Ring() : keys(generated(4)) {
    for (const Key& key : keys) fernets.emplace_back(copy_of(key));
    std::vector<Key> rolling;
    rolling.push_back(copy_of(keys[1]));
    rolling.push_back(copy_of(keys[2]));
    ring = std::make_unique<KeyRing>(copy_of(keys[0]), std::move(rolling));
  }
  std::vector<Key> keys;        // [0] active, [1] rolling_0, [2] rolling_1, [3] unknown
  std::vector<Fernet> fernets;  // same order
  std::unique_ptr<KeyRing> ring;
};

std::string iv_of(std::string_view token) {
  const auto bytes = b64url_decode(std::string(token));
  return std::string(bytes.begin() + 9, bytes.begin() + 25);
}

}  // namespace

TEST_CASE("classify finds the key by HMAC alone, active first", "[crypto][keyring]") {
  Ring r;
  for (int i = 0; i < 4; ++i) {
    INFO("made under key " << i);
    const auto token = r.fernets[i].encrypt_at_time("totp", 1700000000 + i);
    const auto c = r.ring->classify(token.view());
    if (i < 3) {
      CHECK(c.reason == Reason::ok);
      CHECK(c.key_index == i);
    } else {
      CHECK(c.reason == Reason::unknown_key);
      CHECK(c.key_index == -1);
    }
    CHECK(c.timestamp == 1700000000u + i);
  }
  CHECK(r.ring->classify("nonsensetoken").reason == Reason::not_base64);
  CHECK(r.ring->rolling_count() == 2);
}

TEST_CASE("the thread's last match never changes the answer", "[crypto][keyring]") {
  Ring r;
  std::vector<std::pair<int, keymig::SecretString>> tokens;
  for (int round = 0; round < 50; ++round)
    for (int i : {1, 1, 0, 2, 3, 2, 0, 0, 1, 3}) tokens.emplace_back(i, r.fernets[i].encrypt("x"));
  for (const auto& [index, token] : tokens) {
    const auto c = r.ring->classify(token.view());
    CHECK(c.key_index == (index == 3 ? -1 : index));
  }
}

TEST_CASE("rotate moves rolling-key tokens to the active key and keeps the timestamp",
          "[crypto][keyring]") {
  Ring r;
  const std::uint64_t five_minutes_ago = static_cast<std::uint64_t>(std::time(nullptr)) - 300;
  for (int i : {1, 2}) {
    INFO("rolling key " << i - 1);
    const auto old_token = r.fernets[i].encrypt_at_time("JBSWY3DPEHPK3PXP", five_minutes_ago);
    const auto rotation = r.ring->rotate(old_token.view());
    REQUIRE(rotation.reason == Reason::ok);
    CHECK(rotation.key_index == i);
    CHECK(rotation.timestamp == five_minutes_ago);
    REQUIRE_FALSE(rotation.token.empty());
    CHECK(rotation.token.view() != old_token.view());
    const auto under_active = r.fernets[0].decrypt(rotation.token.view());
    REQUIRE(under_active.ok());
    CHECK(under_active.plaintext.view() == "JBSWY3DPEHPK3PXP");
    CHECK(under_active.timestamp == five_minutes_ago);
    CHECK(r.fernets[i].decrypt(rotation.token.view()).reason == Reason::unknown_key);
    CHECK(r.ring->classify(rotation.token.view()).key_index == 0);
  }
}

TEST_CASE("rotate leaves active-key tokens alone and refuses unknown ones", "[crypto][keyring]") {
  Ring r;
  const auto active = r.fernets[0].encrypt_at_time("x", 42);
  const auto kept = r.ring->rotate(active.view());
  CHECK(kept.reason == Reason::ok);
  CHECK(kept.key_index == 0);
  CHECK(kept.timestamp == 42u);
  CHECK(kept.token.empty());

  const auto stranger = r.fernets[3].encrypt("x");
  const auto refused = r.ring->rotate(stranger.view());
  CHECK(refused.reason == Reason::unknown_key);
  CHECK(refused.key_index == -1);
  CHECK(refused.token.empty());

  const auto garbage = r.ring->rotate("gAAAA");
  CHECK(garbage.reason != Reason::ok);
  CHECK(garbage.token.empty());
}

TEST_CASE("rotate_always re-encrypts even active-key tokens, as MultiFernet.rotate",
          "[crypto][keyring]") {
  Ring r;
  const auto active = r.fernets[0].encrypt_at_time("x", 42);
  const auto again = r.ring->rotate_always(active.view());
  REQUIRE(again.reason == Reason::ok);
  CHECK(again.key_index == 0);
  CHECK(again.token.view() != active.view());
  const auto decrypted = r.fernets[0].decrypt(again.token.view());
  REQUIRE(decrypted.ok());
  CHECK(decrypted.plaintext.view() == "x");
  CHECK(decrypted.timestamp == 42u);
  CHECK(r.ring->rotate_always(r.fernets[3].encrypt("x").view()).reason == Reason::unknown_key);
}

TEST_CASE("every rotation draws a fresh IV", "[crypto][keyring]") {
  Ring r;
  const auto token = r.fernets[1].encrypt("x");
  std::set<std::string> ivs{iv_of(token.view())};
  std::set<std::string> tokens;
  for (int i = 0; i < 500; ++i) {
    const auto rotation = r.ring->rotate(token.view());
    REQUIRE(rotation.reason == Reason::ok);
    ivs.insert(iv_of(rotation.token.view()));
    tokens.insert(std::string(rotation.token.view()));
  }
  CHECK(ivs.size() == 501);
  CHECK(tokens.size() == 500);
}

TEST_CASE("expired and far-future tokens rotate, since rotation takes no TTL",
          "[crypto][keyring]") {
  Ring r;
  for (const std::uint64_t ts : {std::uint64_t{1}, std::uint64_t{4000000000ull},
                                 std::numeric_limits<std::uint64_t>::max()}) {
    const auto rotation = r.ring->rotate(r.fernets[1].encrypt_at_time("x", ts).view());
    REQUIRE(rotation.reason == Reason::ok);
    CHECK(r.fernets[0].extract_timestamp(rotation.token.view()) == ts);
  }
}

TEST_CASE("a rolling-key token with bad padding is refused, not re-encrypted",
          "[crypto][keyring]") {
  Ring r;
  auto body = body_with(7, 16, 0x22);
  const auto ct = cbc_encrypt(r.keys[1], std::vector<std::uint8_t>(16, 0x22),
                              std::vector<std::uint8_t>(16, 0x00));
  body.insert(body.end(), ct.begin(), ct.end());
  const auto token = signed_token(r.keys[1], body);
  CHECK(r.ring->classify(token).key_index == 1);
  const auto rotation = r.ring->rotate(token);
  CHECK(rotation.reason == Reason::bad_padding);
  CHECK(rotation.token.empty());
  for (const std::size_t total : {41u, 49u, 57u, 72u}) {
    const auto short_token = signed_token(r.keys[1], body_with(7, total - 41));
    CHECK(r.ring->rotate(short_token).reason == Reason::too_short);
    CHECK(r.ring->classify(short_token).reason == Reason::too_short);
  }
}

TEST_CASE("a spelling pyca reads is classified and rotated by the key that made it",
          "[crypto][keyring]") {
  Ring r;
  const std::string token(r.fernets[1].encrypt_at_time("x", 1'600'000'000).view());
  std::string plus = token;
  for (char& c : plus) c = c == '-' ? '+' : c == '_' ? '/' : c;
  for (const std::string& variant : {token + "\n", " " + token, token + "=AAAA", plus}) {
    INFO(variant);
    const auto c = r.ring->classify(variant);
    CHECK(c.reason == Reason::ok);
    CHECK(c.key_index == 1);
    CHECK(c.canonical == (variant == token));
    const auto rotation = r.ring->rotate(variant);
    REQUIRE(rotation.reason == Reason::ok);
    CHECK(rotation.key_index == 1);
    const auto moved = r.fernets[0].decrypt(rotation.token.view());  // strict: canonical
    REQUIRE(moved.ok());
    CHECK(moved.plaintext.view() == "x");
    CHECK(moved.timestamp == 1'600'000'000);
    CHECK(r.ring->decrypt_with(variant, 1).plaintext.view() == "x");
  }
  const std::string stranger(r.fernets[3].encrypt("x").view());
  CHECK(r.ring->classify(stranger + "\n").reason == Reason::unknown_key);
  CHECK(r.ring->rotate(stranger + "\n").token.empty());
}

TEST_CASE("a spelling pyca reads under the active key is respelled, not re-encrypted",
          "[crypto][keyring]") {
  Ring r;
  const std::string token(r.fernets[0].encrypt("y").view());
  CHECK(r.ring->rotate(token).token.empty());  // canonical: nothing to write
  const auto rotation = r.ring->rotate(" " + token + "\r\n");
  REQUIRE(rotation.reason == Reason::ok);
  CHECK(rotation.key_index == 0);
  CHECK_FALSE(rotation.canonical);
  CHECK(rotation.token.view() == token);  // the same bytes, spelled canonically
  const auto readable = r.ring->decrypt_active(token + "\n");
  REQUIRE(readable.ok());
  CHECK(readable.plaintext.view() == "y");
  CHECK(r.fernets[0].decrypt(token + "\n").reason == Reason::non_canonical);  // Fernet: strict
}

TEST_CASE("decrypt_active and decrypt_with use exactly the key asked for", "[crypto][keyring]") {
  Ring r;
  const auto rolling = r.fernets[2].encrypt("y");
  CHECK(r.ring->decrypt_active(rolling.view()).reason == Reason::unknown_key);
  CHECK(r.ring->decrypt_with(rolling.view(), 1).reason == Reason::unknown_key);
  const auto with = r.ring->decrypt_with(rolling.view(), 2);
  REQUIRE(with.ok());
  CHECK(with.plaintext.view() == "y");
  CHECK_THROWS_AS(r.ring->decrypt_with(rolling.view(), 3), CryptoError);
  const auto fresh = r.ring->encrypt("z");
  CHECK(r.ring->decrypt_active(fresh.view()).plaintext.view() == "z");
}

TEST_CASE("labels and fingerprints name keys without revealing them", "[crypto][keyring]") {
  Ring r;
  CHECK(KeyRing::key_label(0) == "active");
  CHECK(KeyRing::key_label(1) == "rolling_0");
  CHECK(KeyRing::key_label(2) == "rolling_1");
  CHECK(KeyRing::key_label(-1) == "undecryptable");
  for (int i = 0; i < 3; ++i) CHECK(r.ring->fingerprint(i) == r.keys[i].fingerprint());
  CHECK(r.ring->fingerprint(0) != r.ring->fingerprint(1));
  CHECK_THROWS_AS(r.ring->fingerprint(3), CryptoError);
}

TEST_CASE("a key ring refuses a key configured twice", "[crypto][keyring]") {
  const Key a = Key::generate();
  const Key b = Key::generate();
  auto expect_refused = [](Key active, std::vector<Key> rolling, const std::string& words) {
    const std::string text_a = std::string(active.encode().view());
    try {
      KeyRing ring(std::move(active), std::move(rolling));
      FAIL("accepted a duplicate key");
    } catch (const KeyError& error) {
      const std::string message = error.what();
      CHECK(message.find(words) != std::string::npos);
      CHECK(message.find(text_a.substr(0, 8)) == std::string::npos);
    }
  };
  SECTION("a rolling key equal to the active key") {
    std::vector<Key> rolling;
    rolling.push_back(copy_of(a));
    expect_refused(copy_of(a), std::move(rolling),
                   "rolling key 0 is the same key as the active key");
  }
  SECTION("two equal rolling keys") {
    std::vector<Key> rolling;
    rolling.push_back(copy_of(b));
    rolling.push_back(copy_of(b));
    expect_refused(copy_of(a), std::move(rolling),
                   "rolling key 1 is the same key as rolling key 0");
  }
  SECTION("two keys sharing a signing half") {
    std::string text = std::string(a.encode().view());
    // Change the last character (encryption half) to a different canonical one.
    text[42] = text[42] == 'A' ? 'E' : 'A';
    std::vector<Key> rolling;
    rolling.push_back(Key::parse(text));
    expect_refused(copy_of(a), std::move(rolling), "same signing half");
  }
}

TEST_CASE("one key ring shared by several threads gives every thread correct results",
          "[crypto][keyring][concurrency]") {
  Ring r;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 3000;
  // Inputs made up front: key index cycles, plaintext names its position.
  std::vector<std::vector<std::pair<int, keymig::SecretString>>> inputs(kThreads);
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kPerThread; ++i) {
      const int key = (i * 7 + t) % 4;
      inputs[t].emplace_back(key, r.fernets[key].encrypt_at_time(
                                      "t" + std::to_string(t) + "i" + std::to_string(i), 1000 + i));
    }
  std::atomic<int> failures{0};
  std::mutex ivs_mutex;
  std::set<std::string> ivs;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string> mine;
      for (int i = 0; i < kPerThread; ++i) {
        const auto& [key, token] = inputs[t][i];
        const auto rotation = r.ring->rotate(token.view());
        const int expected = key == 3 ? -1 : key;
        bool ok = rotation.key_index == expected &&
                  rotation.timestamp == static_cast<std::uint64_t>(1000 + i);
        if (key == 1 || key == 2) {
          const auto check = r.fernets[0].decrypt(rotation.token.view());
          ok = ok && check.ok() &&
               check.plaintext.view() == "t" + std::to_string(t) + "i" + std::to_string(i) &&
               check.timestamp == static_cast<std::uint64_t>(1000 + i);
          mine.push_back(iv_of(rotation.token.view()));
        } else {
          ok = ok && rotation.token.empty();
        }
        if (!ok) failures.fetch_add(1);
      }
      std::lock_guard<std::mutex> lock(ivs_mutex);
      ivs.insert(mine.begin(), mine.end());
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(failures.load() == 0);
  // 3000 / 4 keys * 2 rolling keys per thread.
  CHECK(ivs.size() == static_cast<std::size_t>(kThreads * kPerThread / 2));
}

TEST_CASE("is_token_text knows a token's text from a secret that merely starts like one",
          "[crypto][keyring][double]") {
  Ring r;
  const std::string token = std::string(r.fernets[3].encrypt("JBSWY3DPEHPK3PXP").view());
  CHECK(is_token_text(token));
  CHECK_FALSE(is_token_text("JBSWY3DPEHPK3PXP"));
  CHECK_FALSE(is_token_text("gAAAAAnot-a-token"));
  CHECK_FALSE(is_token_text(token.substr(0, 40)));
  CHECK_FALSE(is_token_text(""));
  CHECK_FALSE(is_token_text(" " + token));
}

TEST_CASE("classify_deep tells a token whose plaintext is a token, under any key",
          "[crypto][keyring][double]") {
  Ring r;
  const std::string inner = std::string(r.fernets[3].encrypt("JBSWY3DPEHPK3PXP").view());
  for (int k : {0, 1, 2}) {
    const auto& f = r.fernets[static_cast<std::size_t>(k)];
    auto twice = r.ring->classify_deep(f.encrypt_at_time(inner, 1'600'000'000).view());
    CHECK(twice.reason == Reason::ok);
    CHECK(twice.key_index == k);
    CHECK(twice.timestamp == 1'600'000'000u);
    CHECK(twice.double_encrypted);
    // A same-key inner layer, as a library that encrypts twice with one key makes.
    const std::string same = std::string(f.encrypt("JBSWY3DPEHPK3PXP").view());
    CHECK(r.ring->classify_deep(f.encrypt(same).view()).double_encrypted);
    auto once = r.ring->classify_deep(f.encrypt("JBSWY3DPEHPK3PXP").view());
    CHECK(once.key_index == k);
    CHECK_FALSE(once.double_encrypted);
    // Starts like a token in the first block, is not one.
    CHECK_FALSE(
        r.ring->classify_deep(f.encrypt("gAAAAABnot-a-token-at-all").view()).double_encrypted);
    // classify itself stays HMAC-only and never says so.
    CHECK_FALSE(r.ring->classify(f.encrypt(inner).view()).double_encrypted);
  }
  auto unknown = r.ring->classify_deep(r.fernets[3].encrypt(inner).view());
  CHECK(unknown.reason == Reason::unknown_key);
  CHECK_FALSE(unknown.double_encrypted);
  CHECK(r.ring->classify_deep("not a token").reason == Reason::not_base64);
}
