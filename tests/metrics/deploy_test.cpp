// deploy/: the alert rules, the Grafana dashboard and the Kubernetes manifests, checked
// with the real promtool and against what keymig exports.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "exposition.hpp"
#include "keymig/metrics/metrics.hpp"
#include "process.hpp"

namespace {

const std::string kSource = KEYMIG_SOURCE_DIR;

// Every sample name keymig exports once each family has a series (histogram suffixes
// included, as the scraper sees them).
std::set<std::string> exported_names() {
  keymig::metrics::Metrics m;
  keymig::test::touch_every_family(m);
  std::set<std::string> names;
  std::istringstream in(m.serialize());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

std::set<std::string> keymig_names_in(const std::string& text) {
  std::set<std::string> names;
  static const std::regex kName("keymig_[a-zA-Z0-9_:]+");
  for (std::sregex_iterator it(text.begin(), text.end(), kName), end; it != end; ++it) {
    names.insert(it->str());
  }
  return names;
}

void collect_exprs(const nlohmann::json& node, std::vector<std::string>& out) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it.key() == "expr" && it->is_string()) {
        out.push_back(it->get<std::string>());
      } else {
        collect_exprs(*it, out);
      }
    }
  } else if (node.is_array()) {
    for (const auto& child : node) collect_exprs(child, out);
  }
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

}  // namespace

TEST_CASE("the alert rules are valid and pass their promtool unit tests", "[metrics][deploy]") {
  const auto rules = kSource + "/deploy/prometheus/keymig-alerts.yaml";
  const auto check = keymig::test::run({"promtool", "check", "rules", rules});
  INFO(check.output);
  CHECK(check.exit_code == 0);
  CHECK(check.output.find("SUCCESS: 8 rules found") != std::string::npos);

  const auto tests = keymig::test::run(
      {"promtool", "test", "rules", kSource + "/deploy/prometheus/keymig-alerts.test.yaml"}, 300);
  INFO(tests.output);
  CHECK(tests.exit_code == 0);
  CHECK(tests.output.find("SUCCESS") != std::string::npos);
}

TEST_CASE("every metric the alerts use is one keymig exports", "[metrics][deploy]") {
  const auto exported = exported_names();
  const auto used =
      keymig_names_in(keymig::test::read_file(kSource + "/deploy/prometheus/keymig-alerts.yaml"));
  REQUIRE(used.size() >= 6);
  for (const auto& name : used) {
    INFO(name);
    CHECK(exported.count(name) == 1);
  }
}

TEST_CASE("the dashboard queries only what keymig exports, and all of it", "[metrics][deploy]") {
  const auto dashboard = nlohmann::json::parse(
      keymig::test::read_file(kSource + "/deploy/grafana/keymig-dashboard.json"));
  std::vector<std::string> exprs;
  collect_exprs(dashboard, exprs);
  REQUIRE(exprs.size() >= 10);

  const auto exported = exported_names();
  std::set<std::string> used;
  for (const auto& expr : exprs) {
    const auto names = keymig_names_in(expr);
    INFO(expr);
    CHECK_FALSE(names.empty());
    for (const auto& name : names) {
      INFO(name);
      CHECK(exported.count(name) == 1);
      used.insert(name);
    }
  }
  SECTION("every family has a panel") {
    keymig::metrics::Metrics m;
    keymig::test::touch_every_family(m);
    for (const auto& family : keymig::test::families(m.serialize())) {
      const bool shown = used.count(family) || used.count(family + "_bucket");
      INFO(family);
      CHECK(shown);
    }
  }
  SECTION("the queries are valid PromQL") {
    // promtool parses recording rules; Grafana's variables get plausible values first.
    std::string rules = "groups:\n  - name: dashboard\n    rules:\n";
    int n = 0;
    for (auto expr : exprs) {
      expr = replace_all(expr, "$__rate_interval", "5m");
      expr = replace_all(expr, "$__range", "6h");
      expr = replace_all(expr, "$target", ".*");
      rules += "      - record: dashboard:query" + std::to_string(++n) + "\n";
      rules += "        expr: " + nlohmann::json(expr).dump() + "\n";
    }
    keymig::test::TempDir dir;
    keymig::test::write_file(dir.path() + "/dashboard-rules.yaml", rules);
    const auto r =
        keymig::test::run({"promtool", "check", "rules", dir.path() + "/dashboard-rules.yaml"});
    INFO(rules);
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("the kubernetes manifests are valid YAML with the safety settings the runbooks assume",
          "[metrics][deploy]") {
  // python3-yaml is the parser; scripts/install-deps lists it.
  const auto has_yaml = keymig::test::run({"python3", "-c", "import yaml"});
  INFO("python3 cannot import yaml (Debian package python3-yaml): " << has_yaml.output);
  REQUIRE(has_yaml.exit_code == 0);

  const auto r =
      keymig::test::run({"python3", kSource + "/tests/metrics/check_manifests.py", kSource});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find(", 0 problems") != std::string::npos);
}
