#include "keymig/db/connection.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/error.hpp"
#include "keymig/db/retry.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

TEST_CASE("retryable SQLSTATEs are exactly the transient ones", "[db][errors]") {
  for (const char* s : {"40001", "40P01", "55P03", "57P01", "57P03", "08006", "08003", "08001"})
    CHECK(keymig::db::is_retryable_sqlstate(s));
  for (const char* s :
       {"23505", "42P01", "42703", "22P02", "57014", "XX000", "08004", "3D000", "28P01", ""})
    CHECK_FALSE(keymig::db::is_retryable_sqlstate(s));
  keymig::db::DbError lost("x", "08006", true);
  CHECK(lost.connection_lost());
  keymig::db::DbError deadlock("x", "40P01", true);
  CHECK_FALSE(deadlock.connection_lost());
}

TEST_CASE("an unreachable server is a retryable DbError that says it was refused, not lost",
          "[db][errors]") {
  keymig::db::ConnectOptions o;
  o.dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2";
  try {
    keymig::db::Connection conn(o);
    FAIL("connected to port 1");
  } catch (const keymig::db::DbError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.retryable());
    CHECK(e.connection_lost());
    CHECK(e.refused());
    CHECK(e.sqlstate() == "08001");
    CHECK(what.find("connection refused") != std::string::npos);
    CHECK(what.find("connection lost") == std::string::npos);
  }
}

TEST_CASE("a DSN libpq cannot parse is a usage error naming no part of it", "[db][errors]") {
  // No server needed: libpq refuses these before connecting.
  const char* const dsns[] = {
      "postgresql://u:Qz7hSEC%zzRETv4@127.0.0.1/db",
      "postgresql://u:Qz7hSECRETv4@[::1/db",
      "host=127.0.0.1 password=Qz7hSEC RETv4",
      "host=127.0.0.1 Qz7hSECRETv4=1",
  };
  for (const char* dsn : dsns) {
    INFO(dsn);
    keymig::db::ConnectOptions o;
    o.dsn = dsn;
    try {
      keymig::db::Connection conn(o);
      FAIL("connected");
    } catch (const keymig::db::DsnError& e) {
      const std::string what = e.what();
      CHECK(what.find("DSN") != std::string::npos);
      CHECK(what.find("Qz7h") == std::string::npos);
      CHECK(what.find("v4") == std::string::npos);
    }
    CHECK_THROWS_AS(keymig::db::check_dsn(dsn), keymig::UsageError);
  }
  CHECK_NOTHROW(keymig::db::check_dsn("host=a port=1 password='p w'"));
  CHECK_NOTHROW(keymig::db::check_dsn("postgresql://u:p%40w@h:1/db?sslmode=disable"));
}

TEST_CASE("a connection message loses the DSN's password, PGPASSWORD and tokens", "[db][errors]") {
  using keymig::db::redact_connection_message;
  CHECK(redact_connection_message("FATAL: x p@ss y", "postgresql://u:p%40ss@h/db") ==
        "FATAL: x [redacted] y");
  CHECK(redact_connection_message("auth failed for p w", "host=h password='p w'") ==
        "auth failed for [redacted]");
  CHECK(redact_connection_message("no host=h user=u here", "host=h user=u") ==
        "no [redacted] here");
  ::setenv("PGPASSWORD", "Envpw123", 1);
  CHECK(redact_connection_message("said Envpw123", "") == "said [redacted]");
  ::unsetenv("PGPASSWORD");
  CHECK(redact_connection_message("gAAAAABmMi7AAy-Tq0TtO2eYNDK96yhrGC", "") == "[redacted token]");
}

namespace {

// Sets (or, with nullptr, unsets) an environment variable for one scope.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~EnvVar() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("no DSN and no libpq variable is a usage error naming where a DSN comes from",
          "[db][errors]") {
  std::vector<std::unique_ptr<EnvVar>> cleared;
  for (const char* name : {"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"})
    cleared.push_back(std::make_unique<EnvVar>(name, nullptr));
  CHECK_FALSE(keymig::db::dsn_configured(""));
  try {
    keymig::db::check_dsn("");
    FAIL("an empty DSN passed");
  } catch (const keymig::db::DsnError& e) {
    const std::string what = e.what();
    CHECK(what.find("no database configured") != std::string::npos);
    for (const char* source : {"--dsn", "keyMigration.database.dsn", "PGHOST", "PGDATABASE"})
      CHECK(what.find(source) != std::string::npos);
  }
  // The DSN is refused before libpq is asked: no default socket is tried.
  keymig::db::ConnectOptions o;
  CHECK_THROWS_AS(keymig::db::connect_with_retry(o), keymig::db::DsnError);
  SECTION("any of libpq's variables says where") {
    for (const char* name : {"PGHOST", "PGDATABASE", "PGSERVICE"}) {
      EnvVar set(name, "x");
      CHECK(keymig::db::dsn_configured(""));
      CHECK_NOTHROW(keymig::db::check_dsn(""));
    }
    EnvVar empty("PGHOST", "");
    CHECK_FALSE(keymig::db::dsn_configured(""));
  }
}

TEST_CASE("a server that refuses the session is reported at once, not retried", "[db][errors]") {
  KEYMIG_REQUIRE_DB();
  const std::string dsn = test_dsn();
  const auto slash = dsn.rfind('/');
  REQUIRE(slash != std::string::npos);
  struct Case {
    std::string dsn, sqlstate, says;
  };
  const Case cases[] = {
      {dsn.substr(0, slash + 1) + "keymig_no_such_database", "3D000",
       "the database does not exist"},
      // libpq refuses these only when it connects: PQconninfoParse takes any value.
      {"host=127.0.0.1 port=notaport dbname=keymig", "22023", "must be a number"},
      {"postgresql://keymig@127.0.0.1:99999/keymig", "22023", "invalid port number"},
  };
  for (const auto& c : cases) {
    keymig::db::ConnectOptions o = test_options();
    o.dsn = c.dsn;
    try {
      keymig::db::Connection conn(o);
      FAIL("connected with " << c.sqlstate);
    } catch (const keymig::db::DbError& e) {
      INFO(e.what());
      CHECK(e.sqlstate() == c.sqlstate);
      CHECK_FALSE(e.retryable());
      CHECK_FALSE(e.connection_lost());
      CHECK(std::string(e.what()).find(c.says) != std::string::npos);
      CHECK(std::string(e.what()).find("connection lost") == std::string::npos);
    }
  }
}
