#include "keymig/engine/keys.hpp"

#include <optional>
#include <utility>

namespace keymig::engine {
namespace {

struct ParsedKeys {
  crypto::Key active;
  std::vector<crypto::Key> rolling;
};

crypto::Key parse_key(const config::KeySetting& setting) {
  try {
    return crypto::Key::parse(setting.text.view());
  } catch (const crypto::KeyError&) {
    // crypto's message is key-free too, but the operator needs to know which setting.
    std::string where = setting.origin.describe();
    if (!setting.key_file.empty()) where += " (key file " + setting.key_file + ")";
    throw config::ConfigError(where +
                              ": not a Fernet key (expected 32 url-safe base64-encoded bytes, "
                              "as `keymig keygen` prints)");
  }
}

ParsedKeys parse_all(const config::Config& config) {
  if (!config.active_key) {
    std::string files;
    for (const auto& f : config.files) files += (files.empty() ? "" : ", ") + f;
    throw config::ConfigError((files.empty() ? std::string("no config file") : files) +
                              ": no active key: set secretStore.activeKey or "
                              "secretStore.activeKeyFile, or KEYMIG_ACTIVE_KEY");
  }
  ParsedKeys keys{parse_key(*config.active_key), {}};
  keys.rolling.reserve(config.rolling_keys.size());
  for (std::size_t i = 0; i < config.rolling_keys.size(); ++i) {
    const auto& setting = config.rolling_keys[i];
    crypto::Key key = parse_key(setting);
    if (key.same_as(keys.active))
      throw config::ConfigError(
          setting.origin.describe() + ": this rolling key is the active key (" +
          config.active_key->origin.describe() + "); a rolling key must be an old key");
    for (std::size_t j = 0; j < keys.rolling.size(); ++j)
      if (key.same_as(keys.rolling[j]))
        throw config::ConfigError(setting.origin.describe() +
                                  ": the same rolling key is already set at " +
                                  config.rolling_keys[j].origin.describe());
    keys.rolling.push_back(std::move(key));
  }
  return keys;
}

}  // namespace

std::string key_display_name(int key_index) {
  if (key_index == 0) return "active";
  if (key_index > 0) return "rolling[" + std::to_string(key_index - 1) + "]";
  return "none";
}

crypto::KeyRing build_keyring(const config::Config& config) {
  ParsedKeys keys = parse_all(config);
  return crypto::KeyRing(std::move(keys.active), std::move(keys.rolling));
}

std::vector<KeyInfo> describe_keys(const config::Config& config) {
  const ParsedKeys keys = parse_all(config);
  std::vector<KeyInfo> out;
  out.push_back(KeyInfo{0, key_display_name(0), keys.active.fingerprint(),
                        config.active_key->origin, config.active_key->key_file});
  for (std::size_t i = 0; i < keys.rolling.size(); ++i) {
    const int index = static_cast<int>(i) + 1;
    out.push_back(KeyInfo{index, key_display_name(index), keys.rolling[i].fingerprint(),
                          config.rolling_keys[i].origin, config.rolling_keys[i].key_file});
  }
  return out;
}

}  // namespace keymig::engine
