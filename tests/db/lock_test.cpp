#include "keymig/db/lock.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "keymig/db/error.hpp"
#include "pg_fixture.hpp"

using keymig::db::Connection;
using keymig::db::TargetLock;
using namespace keymig::testing;

namespace {

void make_tables() {
  sql("CREATE TABLE IF NOT EXISTS public.lock_users(id int PRIMARY KEY);"
      "CREATE TABLE IF NOT EXISTS public.lock_other(id int PRIMARY KEY)");
}

bool free_for(Connection& other, const std::string& table) {
  auto lock = TargetLock::try_acquire(other, table);
  return lock.has_value();
}

}  // namespace

TEST_CASE("a target lock on users blocks every spelling of the same table", "[db][lock]") {
  KEYMIG_REQUIRE_DB();
  make_tables();
  Connection holder(test_options());
  Connection other(test_options());
  auto lock = TargetLock::try_acquire(holder, "lock_users");
  REQUIRE(lock);
  CHECK(lock->table_oid() != 0);
  for (const char* spelling : {"lock_users", "public.lock_users", "\"public\".\"lock_users\"",
                               "public.\"lock_users\"", "\"lock_users\""})
    CHECK_FALSE(free_for(other, spelling));
  // Another table is another lock.
  CHECK(free_for(other, "public.lock_other"));

  SECTION("and is free again once the guard is gone") {
    lock.reset();
    CHECK(free_for(other, "public.lock_users"));
  }
  SECTION("and is free again after release(), which a second release leaves alone") {
    lock->release();
    CHECK(free_for(other, "\"public\".\"lock_users\""));
    lock->release();
  }
  SECTION("and moves with its guard") {
    TargetLock moved = std::move(*lock);
    lock.reset();  // the moved-from guard releases nothing
    CHECK_FALSE(free_for(other, "lock_users"));
    moved.release();
    CHECK(free_for(other, "lock_users"));
  }
}

TEST_CASE("a target lock is free again when its session is lost", "[db][lock]") {
  KEYMIG_REQUIRE_DB();
  make_tables();
  Connection holder(test_options());
  Connection other(test_options());
  auto lock = TargetLock::try_acquire(holder, "public.lock_users");
  REQUIRE(lock);
  REQUIRE_FALSE(free_for(other, "lock_users"));
  sql("SELECT pg_terminate_backend(" + std::to_string(holder.backend_pid()) + ")");
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    freed = free_for(other, "lock_users");
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(freed);
  SECTION("releasing on the dead session does not throw") {
    CHECK_NOTHROW(lock.reset());
  }
  SECTION("releasing on a re-opened session leaves that session's locks alone") {
    holder.reconnect();
    auto again = TargetLock::try_acquire(holder, "lock_users");
    REQUIRE(again);
    CHECK_NOTHROW(lock.reset());
    CHECK_FALSE(free_for(other, "lock_users"));
  }
}

TEST_CASE("a target lock on a table that does not exist is a TargetError", "[db][lock]") {
  KEYMIG_REQUIRE_DB();
  Connection conn(test_options());
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, "no_such_table"), keymig::db::TargetError);
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, "no_schema.lock_users"), keymig::db::TargetError);
  // Configured names are case-sensitive, as check_target reads them.
  make_tables();
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, "Lock_Users"), keymig::db::TargetError);
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, ""), keymig::db::TargetError);
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, "\"unclosed"), keymig::db::TargetError);
  CHECK_THROWS_AS(TargetLock::try_acquire(conn, "a.b.c.d"), keymig::db::TargetError);
}
