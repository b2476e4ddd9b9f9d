#pragma once

// Reading values back out of the text exposition, the way a scraper sees them.

#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "keymig/metrics/metrics.hpp"

namespace keymig::test {

/// The value of the sample whose name and labels are exactly `series`
/// (e.g. `keymig_rows_total{outcome="rotated",target="users"}`).
inline std::optional<double> sample(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

/// Family names from the `# TYPE` lines.
inline std::set<std::string> families(const std::string& exposition) {
  std::set<std::string> out;
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      std::string name;
      words >> name;
      out.insert(name);
    }
  }
  return out;
}

/// The `# TYPE` of `family`, or "" if absent.
inline std::string type_of(const std::string& exposition, const std::string& family) {
  const std::string prefix = "# TYPE " + family + " ";
  const auto at = exposition.find(prefix);
  if (at == std::string::npos) return "";
  const auto end = exposition.find('\n', at);
  return exposition.substr(at + prefix.size(), end - at - prefix.size());
}

/// Touches every family once, so that each has at least one series.
inline void touch_every_family(metrics::Metrics& m, const std::string& target = "users") {
  m.add_rows(target, "rotated", 1);
  m.set_rows_by_key(target, "rolling_0", 10);
  m.set_rows_by_key(target, "active", 5);
  m.observe_batch(target, "ok", 0.02);
  m.set_progress(0.5, 10);
  m.set_journal(target, 1500, 7200);
  m.add_crypto_operations("decrypt", 1);
  m.add_db_retry();
  m.set_last_success("migrate", 1700000000);
  m.set_last_failure("verify");
  m.set_run_in_progress(true);
  m.set_throttled("replica_lag", true);
  m.add_throttled_seconds("replica_lag", 1.5);
}

}  // namespace keymig::test
