#include "keymig/engine/keys.hpp"

#include <catch2/catch.hpp>
#include <string>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"

using keymig::SecretString;
using keymig::config::Config;
using keymig::config::ConfigError;
using keymig::config::KeySetting;
using keymig::crypto::Key;
using keymig::engine::build_keyring;
using keymig::engine::describe_keys;

namespace {

std::string new_key_text() {
  return std::string(Key::generate().encode().view());
}

KeySetting setting(const std::string& text, const std::string& file, int line,
                   const std::string& key) {
  KeySetting s;
  s.text = SecretString(text);
  s.origin.file = file;
  s.origin.line = line;
  s.origin.key = key;
  return s;
}

// The message of the ConfigError that building `config` throws; fails if none is thrown.
std::string error_of(const Config& config) {
  try {
    (void)build_keyring(config);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("build_keyring accepted a bad config");
  return {};
}

}  // namespace

TEST_CASE("build_keyring orders the active key first and rolling keys as configured",
          "[engine][keys]") {
  const auto active = new_key_text();
  const auto r0 = new_key_text();
  const auto r1 = new_key_text();
  Config config;
  config.active_key = setting(active, "values.yaml", 10, "secretStore.activeKey");
  config.rolling_keys.push_back(setting(r0, "values.yaml", 11, "secretStore.rollingKey"));
  config.rolling_keys.push_back(setting(r1, "values.yaml", 13, "secretStore.rollingKeys[0]"));

  const auto ring = build_keyring(config);
  REQUIRE(ring.rolling_count() == 2);
  CHECK(ring.fingerprint(0) == Key::parse(active).fingerprint());
  CHECK(ring.fingerprint(1) == Key::parse(r0).fingerprint());
  CHECK(ring.fingerprint(2) == Key::parse(r1).fingerprint());

  // A token made under rolling[1] is recognised as such.
  keymig::crypto::Fernet old(Key::parse(r1));
  const auto token = old.encrypt("JBSWY3DPEHPK3PXP");
  CHECK(ring.classify(token.view()).key_index == 2);

  const auto infos = describe_keys(config);
  REQUIRE(infos.size() == 3);
  CHECK(infos[0].label == "active");
  CHECK(infos[2].label == "rolling[1]");
  CHECK(infos[2].origin.line == 13);
}

TEST_CASE("build_keyring errors name where the key came from and never the key", "[engine][keys]") {
  const auto active = new_key_text();
  Config config;
  config.active_key = setting(active, "values.yaml", 10, "secretStore.activeKey");

  SECTION("no active key") {
    Config empty;
    const auto msg = error_of(empty);
    CHECK(msg.find("active") != std::string::npos);
  }
  SECTION("an active key that is not a Fernet key") {
    const std::string bad = "not-a-fernet-key-but-a-secret-all-the-same";
    config.active_key = setting(bad, "values.yaml", 10, "secretStore.activeKey");
    const auto msg = error_of(config);
    CHECK(msg.find("values.yaml:10") != std::string::npos);
    CHECK(msg.find("secretStore.activeKey") != std::string::npos);
    CHECK(msg.find(bad) == std::string::npos);
  }
  SECTION("a rolling key equal to the active key") {
    config.rolling_keys.push_back(setting(active, "b.yaml", 4, "secretStore.rollingKey"));
    const auto msg = error_of(config);
    CHECK(msg.find("b.yaml:4") != std::string::npos);
    CHECK(msg.find(active) == std::string::npos);
  }
  SECTION("the same rolling key twice") {
    const auto r = new_key_text();
    config.rolling_keys.push_back(setting(r, "values.yaml", 11, "secretStore.rollingKey"));
    config.rolling_keys.push_back(setting(r, "values.yaml", 13, "secretStore.rollingKeys[0]"));
    const auto msg = error_of(config);
    CHECK(msg.find("values.yaml:13") != std::string::npos);
    CHECK(msg.find(r) == std::string::npos);
  }
  SECTION("a rolling key missing its padding is still accepted") {
    auto r = new_key_text();
    r.pop_back();  // the '='
    config.rolling_keys.push_back(setting(r, "values.yaml", 11, "secretStore.rollingKey"));
    CHECK(build_keyring(config).rolling_count() == 1);
  }
}
