#pragma once

// Shared by the [db] tests: the test database from KEYMIG_TEST_DSN and raw SQL for
// fixtures (the code under test never sees these helpers).

#include <cstdlib>
#include <pqxx/pqxx>
#include <string>

#include "keymig/db/connection.hpp"

namespace keymig::testing {

/// KEYMIG_TEST_DSN, or "" when the tests run without a server.
inline std::string test_dsn() {
  const char* dsn = std::getenv("KEYMIG_TEST_DSN");
  return dsn ? dsn : "";
}

inline void sql(const std::string& statements) {
  pqxx::connection c(test_dsn());
  pqxx::nontransaction tx(c);
  tx.exec(statements);
}

inline std::string sql_value(const std::string& query) {
  pqxx::connection c(test_dsn());
  pqxx::nontransaction tx(c);
  auto r = tx.exec(query);
  return r.empty() || r[0][0].is_null() ? std::string() : r[0][0].as<std::string>();
}

inline db::ConnectOptions test_options() {
  db::ConnectOptions o;
  o.dsn = test_dsn();
  o.max_retries = 2;
  o.retry_base_delay = std::chrono::milliseconds(10);
  return o;
}

}  // namespace keymig::testing

#define KEYMIG_REQUIRE_DB()                                   \
  do {                                                        \
    if (::keymig::testing::test_dsn().empty()) {              \
      WARN("KEYMIG_TEST_DSN not set: database test skipped"); \
      return;                                                 \
    }                                                         \
  } while (0)
