#include "keymig/engine/mfa_admin.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/journal.hpp"
#include "keymig/db/target.hpp"

using keymig::db::Selection;
using keymig::engine::UserStatus;

namespace {

struct Ring {
  keymig::crypto::Key active_copy = keymig::crypto::Key::generate();
  keymig::crypto::Key rolling_copy = keymig::crypto::Key::generate();
  keymig::crypto::Key other = keymig::crypto::Key::generate();
  keymig::crypto::KeyRing ring = make();

  keymig::crypto::KeyRing make() {
    std::vector<keymig::crypto::Key> rolling;
    rolling.push_back(keymig::crypto::Key::parse(rolling_copy.encode().view()));
    return keymig::crypto::KeyRing(keymig::crypto::Key::parse(active_copy.encode().view()),
                                   std::move(rolling));
  }
  std::string token_under(const keymig::crypto::Key& key, std::string_view plain) {
    keymig::crypto::Fernet f(keymig::crypto::Key::parse(key.encode().view()));
    return std::string(f.encrypt(plain).view());
  }
};

UserStatus classify(Ring& r, std::string_view token, bool is_null, std::optional<bool> flag,
                    bool has_flag = true, bool admin = false) {
  return keymig::engine::classify_user(r.ring, "7", "alice", token, is_null, flag, has_flag, admin);
}

}  // namespace

TEST_CASE("a user list splits on commas and keeps empty items for refusal", "[engine][mfa]") {
  using keymig::engine::split_list;
  CHECK(split_list("a,b, c ") == std::vector<std::string>{"a", "b", "c"});
  CHECK(split_list("") == std::vector<std::string>{""});
  CHECK(split_list("a,,b") == std::vector<std::string>{"a", "", "b"});
  CHECK(split_list("a,") == std::vector<std::string>{"a", ""});
}

TEST_CASE("a selection with patterns, empty items or both kinds is refused", "[engine][mfa]") {
  using keymig::engine::validate_selection;
  keymig::db::Selection s;
  SECTION("empty") {
    CHECK_THROWS_AS(validate_selection(s, false), keymig::UsageError);
    CHECK_NOTHROW(validate_selection(s, true));
  }
  SECTION("patterns") {
    for (const char* p : {"user%", "user*", "us?r", "%"}) {
      s.usernames = {"bob", p};
      CHECK_THROWS_AS(validate_selection(s, false), keymig::UsageError);
      CHECK_THROWS_AS(validate_selection(s, true), keymig::UsageError);
    }
    s.usernames.clear();
    s.ids = {"1%"};
    CHECK_THROWS_AS(validate_selection(s, false), keymig::UsageError);
  }
  SECTION("an empty item") {
    s.usernames = {"bob", ""};
    CHECK_THROWS_AS(validate_selection(s, false), keymig::UsageError);
  }
  SECTION("ids and usernames at once select both") {
    s.usernames = {"bob"};
    s.ids = {"1"};
    CHECK_NOTHROW(validate_selection(s, false));
    s.ids = {"1", "2*"};
    CHECK_THROWS_AS(validate_selection(s, false), keymig::UsageError);
  }
  SECTION("exact names pass, underscores included") {
    s.usernames = {"bob", "first_last", "a.b@example.org"};
    CHECK_NOTHROW(validate_selection(s, false));
  }
}

TEST_CASE("a user's MFA state comes from which key verifies the secret", "[engine][mfa]") {
  Ring r;
  SECTION("no secret: NULL or empty") {
    auto u = classify(r, "", true, false);
    CHECK_FALSE(u.mfa);
    CHECK_FALSE(u.fernet_active);
    CHECK_FALSE(u.flag_wrong);
    CHECK_FALSE(classify(r, "", false, std::nullopt).mfa);
    CHECK(classify(r, "", true, true).flag_wrong);  // flag true without a secret
  }
  SECTION("under the active key") {
    auto u = classify(r, r.token_under(r.active_copy, "JBSWY3DPEHPK3PXP"), false, true);
    CHECK(u.mfa);
    CHECK(u.key_index == 0);
    CHECK(u.fernet_active);
    CHECK_FALSE(u.flag_wrong);
    CHECK(classify(r, r.token_under(r.active_copy, "x"), false, false).flag_wrong);
    CHECK(classify(r, r.token_under(r.active_copy, "x"), false, std::nullopt).flag_wrong);
  }
  SECTION("under a rolling key") {
    auto u = classify(r, r.token_under(r.rolling_copy, "x"), false, true);
    CHECK(u.key_index == 1);
    CHECK_FALSE(u.fernet_active);
    CHECK(u.flag_wrong);
    CHECK_FALSE(u.unreadable());
  }
  SECTION("under a key that is not configured, or malformed") {
    auto u = classify(r, r.token_under(r.other, "x"), false, false);
    CHECK(u.unreadable());
    CHECK(u.reason == keymig::crypto::Reason::unknown_key);
    CHECK_FALSE(u.flag_wrong);
    auto junk = classify(r, "not a token", false, false);
    CHECK(junk.unreadable());
    CHECK(junk.reason != keymig::crypto::Reason::ok);
  }
  SECTION("without a flag column nothing is a wrong flag") {
    CHECK_FALSE(
        classify(r, r.token_under(r.rolling_copy, "x"), false, std::nullopt, false).flag_wrong);
  }
}

TEST_CASE("status counts add up per key, reason and sysadmin", "[engine][mfa]") {
  Ring r;
  keymig::engine::StatusReport report;
  report.by_key = {{0, "active", r.ring.fingerprint(0), 0},
                   {1, "rolling_0", r.ring.fingerprint(1), 0}};
  report.add(classify(r, r.token_under(r.active_copy, "a"), false, true));
  report.add(classify(r, r.token_under(r.rolling_copy, "b"), false, true, true, true));
  report.add(classify(r, r.token_under(r.other, "c"), false, false, true, true));
  report.add(classify(r, "", true, false, true, true));
  CHECK(report.users == 4);
  CHECK(report.with_mfa == 3);
  CHECK(report.without_mfa == 1);
  CHECK(report.by_key[0].users == 1);
  CHECK(report.by_key[1].users == 1);
  CHECK(report.undecryptable_total == 1);
  CHECK(report.undecryptable.at("unknown_key") == 1);
  CHECK(report.wrong_flag == 1);
  CHECK(report.sysadmins == 3);
  CHECK(report.sysadmins_without_mfa == 1);
  CHECK(report.sysadmins_unreadable == 1);
}

TEST_CASE("the pre-flight fails only when someone would be locked out", "[engine][mfa]") {
  keymig::engine::PreflightReport report;
  CHECK(report.exit_code() == keymig::kExitOk);
  report.sysadmins_at_risk.push_back({"1", "root", "no_mfa", true});
  CHECK(report.exit_code() == keymig::kExitOk);
  report.locked_out = 1;
  CHECK(report.exit_code() == keymig::kExitNeedsRolling);
  auto text = keymig::engine::format_preflight(report);
  CHECK(text.find("locked out") != std::string::npos);
}

TEST_CASE("reset-mfa clears exactly the named users and rollback restores them",
          "[engine][mfa][db]") {
  const char* dsn = std::getenv("KEYMIG_TEST_DSN");
  if (dsn == nullptr || *dsn == '\0') {
    WARN("KEYMIG_TEST_DSN not set: database test skipped");
    return;
  }
  Ring r;
  const std::string active = r.token_under(r.active_copy, "A");
  const std::string rolling = r.token_under(r.rolling_copy, "B");
  {
    pqxx::connection c(dsn);
    pqxx::work tx(c);
    tx.exec("DROP TABLE IF EXISTS mfa_admin_users");
    tx.exec(
        "CREATE TABLE mfa_admin_users (id int PRIMARY KEY, username text, mfa_secret text,"
        " mfa_fernet_active boolean, is_staff boolean, is_superuser boolean)");
    tx.exec_params(
        "INSERT INTO mfa_admin_users VALUES (1, 'ann', $1, true, false, false),"
        " (2, 'bob', $2, false, true, false), (3, 'cy', NULL, false, false, true)",
        active, rolling);
    tx.commit();
  }
  keymig::config::Config config;
  config.migration.target.table = "mfa_admin_users";
  keymig::db::ConnectOptions options;
  options.dsn = dsn;
  keymig::db::Connection conn(options);

  auto status = keymig::engine::mfa_status(conn, config, r.ring, {});
  CHECK(status.users == 3);
  CHECK(status.with_mfa == 2);
  CHECK(status.by_key[0].users == 1);
  CHECK(status.by_key[1].users == 1);
  CHECK(status.sysadmins == 2);
  CHECK(status.sysadmins_without_mfa == 1);

  keymig::db::Selection unknown;
  unknown.usernames = {"ann", "nobody"};
  CHECK_THROWS_AS(keymig::engine::plan_reset_mfa(conn, config, r.ring, unknown),
                  keymig::UsageError);

  keymig::db::Selection sel;
  sel.usernames = {"ann", "bob"};
  auto plan = keymig::engine::plan_reset_mfa(conn, config, r.ring, sel);
  REQUIRE(plan.users.size() == 2);
  auto result = keymig::engine::reset_mfa(conn, config, r.ring, plan);
  {
    pqxx::connection c(dsn);
    pqxx::work tx(c);
    auto rows = tx.exec(
        "SELECT count(*) FROM mfa_admin_users WHERE mfa_secret IS NULL"
        " AND NOT mfa_fernet_active");
    CHECK(rows[0][0].as<int>() == 3);
    auto run =
        tx.exec_params("SELECT kind, state FROM keymig.runs WHERE run_id = $1", result.run_id);
    REQUIRE(run.size() == 1);
    CHECK(run[0][0].as<std::string>() == "reset_mfa");
  }

  keymig::db::Table table = keymig::db::check_target(
      conn, {"mfa_admin_users", "id", "mfa_secret", "mfa_fernet_active", "username"});
  auto page = keymig::db::rollback_page(conn, table, result.run_id, std::nullopt, 100);
  CHECK(page.restored.size() == 2);
  pqxx::connection c(dsn);
  pqxx::work tx(c);
  auto rows = tx.exec("SELECT mfa_secret, mfa_fernet_active FROM mfa_admin_users ORDER BY id");
  CHECK(rows[0][0].as<std::string>() == active);
  CHECK(rows[0][1].as<bool>());
  CHECK(rows[1][0].as<std::string>() == rolling);
  CHECK_FALSE(rows[1][1].as<bool>());
  CHECK(rows[2][0].is_null());
  tx.exec("DROP TABLE mfa_admin_users");
  tx.commit();
}
