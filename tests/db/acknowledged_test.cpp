#include "keymig/db/acknowledged.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("acknowledged rows are recorded with who and why, per target, and forgotten",
          "[db][acknowledged]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  const std::string stamp =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  const std::string target = "h1_ack.users-" + stamp + ".mfa_secret";
  const std::string other = "h1_ack.other-" + stamp + ".mfa_secret";
  CHECK(keymig::db::acknowledged_ids(conn, target).empty());

  CHECK(keymig::db::add_acknowledged(conn, target, {"10", "9", "x y"}, "lost key", "alice") == 3);
  CHECK(keymig::db::add_acknowledged(conn, other, {"9"}, "elsewhere", "bob") == 1);
  // Again: the newer reason and name win, no second row.
  CHECK(keymig::db::add_acknowledged(conn, target, {"9"}, "lost key (INC-1)", "carol") == 1);

  const auto ids = keymig::db::acknowledged_ids(conn, target);
  CHECK(ids == std::unordered_set<std::string>{"9", "10", "x y"});
  const auto rows = keymig::db::list_acknowledged(conn, target);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].row_id == "9");  // numbers in their natural order
  CHECK(rows[0].reason == "lost key (INC-1)");
  CHECK(rows[0].acknowledged_by == "carol");
  CHECK_FALSE(rows[0].acknowledged_at.empty());
  CHECK(rows[1].row_id == "10");
  CHECK(rows[1].acknowledged_by == "alice");

  auto removed = keymig::db::remove_acknowledged(conn, target, {"10", "11"});
  CHECK(removed == std::vector<std::string>{"10"});
  CHECK(keymig::db::acknowledged_ids(conn, target) == std::unordered_set<std::string>{"9", "x y"});
  CHECK(keymig::db::acknowledged_ids(conn, other) == std::unordered_set<std::string>{"9"});
  sql("DELETE FROM keymig.acknowledged WHERE target IN ('" + target + "', '" + other + "')");
}
