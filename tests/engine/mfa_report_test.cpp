#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "keymig/engine/mfa_admin.hpp"
#include "mfa_ring.hpp"

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

TEST_CASE("status counts and lists users whose secret is a token encrypted twice",
          "[engine][mfa]") {
  Ring r;
  keymig::engine::StatusReport report;
  report.by_key = {{0, "active", r.ring.fingerprint(0), 0},
                   {1, "rolling_0", r.ring.fingerprint(1), 0}};
  const std::string inner = r.token_under(r.other, "JBSWY3DPEHPK3PXP");
  auto twice = classify(r, r.token_under(r.rolling_copy, inner), false, false);
  CHECK(twice.double_encrypted);
  CHECK(twice.key_index == 1);  // still a rolling-key user: readable, to be rotated
  CHECK_FALSE(twice.unreadable());
  CHECK_FALSE(
      classify(r, r.token_under(r.active_copy, "JBSWY3DPEHPK3PXP"), false, true).double_encrypted);
  report.add(twice);
  report.add(classify(r, r.token_under(r.active_copy, inner), false, true));
  report.add(classify(r, r.token_under(r.active_copy, "x"), false, true));
  CHECK(report.double_encrypted == 2);
  CHECK(report.double_encrypted_ids == std::vector<std::string>{"7", "7"});
  CHECK(report.by_key[0].users == 2);
  CHECK(report.by_key[1].users == 1);
  const std::string json = report.to_json();
  CHECK(json.find("\"double_encrypted\":2") != std::string::npos);
  CHECK(json.find(inner) == std::string::npos);
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
