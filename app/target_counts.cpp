#include "target_counts.hpp"

namespace keymig::app {

engine::ScanAcross count_every_target(const Common& common, const config::Config& config,
                                      const crypto::KeyRing& keys) {
  engine::Options options = engine::options_from_config(config);
  options.connect.dsn = effective_dsn(common, config);
  options.record_baseline = false;
  return engine::scan_targets(keys, options);
}

bool any_unreadable(const engine::ScanAcross& counts) {
  for (const auto& r : counts.each)
    if (r.undecryptable > r.acknowledged) return true;
  return false;
}

nlohmann::json target_counts_json(const engine::ScanAcross& counts) {
  nlohmann::json list = nlohmann::json::array();
  for (std::size_t i = 0; i < counts.each.size(); ++i) {
    const auto& r = counts.each[i];
    nlohmann::json by_key = nlohmann::json::array();
    for (const auto& k : r.by_key)
      by_key.push_back({{"key", k.key}, {"fingerprint", k.fingerprint}, {"rows", k.rows}});
    list.push_back({{"name", counts.names[i]},
                    {"target", r.target},
                    {"rows", r.rows_scanned},
                    {"by_key", by_key},
                    {"empty", r.empty},
                    {"unreadable", r.undecryptable - r.acknowledged},
                    {"acknowledged", r.acknowledged}});
  }
  return list;
}

std::string target_counts_text(const engine::ScanAcross& counts, const std::string& title) {
  std::string text = title + "\n";
  for (std::size_t i = 0; i < counts.each.size(); ++i) {
    const auto& r = counts.each[i];
    text +=
        "  " + counts.names[i] + " (" + r.target + "): " + std::to_string(r.rows_scanned) + " rows";
    for (const auto& k : r.by_key) text += ", " + k.key + " " + std::to_string(k.rows);
    text += ", empty " + std::to_string(r.empty) + ", unreadable " +
            std::to_string(r.undecryptable - r.acknowledged) + "\n";
  }
  return text;
}

}  // namespace keymig::app
