#include "keymig/db/rows.hpp"

#include <catch2/catch.hpp>
#include <set>

#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::db::TargetSpec;

namespace {

std::vector<std::string> page_all(keymig::db::Connection& conn, const keymig::db::Table& t,
                                  std::int64_t limit, std::optional<std::string> upto = {}) {
  std::vector<std::string> ids;
  keymig::db::PageQuery q;
  q.limit = limit;
  q.upto = upto;
  while (true) {
    auto rows = keymig::db::read_page(conn, t, q);
    for (const auto& r : rows) ids.push_back(r.id);
    if (static_cast<std::int64_t>(rows.size()) < limit) break;
    q.after = rows.back().id;
  }
  return ids;
}

}  // namespace

TEST_CASE("keyset pages visit every row once in the id's own order", "[db][rows]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_rows CASCADE; CREATE SCHEMA h3a_rows;"
      "CREATE TABLE h3a_rows.b (id bigint PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.b SELECT g, 'x' || g FROM generate_series(1, 1003) g;"
      "CREATE TABLE h3a_rows.u (id uuid PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.u SELECT md5(g::text)::uuid, 'x' FROM generate_series(1, 257) g;"
      "CREATE TABLE h3a_rows.t (id text PRIMARY KEY, s text);"
      "INSERT INTO h3a_rows.t SELECT 'k' || g, 'x' FROM generate_series(1, 301) g;"
      "INSERT INTO h3a_rows.t VALUES ('with \"quote', 'y'), ('back\\slash', 'y'), ('', 'z');");
  keymig::db::Connection conn(test_options());

  SECTION("bigint ids compare as numbers, not text") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.b", "id", "s", "", "", "", true});
    auto ids = page_all(conn, t, 100);
    REQUIRE(ids.size() == 1003);
    for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == std::to_string(i + 1));
    auto bounded = page_all(conn, t, 7, std::string("50"));
    CHECK(bounded.size() == 50);
  }
  SECTION("uuid ids") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.u", "id", "s", "", "", "", true});
    auto ids = page_all(conn, t, 10);
    CHECK(ids.size() == 257);
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 257);
    CHECK(ids == page_all(conn, t, 1000));
  }
  SECTION("text ids, including quotes, backslashes and the empty string") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.t", "id", "s", "", "", "", true});
    auto ids = page_all(conn, t, 16);
    CHECK(ids.size() == 304);
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 304);
    auto rows = keymig::db::read_rows(conn, t, {"with \"quote", "back\\slash", "k7", "missing"});
    CHECK(rows.size() == 3);
  }
  SECTION("a selection filters pages and reports what matched nothing") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_rows.b", "id", "s", "", "", "", true});
    keymig::db::Selection f;
    f.ids = {"5", "900", "77777"};
    keymig::db::PageQuery q;
    q.filter = &f;
    auto rows = keymig::db::read_page(conn, t, q);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].id == "5");
    CHECK(keymig::db::missing_selection(conn, t, f) == std::vector<std::string>{"77777"});
    f.ids = {"not-a-number"};
    CHECK_THROWS_AS(keymig::db::missing_selection(conn, t, f), keymig::db::TargetError);
    keymig::db::Selection by_name;
    by_name.usernames = {"ann"};
    CHECK_THROWS_AS(keymig::db::count_rows(conn, t, &by_name), keymig::db::TargetError);
  }
}
