// deploy/: the alert rules, the Grafana dashboard and the Kubernetes manifests, checked
// with the real promtool and against what keymig exports.

#include <catch2/catch.hpp>
#include <cctype>
#include <filesystem>
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

namespace {

// The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to
// hyphens ("Break-glass: reset-mfa" -> "break-glass-reset-mfa").
std::string anchor_of(const std::string& heading) {
  std::string out;
  for (const char c : heading) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_')
      out.push_back(static_cast<char>(std::tolower(u)));
    else if (c == ' ')
      out.push_back('-');
  }
  return out;
}

std::set<std::string> operations_anchors() {
  std::set<std::string> anchors;
  std::istringstream in(keymig::test::read_file(kSource + "/docs/operations.md"));
  std::string line;
  bool fenced = false;
  while (std::getline(in, line)) {
    if (line.rfind("```", 0) == 0) fenced = !fenced;
    if (fenced || line.empty() || line[0] != '#') continue;
    const auto text = line.find_first_not_of('#');
    if (text == std::string::npos || line[text] != ' ') continue;
    anchors.insert(anchor_of(line.substr(text + 1)));
  }
  return anchors;
}

}  // namespace

TEST_CASE("every section of docs/operations.md that deploy/ and the guide cite exists",
          "[metrics][deploy]") {
  const auto anchors = operations_anchors();
  REQUIRE(anchors.count("alerts") == 1);  // the parser reads the guide's headings
  // `docs/operations.md, "Run stalled"` (a description may wrap the name, a test file
  // escape its quotes) or `docs/operations.md#run-stalled`.
  static const std::regex kCitation(
      R"re(docs/operations\.md(?:,\s*(?:section\s+)?\\?"([^"\\]+)\\?"|#([A-Za-z0-9_-]+)))re");
  int cited = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kSource + "/deploy")) {
    if (!entry.is_regular_file()) continue;
    const std::string text = keymig::test::read_file(entry.path().string());
    for (std::sregex_iterator it(text.begin(), text.end(), kCitation), end; it != end; ++it) {
      std::string name = (*it)[1].matched ? (*it)[1].str() : (*it)[2].str();
      name = std::regex_replace(name, std::regex(R"(\s+)"), " ");
      const std::string anchor = (*it)[1].matched ? anchor_of(name) : name;
      INFO(entry.path().string() << " cites docs/operations.md \"" << name << "\"");
      CHECK(anchors.count(anchor) == 1);
      ++cited;
    }
  }
  CHECK(cited >= 8);  // at least one per alert rule
  // The guide's own links to its sections.
  const std::string guide = keymig::test::read_file(kSource + "/docs/operations.md");
  static const std::regex kLink(R"(\]\(#([A-Za-z0-9_-]+)\))");
  for (std::sregex_iterator it(guide.begin(), guide.end(), kLink), end; it != end; ++it) {
    INFO("docs/operations.md links to #" << (*it)[1].str());
    CHECK(anchors.count((*it)[1].str()) == 1);
  }
}

TEST_CASE("the alert rules are valid and pass their promtool unit tests", "[metrics][deploy]") {
  const auto rules = kSource + "/deploy/prometheus/keymig-alerts.yaml";
  const auto check = keymig::test::run({"promtool", "check", "rules", rules});
  INFO(check.output);
  CHECK(check.exit_code == 0);
  CHECK(check.output.find("SUCCESS: 9 rules found") != std::string::npos);

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
  SECTION("a family with a target label is read for the dashboard's $target alone") {
    // Which families carry `target` in keymig's own exposition (serve's /metrics); in a
    // Pushgateway every series carries it, but only these can be filtered everywhere.
    keymig::metrics::Metrics m;
    m.set_target("users");
    keymig::test::touch_every_family(m);
    std::set<std::string> targeted;
    std::istringstream in(m.serialize());
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      const auto name = line.substr(0, line.find_first_of("{ "));
      if (line.find("target=\"") != std::string::npos) targeted.insert(name);
    }
    REQUIRE(targeted.count("keymig_run_progress_ratio") == 1);
    REQUIRE(targeted.count("keymig_rows_remaining") == 1);
    static const std::regex kSelector(R"((keymig_[a-zA-Z0-9_:]+)(\{[^}]*\})?)");
    for (const auto& expr : exprs) {
      for (std::sregex_iterator it(expr.begin(), expr.end(), kSelector), end; it != end; ++it) {
        const std::string name = (*it)[1];
        if (targeted.count(name) == 0) continue;
        INFO(expr);
        INFO(name);
        CHECK((*it)[2].str().find("target=~\"$target\"") != std::string::npos);
      }
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

  // With the binary: every library it links comes from a package the image installs.
  const auto r = keymig::test::run(
      {"python3", kSource + "/tests/metrics/check_manifests.py", kSource, KEYMIG_BINARY});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find(", 0 problems") != std::string::npos);
}

namespace {

// The checker run on a copy of the manifests and the Dockerfile with one edit, which must
// be found where the test says it is.
keymig::test::RunResult check_edited(const std::string& file, const std::string& from,
                                     const std::string& to) {
  keymig::test::TempDir dir;
  const auto copy =
      keymig::test::run({"sh", "-c",
                         "mkdir -p \"$1/deploy\" && cp -r \"$2/deploy/kubernetes\" "
                         "\"$1/deploy/\" && cp \"$2/Dockerfile\" \"$2/CMakeLists.txt\" \"$1/\"",
                         "sh", dir.path(), kSource});
  REQUIRE(copy.exit_code == 0);
  const auto path = dir.path() + "/" + file;
  const auto text = keymig::test::read_file(path);
  INFO(file << " lacks the text to edit: " << from);
  REQUIRE(text.find(from) != std::string::npos);
  keymig::test::write_file(path, replace_all(text, from, to));
  return keymig::test::run({"python3", kSource + "/tests/metrics/check_manifests.py", dir.path()});
}

void check_refused(const std::string& file, const std::string& from, const std::string& to,
                   const std::string& complaint) {
  const auto r = check_edited(file, from, to);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find(complaint) != std::string::npos);
}

}  // namespace

TEST_CASE("the manifest checker refuses what the Kubernetes runbooks cannot live with",
          "[metrics][deploy]") {
  SECTION("a migrate Job without the Job's name as its run id") {
    check_refused("deploy/kubernetes/job-incident.yaml", " --run-id \"$JOB_NAME\"", "",
                  "job-incident.yaml Job container keymig: migrate without --run-id of the "
                  "Job's name");
    check_refused("deploy/kubernetes/cronjob.yaml", "metadata.labels['job-name']", "metadata.name",
                  "cronjob.yaml CronJob container keymig: migrate without --run-id");
  }
  SECTION("no Indexed Job of N workers, or one whose every pod verifies") {
    check_refused("deploy/kubernetes/job-workers.yaml", "completionMode: Indexed",
                  "completionMode: NonIndexed", "no Indexed Job");
    check_refused("deploy/kubernetes/job-workers.yaml", "parallelism: 3", "parallelism: 1",
                  "parallelism and completions are not one N");
    check_refused("deploy/kubernetes/job-workers.yaml",
                  "if [ \"$JOB_COMPLETION_INDEX\" = 0 ]; then", "true; ", "every worker verifies");
  }
  SECTION("a rolling key item the pod cannot start without, or an optional active key") {
    check_refused("deploy/kubernetes/deployment.yaml", "optional: true", "optional: false",
                  "deployment.yaml Deployment container keymig: the rolling key item is not "
                  "optional");
    check_refused("deploy/kubernetes/configmap.yaml", "/etc/keymig/keys/rollingKey",
                  "/etc/keymig/keys/oldKey", "the key Secret has no item oldKey");
  }
  SECTION("verify-full without a mounted CA") {
    check_refused("deploy/kubernetes/configmap.yaml", "  PGSSLROOTCERT: /etc/keymig/pg-ca/ca.crt\n",
                  "", "no PGSSLROOTCERT");
    check_refused(
        "deploy/kubernetes/job-finalize.yaml",
        "- {name: pg-ca, mountPath: /etc/keymig/pg-ca, readOnly: true}", "",
        "job-finalize.yaml Job container keymig: PGSSLROOTCERT /etc/keymig/pg-ca/ca.crt is "
        "not a mounted");
    check_refused("deploy/kubernetes/configmap.yaml", "PGSSLMODE: verify-full",
                  "PGSSLMODE: require", "PGSSLMODE is not verify-full");
  }
  SECTION("scheduled serve and the CronJob in one kustomization") {
    check_refused("deploy/kubernetes/kustomization.yaml", "# - cronjob.yaml", "- cronjob.yaml",
                  "kustomization.yaml: applies both keymig serve with a schedule and the CronJob");
  }
  SECTION("an image that is not the Dockerfile's, or not on Debian 12, or run as root") {
    check_refused(
        "deploy/kubernetes/deployment.yaml", "registry.example.com/keymig:0.1.0",
        "registry.example.com/keymig:latest",
        "image registry.example.com/keymig:latest is not registry.example.com/keymig:0.1.0");
    check_refused("Dockerfile", "FROM debian:12-slim", "FROM ubuntu:24.04",
                  "base ubuntu:24.04 is not Debian 12");
    check_refused("Dockerfile", "USER 65532:65532", "USER root", "the image runs as root");
    check_refused("Dockerfile", "org.opencontainers.image.version=\"0.1.0\"",
                  "org.opencontainers.image.version=\"0.0.9\"", "not keymig's version");
  }
  SECTION("an image without a library keymig links") {
    const std::string from = "libtbb12 ";
    keymig::test::TempDir dir;
    const auto text = keymig::test::read_file(kSource + "/Dockerfile");
    REQUIRE(text.find(from) != std::string::npos);
    keymig::test::write_file(dir.path() + "/Dockerfile", replace_all(text, from, ""));
    const auto copy =
        keymig::test::run({"sh", "-c", "cp -r \"$2/deploy\" \"$2/CMakeLists.txt\" \"$1/\"", "sh",
                           dir.path(), kSource});
    REQUIRE(copy.exit_code == 0);
    const auto r = keymig::test::run(
        {"python3", kSource + "/tests/metrics/check_manifests.py", dir.path(), KEYMIG_BINARY});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("the image does not install libtbb12") != std::string::npos);
  }
}
