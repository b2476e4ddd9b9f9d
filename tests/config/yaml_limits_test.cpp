// The values.yaml loader's limits (config/src/yaml_limits.hpp): hostile shapes are refused
// before yaml-cpp builds a tree, with the file, the line and the limit named and nothing of
// the content quoted; valid Helm values (quotes, comments and block scalars full of `[`,
// `{`, `*` and `#`) still load.
#include "yaml_limits.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "keymig/config/config.hpp"

namespace cfg = keymig::config;
namespace fs = std::filesystem;

namespace {

const std::string kActive = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/keymig-yaml-limits-XXXXXX";
    char* made = ::mkdtemp(templ.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << text;
    ::chmod(file.c_str(), 0600);
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const cfg::Getenv kNoEnv = [](const char*) { return std::optional<std::string>(); };

std::string load_error(const std::string& file) {
  try {
    (void)cfg::load({file}, kNoEnv);
  } catch (const cfg::ConfigError& e) {
    return e.what();
  }
  FAIL("expected a ConfigError");
  return {};
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// A realistic Helm values file: an application chart's settings around the sections keymig
// reads, with long lists, quoted strings, comments and block scalars full of the characters
// the scan must not take for structure.
std::string helm_values(int list_items) {
  std::ostringstream out;
  out << R"(# Default values for app. This is a YAML-formatted file: [not a list] {not a map} *not-an-alias
---
global:
  imageRegistry: ""
  imagePullSecrets: []
  storageClass: ""
image:
  registry: docker.io
  repository: example/app
  tag: "4.2.1-debian-12-r3"   # pinned [see CHANGELOG] {#123}
  pullPolicy: IfNotPresent
  digest: ""
nameOverride: ''
fullnameOverride: 'it''s [quoted] {with} *stars* and # hashes'
commonLabels: {}
commonAnnotations: {"helm.sh/resource-policy": keep, team: "platform [infra]"}
podAnnotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: "9464"
  checksum/config: "{{ include (print $.Template.BasePath \"/configmap.yaml\") . | sha256sum }}"
command: ["/bin/sh", "-c", "exec app --config /etc/app/[config].yaml # not a comment"]
args:
  - --log-level=info
  - --match=user[0-9]*
  - "--glob=*.{yaml,json}"
  - '--literal=[{*#}]'
schedule: "*/5 * * * *"
cronExpression: '0 */6 * * *'
regex: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$
url: http://example.com/path?query=[1]&x={2}#fragment
emptyValue:
nullValue: ~
extraEnv:
  - name: APP_OPTS
    value: "-Dfoo=[bar] -Dbaz={qux}"
  - name: EMPTY
    value: ""
  - {name: INLINE, value: "a, b, [c]"}
nginxConfig: |
  server {
    listen 8080;
    location ~* \.(js|css)$ { expires 30d; }   # cache [static]
    *weird: &line
  }
    deeper [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
initScript: >-
  echo "{{ .Values.x }}" [ok]
  *star # hash
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          labelSelector:
            matchExpressions:
              - key: app.kubernetes.io/name
                operator: In
                values: [app, "app-worker"]
          topologyKey: kubernetes.io/hostname
resources:
  limits: {cpu: "2", memory: 2Gi}
  requests:
    cpu: 500m
    memory: 1Gi
defaults: &defaults
  replicas: 2
  annotations: {a: "1"}
worker:
  <<: *defaults
  replicas: 4
multiLine: "a long string
  that goes on [over]
  three lines {still} # quoted"
flowOverLines: [
  one, "two [2]",
  {three: 3},   # a comment inside
  four
  ]
hosts:
)";
  for (int i = 0; i < list_items; ++i)
    out << "  - host: \"app-" << i << ".example.com\"  # [" << i << "] {*}\n"
        << "    paths: [\"/\", '/api/[v1]', /static/*]\n";
  out << R"(userLogin:
  passwordPolicy: {minLength: 12}
  mfa:
    enabled: true
    mandatory: false
    rememberMe: {enabled: true, days: 14}
secretStore:
  activeKey: ")"
      << kActive << R"("
keyMigration:
  target: {table: public.users, idColumn: id, secretColumn: mfa_secret}
  batchSize: 500
  schedule: {every: 6h, at: "02:30"}
)";
  return out.str();
}

}  // namespace

TEST_CASE("a realistic Helm values file with long lists and tricky strings loads",
          "[config][limits]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", helm_values(5000));
  REQUIRE(fs::file_size(file) < 1024 * 1024);
  const cfg::Config c = cfg::load({file}, kNoEnv);
  CHECK(c.mfa.enabled);
  REQUIRE(c.active_key.has_value());
  CHECK(c.active_key->text.view() == kActive);
  CHECK(c.migration.targets.front().table == "public.users");
  CHECK(c.migration.batch_size == 500);
  CHECK(c.migration.schedule.at_minute_of_day == 150);
}

TEST_CASE("every YAML file of the repository passes the scan", "[config][limits]") {
  // The deployment manifests and alert rules: block scalars of embedded values files,
  // PromQL with `{` and `[`, comments, several documents a file.
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(KEYMIG_SOURCE_DIR "/deploy")) {
    const auto ext = entry.path().extension();
    if (!entry.is_regular_file() || (ext != ".yaml" && ext != ".yml")) continue;
    const std::string path = entry.path().string();
    INFO(path);
    const std::string text = cfg::detail::read_limited(path);
    CHECK_NOTHROW(cfg::detail::check_yaml_limits(text, path));
    ++files;
  }
  CHECK(files >= 5);
}

TEST_CASE("exactly at each limit is accepted, one past it is refused", "[config][limits]") {
  const cfg::detail::YamlLimits limits;
  SECTION("flow nesting") {
    // The top-level key is one block level, each bracket one more.
    const int brackets = limits.max_depth - 1;
    const std::string ok = "a: " + repeat("[", brackets) + repeat("]", brackets) + "\n";
    CHECK_NOTHROW(cfg::detail::check_yaml_limits(ok, "v.yaml"));
    const std::string deep = "a: " + repeat("[", brackets + 1) + repeat("]", brackets + 1) + "\n";
    CHECK_THROWS_AS(cfg::detail::check_yaml_limits(deep, "v.yaml"), cfg::ConfigError);
  }
  SECTION("a key: value entry in a flow sequence is a map, one level more") {
    // 1 + 2 per `[k: `: 63 levels, then 65.
    const std::string ok = "a: " + repeat("[k: ", 31) + "v" + repeat("]", 31) + "\n";
    CHECK_NOTHROW(cfg::detail::check_yaml_limits(ok, "v.yaml"));
    const std::string deep = "a: " + repeat("[\"k\":", 32) + "v" + repeat("]", 32) + "\n";
    CHECK_THROWS_AS(cfg::detail::check_yaml_limits(deep, "v.yaml"), cfg::ConfigError);
  }
  SECTION("block nesting by indentation") {
    std::string ok, deep;
    for (int i = 0; i < limits.max_depth; ++i) ok += std::string(2 * i, ' ') + "k:\n";
    deep = ok + std::string(2 * limits.max_depth, ' ') + "k: v\n";
    CHECK_NOTHROW(cfg::detail::check_yaml_limits(ok, "v.yaml"));
    CHECK_THROWS_AS(cfg::detail::check_yaml_limits(deep, "v.yaml"), cfg::ConfigError);
  }
  SECTION("aliases") {
    std::string ok = "a: &a x\nl:\n";
    for (int i = 0; i < limits.max_aliases; ++i) ok += "  - *a\n";
    CHECK_NOTHROW(cfg::detail::check_yaml_limits(ok, "v.yaml"));
    CHECK_THROWS_AS(cfg::detail::check_yaml_limits(ok + "  - *a\n", "v.yaml"), cfg::ConfigError);
  }
}

TEST_CASE("deep flow nesting is refused with the file, the line and the limit",
          "[config][limits]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", "# deep\nkeyMigration:\n  target: " +
                                                  repeat("[", 100000) + "\n");
  const std::string err = load_error(file);
  CHECK(err.find(file + ":3: nesting deeper than 64 levels") == 0);
  CHECK(err.find("refused before parsing") != std::string::npos);
}

TEST_CASE("deep block nesting is refused: indentation stairs and compact `- - -`",
          "[config][limits]") {
  TempDir dir;
  std::string stairs = "keyMigration:\n";
  for (int i = 1; i < 200; ++i) stairs += std::string(i, ' ') + "k" + std::to_string(i) + ":\n";
  CHECK(load_error(dir.write("stairs.yaml", stairs)).find("stairs.yaml:65: nesting deeper than 64") !=
        std::string::npos);
  const std::string compact = "keyMigration:\n  targets:\n    " + repeat("- ", 500) + "x\n";
  CHECK(load_error(dir.write("compact.yaml", compact))
            .find("compact.yaml:3: nesting deeper than 64") != std::string::npos);
  const std::string mixed = "a:\n  - b: " + repeat("{c: ", 70) + "1" + repeat("}", 70) + "\n";
  CHECK(load_error(dir.write("mixed.yaml", mixed)).find("mixed.yaml:2: nesting deeper") !=
        std::string::npos);
}

TEST_CASE("an alias bomb is refused before it is built", "[config][limits]") {
  TempDir dir;
  // A billion laughs: 10 levels of 10 aliases each, under a section keymig reads.
  std::string bomb = "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
  for (int level = 1; level < 200; ++level) {
    bomb += "x" + std::to_string(level) + ": &x" + std::to_string(level) + " [";
    for (int i = 0; i < 10; ++i) bomb += (i ? ", *x" : "*x") + std::to_string(level - 1);
    bomb += "]\n";
  }
  bomb += "keyMigration: {targets: *x199}\n";
  const auto file = dir.write("bomb.yaml", bomb);
  const std::string err = load_error(file);
  CHECK(err.find(file + ":102: more than 1000 aliases (*name)") == 0);
}

TEST_CASE("a file over the size limit is refused without reading it whole",
          "[config][limits]") {
  TempDir dir;
  std::string big = "keyMigration:\n  dsn: \"" + std::string(1024 * 1024, 'p') + "\"\n";
  const auto file = dir.write("big.yaml", big);
  const std::string err = load_error(file);
  CHECK(err == file + ": larger than 1048576 bytes (a limit of keymig's values.yaml loader); "
                      "refused before parsing");
  // Just under the limit is fine.
  const auto fits = dir.write("fits.yaml", "keyMigration:\n  batchSize: 7\n# " +
                                               std::string(1024 * 1000, 'p') + "\n");
  CHECK(cfg::load({fits}, kNoEnv).migration.batch_size == 7);
}

TEST_CASE("a pipe that never ends is cut at the size limit", "[config][limits]") {
  // /dev/zero stands for a FIFO or a device given by mistake: it must not read forever.
  const std::string err = load_error("/dev/zero");
  CHECK(err.find("/dev/zero: larger than 1048576 bytes") == 0);
}

TEST_CASE("a refusal never quotes the file's content", "[config][limits]") {
  TempDir dir;
  const std::string deep = "secretStore:\n  activeKey: " + repeat("[", 80) + kActive + "\n";
  const std::string err1 = load_error(dir.write("deep.yaml", deep));
  CHECK(err1.find(kActive) == std::string::npos);
  CHECK(err1.find("[[") == std::string::npos);
  std::string aliases = "secretStore:\n  activeKey: &k " + kActive + "\n  x:\n";
  for (int i = 0; i < 1001; ++i) aliases += "    - *k\n";
  const std::string err2 = load_error(dir.write("aliases.yaml", aliases));
  CHECK(err2.find("more than 1000 aliases") != std::string::npos);
  CHECK(err2.find(kActive) == std::string::npos);
  const std::string err3 =
      load_error(dir.write("big.yaml", "secretStore:\n  activeKey: " + kActive + "\n" +
                                           std::string(2 * 1024 * 1024, '#') + "\n"));
  CHECK(err3.find(kActive) == std::string::npos);
}

TEST_CASE("what only looks like nesting or aliases is text", "[config][limits]") {
  // Each line would pass the limits a hundred times over if counted as structure.
  const std::string brackets = repeat("[{", 100);
  const std::string stars = repeat("*a ", 1100);
  std::ostringstream text;
  text << "double: \"" << brackets << stars << "\"\n"
       << "single: '" << brackets << "'' " << stars << "'\n"
       << "plain: a" << brackets << " " << stars << "\n"
       << "comment: 1 # " << brackets << " " << stars << "\n"
       << "# " << brackets << "\n"
       << "literal: |\n  " << brackets << "\n\n  " << stars << "\n"
       << "folded: >2\n    " << brackets << "\n  " << stars << "\n"
       << "flow: [\"" << brackets << "\", '" << stars << "', a#b, # " << brackets << "\n  x]\n"
       << "escaped: \"\\\"" << brackets << "\\\\\"\n";
  CHECK_NOTHROW(cfg::detail::check_yaml_limits(text.str(), "v.yaml"));
}

TEST_CASE("a block scalar ends where its indentation does", "[config][limits]") {
  // The lines after the scalar are YAML again: deep nesting there is counted.
  const std::string text = "a: |\n  text\n  [[[\nb: " + repeat("[", 70) + "\n";
  CHECK_THROWS_AS(cfg::detail::check_yaml_limits(text, "v.yaml"), cfg::ConfigError);
  // ... and so is a line indented less than the scalar's first line.
  const std::string less = "a:\n  b: |\n      text\n    c: " + repeat("[", 70) + "\n";
  CHECK_THROWS_AS(cfg::detail::check_yaml_limits(less, "v.yaml"), cfg::ConfigError);
}
