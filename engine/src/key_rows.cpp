#include "key_rows.hpp"

#include <algorithm>

namespace keymig::engine::detail {

std::vector<KeyRows> key_rows(const crypto::KeyRing& keys,
                              const std::vector<std::int64_t>& by_key) {
  std::vector<KeyRows> out;
  for (int i = 0; i <= static_cast<int>(keys.rolling_count()); ++i) {
    std::int64_t n = i < static_cast<int>(by_key.size()) ? by_key[i] : 0;
    out.push_back({crypto::KeyRing::key_label(i), keys.fingerprint(i), n});
  }
  return out;
}

std::vector<std::string> rolling_fingerprints(const crypto::KeyRing& keys) {
  std::vector<std::string> out;
  for (int i = 1; i <= static_cast<int>(keys.rolling_count()); ++i)
    out.push_back(keys.fingerprint(i));
  return out;
}

void publish_rows_by_key(metrics::Metrics* metrics, const std::string& target,
                         const std::vector<KeyRows>& by_key, std::int64_t undecryptable,
                         std::int64_t acknowledged, std::int64_t empty) {
  if (!metrics) return;
  for (const auto& k : by_key) metrics->set_rows_by_key(target, k.key, static_cast<double>(k.rows));
  metrics->set_rows_by_key(
      target, "undecryptable",
      static_cast<double>(std::max<std::int64_t>(0, undecryptable - acknowledged)));
  metrics->set_rows_by_key(target, "acknowledged", static_cast<double>(acknowledged));
  metrics->set_rows_by_key(target, "empty", static_cast<double>(empty));
}

}  // namespace keymig::engine::detail
