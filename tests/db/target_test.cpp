#include "keymig/db/target.hpp"

#include <catch2/catch.hpp>

#include "keymig/db/error.hpp"
#include "pg_fixture.hpp"

using keymig::db::TargetError;
using keymig::db::TargetSpec;
using namespace keymig::testing;

TEST_CASE("the target check names each problem and accepts good targets", "[db][target]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_target CASCADE; CREATE SCHEMA h3a_target;"
      "CREATE TABLE h3a_target.good (id bigint PRIMARY KEY, mfa text, flag boolean, username text);"
      "CREATE TABLE h3a_target.\"MixedCase\" (\"Id\" uuid PRIMARY KEY, \"Secret\" bytea, \"Flag\" "
      "boolean);"
      "CREATE TABLE h3a_target.nounique (id bigint NOT NULL, mfa text);"
      "CREATE TABLE h3a_target.nullable (id bigint, mfa text); CREATE UNIQUE INDEX ON "
      "h3a_target.nullable (id);"
      "CREATE TABLE h3a_target.wide (a int, b int, mfa text, PRIMARY KEY (a, b));"
      "CREATE TABLE h3a_target.badtypes (id text PRIMARY KEY, mfa int, flag text, vc "
      "varchar(200));");
  keymig::db::Connection conn(test_options());

  SECTION("a schema-qualified table with all columns") {
    auto t = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.good", "id", "mfa", "flag", "username"});
    CHECK(t.label() == "h3a_target.good.mfa");
    CHECK(t.id_type == "bigint");
    CHECK(t.has_flag());
    CHECK_FALSE(t.secret_is_bytea);
    CHECK(t.q_table == "\"h3a_target\".\"good\"");
  }
  SECTION("mixed-case names, uuid ids and a bytea secret") {
    auto t = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.MixedCase", "Id", "Secret", "Flag", ""});
    CHECK(t.id_type == "uuid");
    CHECK(t.secret_is_bytea);
    CHECK(t.q_id == "\"Id\"");
  }
  SECTION("varchar secrets and text ids are fine") {
    auto t = keymig::db::check_target(conn, TargetSpec{"h3a_target.badtypes", "id", "vc", "", ""});
    CHECK(t.id_type == "text");
  }
  auto fails_with = [&](TargetSpec spec, const std::string& words) {
    try {
      (void)keymig::db::check_target(conn, spec);
      FAIL("accepted " + spec.table);
    } catch (const TargetError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(words) != std::string::npos);
    }
  };
  SECTION("each wrong target is a TargetError naming the problem") {
    fails_with({"h3a_target.missing", "id", "mfa", "", ""}, "does not exist");
    fails_with({"h3a_target.good", "nope", "mfa", "", ""}, "id column \"nope\" not found");
    fails_with({"h3a_target.nounique", "id", "mfa", "", ""}, "not unique");
    fails_with({"h3a_target.nullable", "id", "mfa", "", ""}, "allows NULL");
    fails_with({"h3a_target.wide", "a", "mfa", "", ""}, "not unique");
    fails_with({"h3a_target.good", "id", "nope", "", ""}, "secret column \"nope\" not found");
    fails_with({"h3a_target.badtypes", "id", "mfa", "", ""}, "needs text, varchar or bytea");
    fails_with({"h3a_target.badtypes", "id", "vc", "flag", ""}, "needs boolean");
    fails_with({"h3a_target.good", "id", "mfa", "nope", ""}, "flag column \"nope\" not found");
    fails_with({"h3a_target.mixedcase", "Id", "Secret", "", ""}, "does not exist");
  }
  SECTION("a target error is a usage error: exit 2") {
    TargetError e("x");
    const keymig::UsageError& usage = e;
    CHECK(std::string(usage.what()) == "x");
  }
}
