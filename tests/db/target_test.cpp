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
        conn, TargetSpec{"h3a_target.good", "id", "mfa", "flag", "username", "", true});
    CHECK(t.label() == "h3a_target.good.mfa");
    CHECK(t.id_type == "bigint");
    CHECK(t.has_flag());
    CHECK_FALSE(t.secret_is_bytea);
    CHECK(t.q_table == "\"h3a_target\".\"good\"");
  }
  SECTION("mixed-case names, uuid ids and a bytea secret") {
    auto t = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.MixedCase", "Id", "Secret", "Flag", "", "", true});
    CHECK(t.id_type == "uuid");
    CHECK(t.secret_is_bytea);
    CHECK(t.q_id == "\"Id\"");
  }
  SECTION("onlyWhere on a boolean column limits every statement to its rows") {
    auto t = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.good", "id", "mfa", "", "", "flag", false});
    CHECK(t.row_filter_sql() == " AND t.\"flag\" IS FALSE");
    auto all = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.good", "id", "mfa", "", "", "", true});
    CHECK(all.row_filter_sql().empty());
  }
  SECTION("varchar secrets and text ids are fine") {
    auto t = keymig::db::check_target(
        conn, TargetSpec{"h3a_target.badtypes", "id", "vc", "", "", "", true});
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
    fails_with({"h3a_target.missing", "id", "mfa", "", "", "", true}, "does not exist");
    fails_with({"h3a_target.good", "nope", "mfa", "", "", "", true},
               "id column \"nope\" not found");
    fails_with({"h3a_target.nounique", "id", "mfa", "", "", "", true}, "not unique");
    fails_with({"h3a_target.nullable", "id", "mfa", "", "", "", true}, "allows NULL");
    fails_with({"h3a_target.wide", "a", "mfa", "", "", "", true}, "not unique");
    fails_with({"h3a_target.good", "id", "nope", "", "", "", true},
               "secret column \"nope\" not found");
    fails_with({"h3a_target.badtypes", "id", "mfa", "", "", "", true},
               "needs text, varchar or bytea");
    fails_with({"h3a_target.badtypes", "id", "vc", "flag", "", "", true}, "needs boolean");
    fails_with({"h3a_target.good", "id", "mfa", "nope", "", "", true},
               "flag column \"nope\" not found");
    fails_with({"h3a_target.mixedcase", "Id", "Secret", "", "", "", true}, "does not exist");
    fails_with({"h3a_target.good", "id", "mfa", "", "", "nope", true},
               "onlyWhere column \"nope\" not found");
    fails_with({"h3a_target.badtypes", "id", "vc", "", "", "vc", true}, "(needs boolean)");
  }
  SECTION("a target error is a usage error: exit 2") {
    TargetError e("x");
    const keymig::UsageError& usage = e;
    CHECK(std::string(usage.what()) == "x");
  }
}

TEST_CASE("row-level security that hides rows from keymig's role refuses the target",
          "[db][target][rls]") {
  KEYMIG_REQUIRE_DB();
  sql("DROP SCHEMA IF EXISTS h3a_rls CASCADE;"
      "DO $$ BEGIN"
      "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'h3a_rls_app') THEN"
      "    CREATE ROLE h3a_rls_app LOGIN; END IF;"
      "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'h3a_rls_owner') THEN"
      "    CREATE ROLE h3a_rls_owner LOGIN; END IF; END $$;"
      "ALTER ROLE h3a_rls_app NOBYPASSRLS;"
      "CREATE SCHEMA h3a_rls AUTHORIZATION h3a_rls_owner;"
      "GRANT USAGE ON SCHEMA h3a_rls TO h3a_rls_app;"
      "CREATE TABLE h3a_rls.users (id bigint PRIMARY KEY, mfa text);"
      "ALTER TABLE h3a_rls.users OWNER TO h3a_rls_owner;"
      "GRANT SELECT, UPDATE ON h3a_rls.users TO h3a_rls_app;"
      "INSERT INTO h3a_rls.users SELECT g, 'x' FROM generate_series(1, 10) g;"
      "ALTER TABLE h3a_rls.users ENABLE ROW LEVEL SECURITY;"
      "CREATE POLICY half ON h3a_rls.users USING (id % 2 = 0);");
  auto as_role = [](const std::string& role) {
    auto o = test_options();
    o.dsn += (o.dsn.find('?') == std::string::npos ? "?user=" : "&user=") + role;
    return o;
  };
  const TargetSpec spec{"h3a_rls.users", "id", "mfa", "", "", "", true};
  auto refusal = [&](keymig::db::Connection& conn) -> std::string {
    try {
      (void)keymig::db::check_target(conn, spec);
    } catch (const TargetError& e) {
      return e.what();
    }
    return {};
  };

  SECTION("a role the policy filters is refused, with the table and the fix named") {
    keymig::db::Connection conn(as_role("h3a_rls_app"));
    const std::string message = refusal(conn);
    INFO(message);
    CHECK(message.find("row-level security") != std::string::npos);
    CHECK(message.find("h3a_rls.users") != std::string::npos);
    CHECK(message.find("BYPASSRLS") != std::string::npos);
  }
  SECTION("BYPASSRLS, the owner and a superuser see every row: accepted") {
    sql("ALTER ROLE h3a_rls_app BYPASSRLS");
    {
      keymig::db::Connection conn(as_role("h3a_rls_app"));
      CHECK(refusal(conn).empty());
    }
    sql("ALTER ROLE h3a_rls_app NOBYPASSRLS");
    keymig::db::Connection owner(as_role("h3a_rls_owner"));
    CHECK(refusal(owner).empty());
    keymig::db::Connection superuser(test_options());
    CHECK(refusal(superuser).empty());
  }
  SECTION("the owner under FORCE ROW LEVEL SECURITY is refused") {
    sql("ALTER TABLE h3a_rls.users FORCE ROW LEVEL SECURITY");
    keymig::db::Connection owner(as_role("h3a_rls_owner"));
    const std::string message = refusal(owner);
    INFO(message);
    CHECK(message.find("FORCE ROW LEVEL SECURITY") != std::string::npos);
  }
  SECTION("row security enabled without a policy that hides rows is still refused") {
    // No policy at all hides every row (default deny): the same refusal.
    sql("DROP POLICY half ON h3a_rls.users");
    keymig::db::Connection conn(as_role("h3a_rls_app"));
    CHECK_FALSE(refusal(conn).empty());
  }
  sql("DROP SCHEMA h3a_rls CASCADE");
}
