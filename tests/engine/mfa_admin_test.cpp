#include "keymig/engine/mfa_admin.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/journal.hpp"
#include "keymig/db/target.hpp"
#include "mfa_ring.hpp"

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
  config.migration.targets.front().table = "mfa_admin_users";
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
  CHECK_THROWS_AS(keymig::engine::plan_reset_mfa(conn, config, &r.ring, unknown),
                  keymig::UsageError);

  keymig::db::Selection sel;
  sel.usernames = {"ann", "bob"};
  auto plan = keymig::engine::plan_reset_mfa(conn, config, &r.ring, sel);
  REQUIRE(plan.users.size() == 2);
  auto result = keymig::engine::reset_mfa(conn, config, &r.ring, plan);
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
      conn, {"mfa_admin_users", "id", "mfa_secret", "mfa_fernet_active", "username", "", true});
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
