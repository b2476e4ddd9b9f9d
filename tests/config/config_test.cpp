#include "keymig/config/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

namespace cfg = keymig::config;

namespace {

// Fernet-shaped texts; config does not parse keys, so any text will do, but these look
// like what an operator pastes.
const std::string kActive = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const std::string kRolling = "dGhpcyBpcyBhbiBvbGQga2V5IHRoYXQgaXMgMzJieXQ=";
const std::string kRolling2 = "YW5vdGhlciBvbGQga2V5IHRoYXQgaXMgMzIgYnl0ZXM=";

// A fresh directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/keymig-config-test-XXXXXX";
    char* made = ::mkdtemp(templ.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    const std::string cmd = "rm -rf '" + path_ + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << text;
    ::chmod(file.c_str(), mode);
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

cfg::Getenv env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const cfg::Getenv kNoEnv = env_of({});

std::string load_error(const std::vector<std::string>& files, const cfg::Getenv& env = kNoEnv) {
  try {
    (void)cfg::load(files, env);
  } catch (const cfg::ConfigError& e) {
    return e.what();
  }
  FAIL("expected a ConfigError");
  return {};
}

}  // namespace

TEST_CASE("an empty values file gives the documented defaults", "[config]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", "");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  CHECK(c.files == std::vector<std::string>{file});
  CHECK_FALSE(c.mfa.enabled);
  CHECK_FALSE(c.mfa.mandatory);
  CHECK(c.mfa.remember_me_days == 30);
  CHECK_FALSE(c.active_key.has_value());
  CHECK(c.rolling_keys.empty());
  CHECK(c.migration.dsn.empty());
  CHECK(c.migration.targets.front().table == "users");
  CHECK(c.migration.targets.front().id_column == "id");
  CHECK(c.migration.targets.front().secret_column == "mfa_secret");
  CHECK(c.migration.targets.front().flag_column == "mfa_fernet_active");
  CHECK(c.migration.targets.front().username_column == "username");
  CHECK(c.migration.targets.front().sysadmin_columns ==
        std::vector<std::string>{"is_staff", "is_superuser"});
  CHECK(c.migration.batch_size == 2000);
  CHECK(c.migration.threads == 0);
  CHECK(c.migration.max_rows_per_second == 0);
  CHECK(c.migration.journal);
  CHECK(c.migration.lock_timeout == std::chrono::milliseconds(2000));
  CHECK(c.migration.statement_timeout == std::chrono::milliseconds(60000));
  CHECK(c.migration.metrics.listen == "127.0.0.1:9464");
  CHECK_FALSE(c.migration.schedule.every.has_value());
  CHECK_FALSE(c.migration.schedule.at_minute_of_day.has_value());
  CHECK(c.warnings.empty());
}

TEST_CASE("a full values file is read into every field", "[config]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", R"(
image: {repository: example/app, tag: "1.2"}
userLogin:
  passwordPolicy: {minLength: 12}
  mfa:
    enabled: true
    mandatory: false
    mandatoryForSysAdmins: true
    rememberMe: {enabled: true, days: 14, disabledForSysAdmins: true}
secretStore:
  activeKey: ")" + kActive + R"("
  rollingKey: ")" + kRolling + R"("
  rollingKeys: [")" + kRolling2 + R"("]
keyMigration:
  database: {dsn: "postgresql://app@db/app"}
  target:
    table: public.accounts
    idColumn: account_id
    secretColumn: totp
    activeFlagColumn: ""
    usernameColumn: login
    sysAdminColumns: [is_admin]
  batchSize: 500
  threads: 8
  maxRowsPerSecond: 10000
  journal: false
  lockTimeout: 500ms
  statementTimeout: 1m30s
  metrics: {listen: "0.0.0.0:9000", pushGateway: "http://pgw:9091", textfile: /var/lib/node/keymig.prom}
  schedule: {every: 6h, at: "02:30"}
)");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  CHECK(c.mfa.enabled);
  CHECK_FALSE(c.mfa.mandatory);
  CHECK(c.mfa.mandatory_for_sysadmins);
  CHECK(c.mfa.remember_me_enabled);
  CHECK(c.mfa.remember_me_days == 14);
  CHECK(c.mfa.remember_me_disabled_for_sysadmins);
  REQUIRE(c.active_key.has_value());
  CHECK(c.active_key->text.view() == kActive);
  CHECK(c.active_key->origin.describe() == file + ":11 secretStore.activeKey");
  REQUIRE(c.rolling_keys.size() == 2);
  CHECK(c.rolling_keys[0].text.view() == kRolling);
  CHECK(c.rolling_keys[0].origin.key == "secretStore.rollingKey");
  CHECK(c.rolling_keys[1].text.view() == kRolling2);
  CHECK(c.rolling_keys[1].origin.key == "secretStore.rollingKeys[0]");
  CHECK(c.rolling_keys[1].origin.line == 13);
  const auto& m = c.migration;
  CHECK(m.dsn == "postgresql://app@db/app");
  CHECK(m.targets.front().table == "public.accounts");
  CHECK(m.targets.front().id_column == "account_id");
  CHECK(m.targets.front().secret_column == "totp");
  CHECK(m.targets.front().flag_column.empty());
  CHECK(m.targets.front().username_column == "login");
  CHECK(m.targets.front().sysadmin_columns == std::vector<std::string>{"is_admin"});
  CHECK(m.batch_size == 500);
  CHECK(m.threads == 8);
  CHECK(m.max_rows_per_second == 10000);
  CHECK_FALSE(m.journal);
  CHECK(m.lock_timeout == std::chrono::milliseconds(500));
  CHECK(m.statement_timeout == std::chrono::milliseconds(90000));
  CHECK(m.metrics.listen == "0.0.0.0:9000");
  CHECK(m.metrics.push_gateway == "http://pgw:9091");
  CHECK(m.metrics.textfile == "/var/lib/node/keymig.prom");
  CHECK(m.schedule.every == std::chrono::seconds(6 * 3600));
  CHECK(m.schedule.at_minute_of_day == 150);
}

TEST_CASE("the throttle section is read, and off unless set", "[config][throttle]") {
  TempDir dir;
  const auto none = cfg::load({dir.write("none.yaml", "")}, kNoEnv).migration.throttle;
  CHECK(none.max_replica_lag.count() == 0);
  CHECK(none.flag_file.empty());
  CHECK(none.max_active_sessions == 0);
  CHECK(none.critical_active_sessions == 0);
  const auto file = dir.write("values.yaml", R"(keyMigration:
  throttle:
    maxReplicaLag: 1500ms
    flagFile: /run/keymig/pause
    maxActiveSessions: 40
    criticalActiveSessions: 200
)");
  const auto t = cfg::load({file}, kNoEnv).migration.throttle;
  CHECK(t.max_replica_lag == std::chrono::milliseconds(1500));
  CHECK(t.flag_file == "/run/keymig/pause");
  CHECK(t.max_active_sessions == 40);
  CHECK(t.critical_active_sessions == 200);
  const auto bad = dir.write("bad.yaml", "keyMigration:\n  throttle:\n    maxReplicaLag: soon\n");
  CHECK(load_error({bad}).find(
            bad + ":3 keyMigration.throttle.maxReplicaLag: 'soon' is not a duration") == 0);
  const auto unknown = dir.write("unknown.yaml", "keyMigration:\n  throttle:\n    maxLag: 2s\n");
  CHECK(load_error({unknown}).find("keyMigration.throttle.maxLag") != std::string::npos);
}

TEST_CASE("later config files win, maps merge deeply and null deletes", "[config]") {
  TempDir dir;
  const auto base = dir.write("values.yaml", R"(
userLogin: {mfa: {enabled: true, mandatory: true}}
secretStore: {activeKey: ")" + kActive + R"(", rollingKey: ")" +
                                                 kRolling + R"("}
keyMigration:
  target: {table: users, secretColumn: mfa_secret}
  batchSize: 100
  threads: 2
)");
  const auto overlay = dir.write("override.yaml", R"(
userLogin: {mfa: {mandatory: false}}
secretStore: {rollingKey: null}
keyMigration:
  target: {table: accounts}
  threads: 4
)");
  SECTION("the overlay changes only what it names") {
    const cfg::Config c = cfg::load({base, overlay}, kNoEnv);
    CHECK(c.files == std::vector<std::string>{base, overlay});
    CHECK(c.mfa.enabled);
    CHECK_FALSE(c.mfa.mandatory);
    CHECK(c.rolling_keys.empty());
    REQUIRE(c.active_key.has_value());
    CHECK(c.active_key->origin.file == base);
    CHECK(c.migration.targets.front().table == "accounts");
    CHECK(c.migration.targets.front().secret_column == "mfa_secret");
    CHECK(c.migration.batch_size == 100);
    CHECK(c.migration.threads == 4);
  }
  SECTION("the other order gives the other answer") {
    const cfg::Config c = cfg::load({overlay, base}, kNoEnv);
    CHECK(c.mfa.mandatory);
    CHECK(c.rolling_keys.size() == 1);
    CHECK(c.migration.targets.front().table == "users");
    CHECK(c.migration.threads == 2);
  }
}

TEST_CASE("environment variables win over the files", "[config]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", "secretStore: {activeKey: \"" + kActive +
                                                 "\", rollingKey: \"" + kRolling + "\"}\n");
  SECTION("KEYMIG_ACTIVE_KEY replaces the active key") {
    const cfg::Config c = cfg::load({file}, env_of({{"KEYMIG_ACTIVE_KEY", kRolling2 + "\n"}}));
    REQUIRE(c.active_key.has_value());
    CHECK(c.active_key->text.view() == kRolling2);
    CHECK(c.active_key->origin.describe() == "env KEYMIG_ACTIVE_KEY");
    REQUIRE(c.rolling_keys.size() == 1);
    CHECK(c.rolling_keys[0].text.view() == kRolling);
  }
  SECTION("KEYMIG_ROLLING_KEYS replaces every rolling key, in order") {
    const cfg::Config c = cfg::load(
        {file}, env_of({{"KEYMIG_ROLLING_KEYS", " " + kRolling2 + " , " + kActive + ","}}));
    REQUIRE(c.rolling_keys.size() == 2);
    CHECK(c.rolling_keys[0].text.view() == kRolling2);
    CHECK(c.rolling_keys[0].origin.describe() == "env KEYMIG_ROLLING_KEYS[0]");
    CHECK(c.rolling_keys[1].text.view() == kActive);
  }
  SECTION("empty variables change nothing") {
    const cfg::Config c =
        cfg::load({file}, env_of({{"KEYMIG_ACTIVE_KEY", ""}, {"KEYMIG_ROLLING_KEYS", " "}}));
    CHECK(c.active_key->text.view() == kActive);
    CHECK(c.rolling_keys.size() == 1);
  }
  SECTION("the environment alone is a configuration") {
    const cfg::Config c = cfg::load({}, env_of({{"KEYMIG_ACTIVE_KEY", kActive}}));
    REQUIRE(c.active_key.has_value());
    CHECK(c.active_key->text.view() == kActive);
  }
}

TEST_CASE("key files are read relative to their values file and trimmed", "[config]") {
  TempDir dir;
  ::mkdir((dir.path() + "/keys").c_str(), 0700);
  dir.write("keys/active", kActive + "\n", 0600);
  dir.write("keys/rolling", "  " + kRolling + "\r\n", 0400);
  const auto file = dir.write(
      "values.yaml", "secretStore:\n  activeKeyFile: keys/active\n  rollingKeyFile: " + dir.path() +
                         "/keys/rolling\n");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  REQUIRE(c.active_key.has_value());
  CHECK(c.active_key->text.view() == kActive);
  CHECK(c.active_key->key_file == dir.path() + "/keys/active");
  CHECK(c.active_key->origin.describe() == file + ":2 secretStore.activeKeyFile");
  REQUIRE(c.rolling_keys.size() == 1);
  CHECK(c.rolling_keys[0].text.view() == kRolling);
  CHECK(c.warnings.empty());
}

TEST_CASE("a key file readable by group or others gives a warning", "[config]") {
  TempDir dir;
  dir.write("active.key", kActive + "\n", 0644);
  dir.write("rolling.key", kRolling + "\n", 0640);
  const auto file = dir.write(
      "values.yaml", "secretStore: {activeKeyFile: active.key, rollingKeyFile: rolling.key}\n");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  REQUIRE(c.warnings.size() == 2);
  CHECK(c.warnings[0].find("active.key is readable by others (mode 0644)") != std::string::npos);
  CHECK(c.warnings[0].find("secretStore.activeKeyFile") != std::string::npos);
  CHECK(c.warnings[1].find("rolling.key is readable by its group (mode 0640)") !=
        std::string::npos);
  for (const auto& w : c.warnings) {
    CHECK(w.find(kActive) == std::string::npos);
    CHECK(w.find(kRolling) == std::string::npos);
  }
}

TEST_CASE("a key file another owner shares with keymig's own group alone is not warned about",
          "[config]") {
  if (::geteuid() != 0) {
    WARN("not root: cannot give a file to another owner; case left to the root run (CI)");
    return;
  }
  TempDir dir;
  const auto active = dir.write("active.key", kActive + "\n", 0440);
  const auto rolling = dir.write("rolling.key", kRolling + "\n", 0444);
  // As a Kubernetes secret volume: owned by root (here: nobody), group = the pod's group.
  REQUIRE(::chown(active.c_str(), 65534, ::getegid()) == 0);
  REQUIRE(::chown(rolling.c_str(), 65534, ::getegid()) == 0);
  const auto file = dir.write(
      "values.yaml", "secretStore: {activeKeyFile: active.key, rollingKeyFile: rolling.key}\n");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  // Readable by others is still too open, whoever owns it.
  REQUIRE(c.warnings.size() == 1);
  CHECK(c.warnings[0].find("rolling.key is readable by others (mode 0444)") != std::string::npos);
  // Another owner, but a group that is not keymig's: warned.
  REQUIRE(::chown(active.c_str(), 65534, ::getegid() + 1) == 0);
  const cfg::Config d = cfg::load({file}, kNoEnv);
  REQUIRE(d.warnings.size() == 2);
  CHECK(d.warnings[0].find("active.key is readable by its group (mode 0440)") != std::string::npos);
}

TEST_CASE("key file problems name the file and the setting", "[config]") {
  TempDir dir;
  SECTION("a missing key file") {
    const auto file =
        dir.write("values.yaml", "secretStore:\n  activeKeyFile: /nonexistent/active.key\n");
    const std::string err = load_error({file});
    CHECK(err.find(file + ":2 secretStore.activeKeyFile") != std::string::npos);
    CHECK(err.find("/nonexistent/active.key") != std::string::npos);
    CHECK(err.find("No such file") != std::string::npos);
  }
  SECTION("an empty key file") {
    dir.write("empty.key", "\n");
    const auto file = dir.write("values.yaml", "secretStore: {rollingKeyFile: empty.key}\n");
    CHECK(load_error({file}).find("empty.key is empty") != std::string::npos);
  }
  SECTION("an inline active key and an active key file at once") {
    dir.write("active.key", kActive);
    const auto file = dir.write("values.yaml", "secretStore:\n  activeKey: \"" + kActive +
                                                   "\"\n  activeKeyFile: active.key\n");
    const std::string err = load_error({file});
    CHECK(err.find("not both") != std::string::npos);
    CHECK(err.find(kActive) == std::string::npos);
  }
}

TEST_CASE("a YAML syntax error names the file, the line and the key", "[config]") {
  TempDir dir;
  const auto file = dir.write("values.yaml", R"(secretStore:
  activeKey: ")" + kActive + R"("
keyMigration:
  target:
    table: [users
  batchSize: 10
)");
  const std::string err = load_error({file});
  CHECK(err.find(file + ":") == 0);
  CHECK(err.find("YAML syntax error") != std::string::npos);
  CHECK(err.find("keyMigration") != std::string::npos);
  CHECK(err.find(kActive) == std::string::npos);
  // The line is a number between the opening bracket and the end of the document.
  const auto colon = err.find(':', file.size() + 1);
  const int line = std::stoi(err.substr(file.size() + 1, colon - file.size() - 1));
  CHECK(line >= 5);
  CHECK(line <= 7);
}

TEST_CASE("a missing config file is an error naming it", "[config]") {
  const std::string err = load_error({"/nonexistent/values.yaml"});
  CHECK(err.find("/nonexistent/values.yaml") == 0);
  CHECK(err.find("cannot read") != std::string::npos);
}

TEST_CASE("unknown keys under keyMigration are errors with file, line and key", "[config]") {
  TempDir dir;
  SECTION("a typo at the top of the section") {
    const auto file = dir.write("values.yaml", "keyMigration:\n  batchsize: 10\n");
    const std::string err = load_error({file});
    CHECK(err.find(file + ":2 keyMigration.batchsize: unknown key") == 0);
    CHECK(err.find("batchSize") != std::string::npos);  // the hint lists the real name
  }
  SECTION("a typo inside target") {
    const auto file = dir.write("values.yaml", "keyMigration:\n  target:\n    tabel: users\n");
    CHECK(load_error({file}).find(file + ":3 keyMigration.target.tabel: unknown key") == 0);
  }
  SECTION("a typo in a later file") {
    const auto base = dir.write("values.yaml", "keyMigration: {threads: 2}\n");
    const auto overlay = dir.write("override.yaml", "\nkeyMigration:\n  metrics: {lisen: x}\n");
    CHECK(load_error({base, overlay}).find(overlay + ":3 keyMigration.metrics.lisen") == 0);
  }
  SECTION("an unknown key with no value is named at its own line") {
    // yaml-cpp marks an empty value where it stopped looking: two lines further down here.
    const auto file = dir.write("values.yaml", "keyMigration:\n  batchsize:\n\nsecretStore: {}\n");
    CHECK(load_error({file}).find(file + ":2 keyMigration.batchsize: unknown key") == 0);
  }
  SECTION("other top-level keys of a Helm values file are ignored") {
    const auto file = dir.write("values.yaml", "replicaCount: 3\ningress: {enabled: false}\n");
    CHECK_NOTHROW(cfg::load({file}, kNoEnv));
  }
}

TEST_CASE("a key pasted where a key name belongs is an unknown key that is never quoted",
          "[config]") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"secretStore:\n  " + kActive + ": 1\n", ":2 secretStore.[redacted key]: unknown key"},
      {"keyMigration:\n  " + kActive + ": 1\n", ":2 keyMigration.[redacted key]: unknown key"},
      {"keyMigration:\n  targets:\n    - table: users\n      " + kActive + ": 1\n",
       ":4 keyMigration.targets[0].[redacted key]: unknown key"},
      {"secretStore:\n  rollingKeyFiles:\n    - {path: rolling.key, " + kActive + ": 1}\n",
       ":3 secretStore.rollingKeyFiles[0].[redacted key]: unknown key"},
  };
  for (const auto& [yaml, expected] : cases) {
    INFO(expected);
    const auto file = dir.write("values.yaml", yaml);
    const std::string err = load_error({file});
    CHECK(err.find(file + expected) == 0);
    CHECK(err.find(kActive) == std::string::npos);
    CHECK(err.find(kActive.substr(0, 20)) == std::string::npos);
  }
}

TEST_CASE("a key pasted into a setting whose error quotes the value is not quoted back",
          "[config]") {
  TempDir dir;
  for (const std::string setting : {"lockTimeout", "journalRetention", "throttle.maxReplicaLag"}) {
    INFO(setting);
    const auto dot = setting.find('.');
    const std::string yaml = dot == std::string::npos
                                 ? "keyMigration:\n  " + setting + ": \"" + kActive + "\"\n"
                                 : "keyMigration:\n  " + setting.substr(0, dot) + ":\n    " +
                                       setting.substr(dot + 1) + ": \"" + kActive + "\"\n";
    const auto file = dir.write("values.yaml", yaml);
    const std::string err = load_error({file});
    CHECK(err.find(file + ":") == 0);
    CHECK(err.find("keyMigration." + setting) != std::string::npos);
    CHECK(err.find("[redacted key]") != std::string::npos);
    CHECK(err.find(kActive.substr(0, 20)) == std::string::npos);
  }
}

TEST_CASE("unknown keys under secretStore and userLogin.mfa are errors with file, line and key",
          "[config]") {
  TempDir dir;
  dir.write("rolling.key", kRolling + "\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"secretStore:\n  activeKey: \"" + kActive + "\"\n  rolingKeyFile: rolling.key\n",
       ":3 secretStore.rolingKeyFile: unknown key (known here: "},
      {"userLogin:\n  mfa:\n    enabled: true\n    mandatry: true\n",
       ":4 userLogin.mfa.mandatry: unknown key (known here: "},
      {"userLogin:\n  mfa:\n    rememberMe: {enabled: true, dayz: 3}\n",
       ":3 userLogin.mfa.rememberMe.dayz: unknown key"},
      {"secretStore:\n  rollingKeyFiles:\n    - {path: rolling.key, optinal: true}\n",
       ":3 secretStore.rollingKeyFiles[0].optinal: unknown key (known here: path, optional)"},
      // A misspelt `mfa` would leave the whole policy at its defaults.
      {"userLogin:\n  passwordPolicy: {minLength: 12}\n  mfaa: {mandatory: true}\n",
       ":3 userLogin.mfaa: unknown key: did you mean userLogin.mfa?"},
      {"userLogin:\n  MFA: {mandatory: true}\n", ":2 userLogin.MFA: unknown key: did you mean"},
      {"userLogin:\n  mf: {mandatory: true}\n", ":2 userLogin.mf: unknown key: did you mean"},
      {"userLogin:\n  mfx: {mandatory: true}\n", ":2 userLogin.mfx: unknown key: did you mean"},
  };
  for (const auto& [yaml, expected] : cases) {
    INFO(yaml);
    const auto file = dir.write("values.yaml", yaml);
    const std::string err = load_error({file});
    CHECK(err.find(file + expected) == 0);
    CHECK(err.find(kActive) == std::string::npos);
  }
  SECTION("the hint names the real keys") {
    const auto file = dir.write("values.yaml", "secretStore: {rolingKeyFile: rolling.key}\n");
    CHECK(load_error({file}).find("rollingKeyFile") != std::string::npos);
    const auto mfa = dir.write("values.yaml", "userLogin: {mfa: {mandatry: true}}\n");
    CHECK(load_error({mfa}).find("mandatory") != std::string::npos);
  }
  SECTION("userLogin's other settings and the rest of the file stay the chart's") {
    const auto file = dir.write("values.yaml",
                                "replicaCount: 3\nuserLogin:\n  passwordPolicy: {minLength: 12}\n"
                                "  mfaIssuer: Example\n  sso: {enabled: false}\n"
                                "  mfa: {enabled: true}\n");
    CHECK(cfg::load({file}, kNoEnv).mfa.enabled);
  }
}

TEST_CASE("rollingKeyFiles is a list of key files, read in order after the other rolling keys",
          "[config]") {
  TempDir dir;
  dir.write("r1.key", kRolling + "\n");
  dir.write("r2.key", kRolling2 + "\n");
  const auto file = dir.write("values.yaml", "secretStore:\n  activeKey: \"" + kActive +
                                                 "\"\n  rollingKeyFiles:\n    - r1.key\n"
                                                 "    - {path: r2.key, optional: true}\n");
  const cfg::Config c = cfg::load({file}, kNoEnv);
  REQUIRE(c.rolling_keys.size() == 2);
  CHECK(c.rolling_keys[0].text.view() == kRolling);
  CHECK(c.rolling_keys[0].key_file == dir.path() + "/r1.key");
  CHECK(c.rolling_keys[0].origin.describe() == file + ":4 secretStore.rollingKeyFiles[0]");
  CHECK(c.rolling_keys[1].text.view() == kRolling2);
  CHECK(c.rolling_keys[1].origin.describe() == file + ":5 secretStore.rollingKeyFiles[1]");
  CHECK(c.warnings.empty());
  SECTION("not a list") {
    const auto bad = dir.write("values.yaml", "secretStore: {rollingKeyFiles: r1.key}\n");
    CHECK(load_error({bad}).find(bad + ":1 secretStore.rollingKeyFiles: expected a list") == 0);
  }
}

TEST_CASE("an optional key file that does not exist is skipped with a warning", "[config]") {
  TempDir dir;
  dir.write("r1.key", kRolling + "\n");
  SECTION("in rollingKeyFiles") {
    const auto file = dir.write("values.yaml", "secretStore:\n  activeKey: \"" + kActive +
                                                   "\"\n  rollingKeyFiles:\n    - r1.key\n"
                                                   "    - {path: gone.key, optional: true}\n");
    const cfg::Config c = cfg::load({file}, kNoEnv);
    REQUIRE(c.rolling_keys.size() == 1);
    CHECK(c.rolling_keys[0].text.view() == kRolling);
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0].find(file + ":5 secretStore.rollingKeyFiles[1]: optional key file " +
                             dir.path() + "/gone.key does not exist") == 0);
  }
  SECTION("as rollingKeyFile") {
    const auto file = dir.write(
        "values.yaml", "secretStore:\n  rollingKeyFile: {path: gone.key, optional: true}\n");
    const cfg::Config c = cfg::load({file}, kNoEnv);
    CHECK(c.rolling_keys.empty());
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0].find("secretStore.rollingKeyFile: optional key file") != std::string::npos);
  }
  SECTION("a key file not marked optional is still an error, with the way out") {
    const auto file = dir.write("values.yaml", "secretStore:\n  rollingKeyFiles: [gone.key]\n");
    const std::string err = load_error({file});
    CHECK(err.find(file + ":2 secretStore.rollingKeyFiles[0]: cannot read key file") == 0);
    CHECK(err.find("optional: true") != std::string::npos);
  }
  SECTION("optional covers absence only: an unreadable file is an error") {
    if (::geteuid() == 0) {
      WARN("root reads any file; the unreadable case is left to a non-root run");
      return;
    }
    dir.write("locked.key", kRolling + "\n", 0000);
    const auto file = dir.write(
        "values.yaml", "secretStore:\n  rollingKeyFile: {path: locked.key, optional: true}\n");
    CHECK(load_error({file}).find("Permission denied") != std::string::npos);
  }
  SECTION("the active key file cannot be optional") {
    const auto file =
        dir.write("values.yaml", "secretStore:\n  activeKeyFile: {path: r1.key, optional: true}\n");
    CHECK(load_error({file}).find(file + ":2 secretStore.activeKeyFile: expected the path") == 0);
  }
  SECTION("optional must be a boolean") {
    const auto file = dir.write(
        "values.yaml", "secretStore:\n  rollingKeyFile: {path: r1.key, optional: maybe}\n");
    CHECK(load_error({file}).find(
              file + ":2 secretStore.rollingKeyFile.optional: expected true or false") == 0);
  }
}

TEST_CASE("a values file holding inline keys and readable by others gives a warning", "[config]") {
  TempDir dir;
  const std::string keys = "secretStore:\n  activeKey: \"" + kActive + "\"\n";
  SECTION("readable by others") {
    const auto file = dir.write("values.yaml", keys, 0644);
    const cfg::Config c = cfg::load({file}, kNoEnv);
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0].find(file + ": holds keys (secretStore) and is readable by others (mode "
                                    "0644)") == 0);
    CHECK(c.warnings[0].find(kActive) == std::string::npos);
  }
  SECTION("readable by its group") {
    const auto file =
        dir.write("values.yaml", "secretStore:\n  rollingKeys: [\"" + kRolling + "\"]\n", 0640);
    const cfg::Config c = cfg::load({file}, kNoEnv);
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0].find("is readable by its group (mode 0640)") != std::string::npos);
  }
  SECTION("mode 0600, or no inline keys, is fine") {
    const auto closed = dir.write("values.yaml", keys, 0600);
    CHECK(cfg::load({closed}, kNoEnv).warnings.empty());
    const auto no_keys = dir.write("other.yaml", "secretStore: {rollingKey: \"\"}\n", 0644);
    CHECK(cfg::load({no_keys}, kNoEnv).warnings.empty());
  }
}

TEST_CASE("type errors name the file, line and key, never a key text", "[config]") {
  TempDir dir;
  struct Case {
    std::string yaml;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"keyMigration:\n  batchSize: lots\n", ":2 keyMigration.batchSize: expected a whole number"},
      {"keyMigration:\n  journal: maybe\n", ":2 keyMigration.journal: expected true or false"},
      {"keyMigration:\n  target: users\n", ":2 keyMigration.target: expected a map"},
      {"keyMigration:\n  target:\n    table: {a: b}\n",
       ":3 keyMigration.target.table: expected a value"},
      {"keyMigration:\n  target:\n    sysAdminColumns: is_staff\n",
       ":3 keyMigration.target.sysAdminColumns: expected a list"},
      {"userLogin:\n  mfa:\n    enabled: sometimes\n",
       ":3 userLogin.mfa.enabled: expected true or false"},
      {"secretStore:\n  activeKey: [\"" + kActive + "\"]\n",
       ":2 secretStore.activeKey: expected a key"},
      {"secretStore:\n  rollingKeys: \"" + kRolling + "\"\n",
       ":2 secretStore.rollingKeys: expected a list"},
      {"secretStore:\n  rollingKeys:\n    - \"" + kRolling + "\"\n    - {}\n",
       ":4 secretStore.rollingKeys[1]: expected a key"},
      {"keyMigration:\n  lockTimeout: soon\n",
       ":2 keyMigration.lockTimeout: 'soon' is not a duration"},
      {"keyMigration:\n  schedule: {every: 0}\n", ":2 keyMigration.schedule.every: must be longer"},
      {"keyMigration:\n  schedule:\n    at: \"25:00\"\n",
       ":3 keyMigration.schedule.at: expected a UTC time"},
      {"- just\n- a list\n", ":1: expected a map at the top"},
  };
  for (const auto& c : cases) {
    INFO(c.yaml);
    const auto file = dir.write("values.yaml", c.yaml);
    const std::string err = load_error({file});
    CHECK(err.find(file + c.expected) == 0);
    CHECK(err.find(kActive) == std::string::npos);
    CHECK(err.find(kRolling) == std::string::npos);
  }
}

TEST_CASE("numbers out of range and empty identifiers are errors", "[config]") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"keyMigration: {batchSize: 0}", "keyMigration.batchSize: 0 is out of range (1..1000000)"},
      {"keyMigration: {batchSize: 1000001}", "keyMigration.batchSize: 1000001 is out of range"},
      {"keyMigration: {threads: -1}", "keyMigration.threads: -1 is out of range (0..1024)"},
      {"keyMigration: {threads: 1025}", "keyMigration.threads: 1025 is out of range"},
      {"keyMigration: {maxRowsPerSecond: -5}",
       "keyMigration.maxRowsPerSecond: -5 is out of range (0..1000000000)"},
      {"keyMigration: {maxRowsPerSecond: 9223372036854775807}",
       "keyMigration.maxRowsPerSecond: 9223372036854775807 is out of range (0..1000000000)"},
      {"userLogin: {mfa: {rememberMe: {days: -1}}}",
       "userLogin.mfa.rememberMe.days: -1 is out of range"},
      {"keyMigration: {target: {table: \"\"}}", "keyMigration.target.table: must not be empty"},
      {"keyMigration: {target: {idColumn: \"\"}}",
       "keyMigration.target.idColumn: must not be empty"},
      {"keyMigration: {target: {secretColumn: \"\"}}",
       "keyMigration.target.secretColumn: must not be empty"},
      {"keyMigration: {target: {sysAdminColumns: [is_staff, \"\"]}}",
       "keyMigration.target.sysAdminColumns[1]: must not be empty"},
  };
  for (const auto& [yaml, expected] : cases) {
    INFO(yaml);
    const auto file = dir.write("values.yaml", yaml + "\n");
    const std::string err = load_error({file});
    CHECK(err.find(file + ":1 " + expected) == 0);
  }
  SECTION("the edges of each range are accepted") {
    const auto file =
        dir.write("values.yaml",
                  "keyMigration: {batchSize: 1000000, threads: 1024, maxRowsPerSecond: "
                  "1000000000}\n"
                  "userLogin: {mfa: {rememberMe: {days: 0}}}\n");
    const cfg::Config c = cfg::load({file}, kNoEnv);
    CHECK(c.migration.batch_size == 1000000);
    CHECK(c.migration.threads == 1024);
    CHECK(c.migration.max_rows_per_second == cfg::kMaxRowsPerSecond);
    CHECK(c.mfa.remember_me_days == 0);
  }
}

TEST_CASE("a duplicate key where keymig reads is an error naming the key and both lines",
          "[config]") {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"secretStore:\n  activeKey: a\n  rollingKey: b\n  activeKey: c\n",
       ":4 secretStore.activeKey: duplicate key (first at line 2)"},
      {"keyMigration:\n  threads: 1\n  threads: 2\n",
       ":3 keyMigration.threads: duplicate key (first at line 2)"},
      {"keyMigration:\n  metrics: {listen: \"127.0.0.1:1\", listen: \"127.0.0.1:2\"}\n",
       ":2 keyMigration.metrics.listen: duplicate key"},
      {"keyMigration: {}\nuserLogin: {}\nkeyMigration: {}\n",
       ":3 keyMigration: duplicate key (first at line 1)"},
      {"userLogin:\n  mfa:\n    rememberMe: {days: 1, days: 2}\n",
       ":3 userLogin.mfa.rememberMe.days: duplicate key"},
  };
  for (const auto& [yaml, expected] : cases) {
    INFO(yaml);
    const auto file = dir.write("values.yaml", yaml);
    const std::string err = load_error({file});
    CHECK(err.find(file + expected) == 0);
  }
  SECTION("the chart's own keys are the chart's business") {
    const auto file =
        dir.write("values.yaml", "image: a\nimage: b\nuserLogin: {theme: x, theme: y}\n");
    CHECK_NOTHROW(cfg::load({file}, kNoEnv));
  }
}

TEST_CASE("metrics.listen and pushGateway go through the checks app passes, with file and line",
          "[config]") {
  TempDir dir;
  cfg::SettingChecks checks;
  checks.listen_address = [](const std::string& v) { return v == "good" ? "" : "bad address"; };
  checks.push_gateway = [](const std::string& v) { return v == "good" ? "" : "bad gateway"; };
  auto load_with = [&](const std::string& file) {
    try {
      (void)cfg::load({file}, kNoEnv, checks);
    } catch (const cfg::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto file = dir.write("values.yaml", "keyMigration:\n  metrics: {listen: \"nonsense\"}\n");
  CHECK(load_with(file) == file + ":2 keyMigration.metrics.listen: bad address");
  CHECK_NOTHROW(cfg::load({file}, kNoEnv));  // no check given: accepted
  file = dir.write("values.yaml", "keyMigration:\n  metrics:\n    pushGateway: \"x\"\n");
  CHECK(load_with(file) == file + ":3 keyMigration.metrics.pushGateway: bad gateway");
  file = dir.write("values.yaml", "keyMigration:\n  metrics: {listen: good, pushGateway: good}\n");
  CHECK(load_with(file).empty());
  // An empty pushGateway means "no push": not checked.
  file = dir.write("values.yaml", "keyMigration:\n  metrics: {pushGateway: \"\"}\n");
  CHECK(load_with(file).empty());
}

TEST_CASE("durations and times of day parse as operators write them", "[config]") {
  const cfg::Origin origin{"values.yaml", 3, "keyMigration.schedule.every"};
  CHECK(cfg::parse_duration("6h", origin) == std::chrono::seconds(21600));
  CHECK(cfg::parse_duration("30m", origin) == std::chrono::seconds(1800));
  CHECK(cfg::parse_duration("1d", origin) == std::chrono::seconds(86400));
  CHECK(cfg::parse_duration("1h30m", origin) == std::chrono::seconds(5400));
  CHECK(cfg::parse_duration_ms("2s", origin) == std::chrono::milliseconds(2000));
  CHECK(cfg::parse_duration_ms("250ms", origin) == std::chrono::milliseconds(250));
  CHECK(cfg::parse_duration_ms("0", origin) == std::chrono::milliseconds(0));
  CHECK(cfg::parse_time_of_day("02:00", origin) == 120);
  CHECK(cfg::parse_time_of_day("23:59", origin) == 1439);
  CHECK(cfg::parse_time_of_day("7:05", origin) == 425);
  for (const char* bad : {"", "6", "h", "6 hours", "-1h", "1.5h", "6x"}) {
    INFO(bad);
    CHECK_THROWS_WITH(cfg::parse_duration(bad, origin),
                      Catch::StartsWith("values.yaml:3 keyMigration.schedule.every: "));
  }
  CHECK_THROWS_AS(cfg::parse_duration("500ms", origin), cfg::ConfigError);
  for (const char* bad : {"24:00", "12:60", "noon", "1200", "12:5"}) {
    INFO(bad);
    CHECK_THROWS_AS(cfg::parse_time_of_day(bad, origin), cfg::ConfigError);
  }
}

TEST_CASE("journalRetention is a duration of at least 1h, off when absent, empty or 0",
          "[config]") {
  TempDir dir;
  CHECK_FALSE(cfg::load({dir.write("a.yaml", "keyMigration: {}\n")}, kNoEnv)
                  .migration.journal_retention.has_value());
  for (const char* off : {"\"\"", "0"}) {
    INFO(off);
    const auto file = dir.write("b.yaml", std::string("keyMigration:\n  journalRetention: ") + off);
    CHECK_FALSE(cfg::load({file}, kNoEnv).migration.journal_retention.has_value());
  }
  const auto week = dir.write("c.yaml", "keyMigration:\n  journalRetention: 7d\n");
  CHECK(cfg::load({week}, kNoEnv).migration.journal_retention == std::chrono::hours(7 * 24));
  const auto short_one = dir.write("d.yaml", "keyMigration:\n  journalRetention: 30m\n");
  CHECK(load_error({short_one})
            .find(short_one + ":2 keyMigration.journalRetention: must be at "
                              "least 1h") == 0);
  const auto list = dir.write("e.yaml", "keyMigration:\n  journalRetention: [7d]\n");
  CHECK(load_error({list}).find(list + ":2 keyMigration.journalRetention: expected a duration") ==
        0);
}

TEST_CASE("throttle.adaptive is on unless set to false, with file, line and key on errors",
          "[config][throttle]") {
  TempDir dir;
  CHECK(cfg::load({dir.write("none.yaml", "")}, kNoEnv).migration.throttle.adaptive);
  const auto off = dir.write("off.yaml", "keyMigration:\n  throttle:\n    adaptive: false\n");
  CHECK_FALSE(cfg::load({off}, kNoEnv).migration.throttle.adaptive);
  const auto bad = dir.write("bad.yaml", "keyMigration:\n  throttle:\n    adaptive: often\n");
  CHECK(load_error({bad}).find(bad + ":3 keyMigration.throttle.adaptive: expected true or false") ==
        0);
}

TEST_CASE("control.tokenFile is read relative to its values file, off when absent",
          "[config][control]") {
  TempDir dir;
  const auto none = cfg::load({dir.write("none.yaml", "")}, kNoEnv).migration.control;
  CHECK(none.token_file.empty());
  CHECK(none.token == nullptr);
  const std::string token = "s3cret-token-0123456789abcdef";
  dir.write("control.token", token + "\n");
  const auto file =
      dir.write("values.yaml", "keyMigration:\n  control:\n    tokenFile: control.token\n");
  const auto c = cfg::load({file}, kNoEnv).migration.control;
  CHECK(c.token_file == dir.path() + "/control.token");
  REQUIRE(c.token != nullptr);
  CHECK(c.token->view() == token);  // trimmed of its newline

  SECTION("a token file others may read is refused, naming file, line and key") {
    dir.write("open.token", token, 0644);
    const auto open =
        dir.write("open.yaml", "keyMigration:\n  control:\n    tokenFile: open.token\n");
    const auto e = load_error({open});
    CHECK(e.find(open + ":3 keyMigration.control.tokenFile: token file") == 0);
    CHECK(e.find("readable by others (mode 0644)") != std::string::npos);
    CHECK(e.find(token) == std::string::npos);
  }
  SECTION("a missing, empty or short token file is an error") {
    const auto missing =
        dir.write("missing.yaml", "keyMigration:\n  control:\n    tokenFile: nope.token\n");
    CHECK(load_error({missing}).find(missing + ":3 keyMigration.control.tokenFile: cannot read") ==
          0);
    dir.write("empty.token", "\n");
    const auto empty =
        dir.write("empty.yaml", "keyMigration:\n  control:\n    tokenFile: empty.token\n");
    CHECK(load_error({empty}).find("is empty") != std::string::npos);
    dir.write("short.token", "abc");
    const auto shrt =
        dir.write("short.yaml", "keyMigration:\n  control:\n    tokenFile: short.token\n");
    CHECK(load_error({shrt}).find("fewer than 16 characters") != std::string::npos);
  }
  SECTION("a typo under control is an unknown key") {
    const auto typo = dir.write("typo.yaml", "keyMigration:\n  control:\n    tokenfile: x\n");
    CHECK(load_error({typo}).find(typo + ":3 keyMigration.control.tokenfile") == 0);
  }
}
