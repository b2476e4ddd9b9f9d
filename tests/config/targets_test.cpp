// keyMigration.targets: a list of targets, the single target as a list of one, names,
// onlyWhere, and the errors an operator's typo gets (config/src/config.cpp).

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "keymig/config/config.hpp"

namespace cfg = keymig::config;

namespace {

class Values {
 public:
  explicit Values(const std::string& text) {
    std::string templ = "/tmp/keymig-targets-test-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    dir_ = templ;
    file_ = dir_ + "/values.yaml";
    std::ofstream(file_) << text;
    ::chmod(file_.c_str(), 0600);
  }
  ~Values() {
    const std::string cmd = "rm -rf '" + dir_ + "'";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }
  Values(const Values&) = delete;
  Values& operator=(const Values&) = delete;
  [[nodiscard]] const std::string& file() const { return file_; }
  [[nodiscard]] cfg::Config load() const {
    return cfg::load({file_}, [](const char*) { return std::optional<std::string>(); });
  }
  [[nodiscard]] std::string error() const {
    try {
      (void)load();
    } catch (const cfg::ConfigError& e) {
      return e.what();
    }
    FAIL("expected a ConfigError");
    return {};
  }

 private:
  std::string dir_;
  std::string file_;
};

const char* kAirflow = R"(keyMigration:
  targets:
    - table: users
    - name: connection.password
      table: connection
      secretColumn: password
      activeFlagColumn: ""
      onlyWhere: {column: is_encrypted, equals: true}
    - table: connection
      secretColumn: extra
      activeFlagColumn: ""
      onlyWhere: {column: is_extra_encrypted}
    - table: public.variable
      secretColumn: val
      onlyWhere:
        column: is_encrypted
        equals: false
)";

}  // namespace

TEST_CASE("keyMigration.targets reads each entry with the fields and defaults of target",
          "[config][targets]") {
  Values v(kAirflow);
  const auto targets = v.load().migration.targets;
  REQUIRE(targets.size() == 4);
  CHECK(targets[0].name == "users");
  CHECK(targets[0].secret_column == "mfa_secret");
  CHECK(targets[0].flag_column == "mfa_fernet_active");
  CHECK(targets[0].only_where.empty());
  CHECK(targets[1].name == "connection.password");
  CHECK(targets[1].flag_column.empty());
  CHECK(targets[1].only_where.column == "is_encrypted");
  CHECK(targets[1].only_where.equals);
  // Unnamed, on a table another entry names too: table.column.
  CHECK(targets[2].name == "connection.extra");
  CHECK(targets[2].only_where.column == "is_extra_encrypted");
  CHECK(targets[2].only_where.equals);
  // Unnamed, schema-qualified: the unqualified table.
  CHECK(targets[3].name == "variable");
  CHECK(targets[3].table == "public.variable");
  CHECK_FALSE(targets[3].only_where.equals);
}

TEST_CASE("the single target is a list of one named after its table", "[config][targets]") {
  SECTION("defaults") {
    Values v("keyMigration: {threads: 2}\n");
    const auto targets = v.load().migration.targets;
    REQUIRE(targets.size() == 1);
    CHECK(targets[0].name == "users");
    CHECK(targets[0].only_where.empty());
  }
  SECTION("with a filter and a name") {
    Values v(
        "keyMigration:\n  target:\n    name: mfa\n    table: app.accounts\n"
        "    onlyWhere: {column: enrolled, equals: true}\n");
    const auto targets = v.load().migration.targets;
    REQUIRE(targets.size() == 1);
    CHECK(targets[0].name == "mfa");
    CHECK(targets[0].table == "app.accounts");
    CHECK(targets[0].only_where.column == "enrolled");
  }
  SECTION("equals without a column is an error") {
    Values v("keyMigration:\n  target:\n    onlyWhere: {equals: true}\n");
    CHECK(v.error().find("needs keyMigration.target.onlyWhere.column") != std::string::npos);
  }
}

TEST_CASE("a targets list that cannot be run is an error naming the entry and its line",
          "[config][targets]") {
  auto error_of = [](const std::string& list) {
    Values v("keyMigration:\n  targets:\n" + list);
    return std::make_pair(v.error(), v.file());
  };
  SECTION("target and targets together") {
    Values v("keyMigration:\n  target: {table: users}\n  targets:\n    - table: devices\n");
    CHECK(v.error().find("not both") != std::string::npos);
  }
  SECTION("an unknown key in an entry") {
    const auto [err, file] = error_of("    - table: a\n    - tabel: b\n");
    CHECK(err.find(file + ":4 keyMigration.targets[1].tabel: unknown key") == 0);
  }
  SECTION("an entry without a table") {
    const auto [err, file] = error_of("    - table: a\n    - secretColumn: b\n");
    CHECK(err.find("keyMigration.targets[1]") != std::string::npos);
    CHECK(err.find("needs table") != std::string::npos);
  }
  SECTION("two names alike") {
    const auto [err, file] = error_of("    - {table: a, name: x}\n    - {table: b, name: x}\n");
    CHECK(err.find("target name 'x' is also the name of keyMigration.targets[0]") !=
          std::string::npos);
  }
  SECTION("one column twice") {
    const auto [err, file] = error_of("    - {table: a, name: x}\n    - {table: a, name: y}\n");
    CHECK(err.find("a.mfa_secret is also keyMigration.targets[0]") != std::string::npos);
  }
  SECTION("a name that cannot be part of a run id") {
    const auto [err, file] = error_of("    - {table: a, name: \"x/y\"}\n    - {table: b}\n");
    CHECK(err.find("target name 'x/y' is not usable") != std::string::npos);
  }
  SECTION("an empty list") {
    Values v("keyMigration:\n  targets: []\n");
    CHECK(v.error().find("at least one target") != std::string::npos);
  }
  SECTION("not a list") {
    Values v("keyMigration:\n  targets: {table: a}\n");
    CHECK(v.error().find("expected a list of targets") != std::string::npos);
  }
  SECTION("onlyWhere without a column, or with a key it does not know") {
    CHECK(error_of("    - {table: a, onlyWhere: {equals: true}}\n").first.find("needs column") !=
          std::string::npos);
    CHECK(error_of("    - {table: a, onlyWhere: {column: c, is: true}}\n")
              .first.find("onlyWhere.is: unknown key") != std::string::npos);
    CHECK(error_of("    - {table: a, onlyWhere: {column: c, equals: maybe}}\n")
              .first.find("expected true or false") != std::string::npos);
  }
  SECTION("a duplicate key in an entry") {
    const auto [err, file] = error_of("    - table: a\n      table: b\n");
    CHECK(err.find("duplicate key") != std::string::npos);
  }
}

TEST_CASE("select_targets keeps config order and names the configured targets on a typo",
          "[config][targets]") {
  Values v(kAirflow);
  const auto all = v.load().migration.targets;
  CHECK(cfg::select_targets(all, {}).size() == 4);
  const auto some = cfg::select_targets(all, {"variable", "users"});
  REQUIRE(some.size() == 2);
  CHECK(some[0].name == "users");
  CHECK(some[1].name == "variable");
  try {
    (void)cfg::select_targets(all, {"varaible"});
    FAIL("expected a ConfigError");
  } catch (const cfg::ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.find("no target named 'varaible'") != std::string::npos);
    CHECK(what.find("users, connection.password, connection.extra, variable") !=
          std::string::npos);
  }
}
