#include "keymig/db/retry.hpp"

#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/error.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::db::backoff_delay;
using std::chrono::milliseconds;

TEST_CASE("reconnect backoff doubles up to its cap", "[db][retry]") {
  milliseconds lo(250), hi(30000);
  CHECK(backoff_delay(0, lo, hi) == milliseconds(250));
  CHECK(backoff_delay(1, lo, hi) == milliseconds(500));
  CHECK(backoff_delay(4, lo, hi) == milliseconds(4000));
  CHECK(backoff_delay(7, lo, hi) == milliseconds(30000));
  CHECK(backoff_delay(1000, lo, hi) == milliseconds(30000));
  CHECK(backoff_delay(-3, lo, hi) == milliseconds(250));
}

TEST_CASE("with_retry repeats retryable errors and gives up on the others", "[db][retry]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  int calls = 0;
  auto value = keymig::db::with_retry(conn, [&] {
    if (++calls < 3) throw keymig::db::DbError("serialization failure", "40001", true);
    return 7;
  });
  CHECK(value == 7);
  CHECK(calls == 3);
  calls = 0;
  CHECK_THROWS_AS(keymig::db::with_retry(conn,
                                         [&]() -> int {
                                           ++calls;
                                           throw keymig::db::DbError("unique", "23505", false);
                                         }),
                  keymig::db::DbError);
  CHECK(calls == 1);
  calls = 0;
  CHECK_THROWS_AS(keymig::db::with_retry(conn,
                                         [&]() -> int {
                                           ++calls;
                                           throw keymig::db::DbError("deadlock", "40P01", true);
                                         }),
                  keymig::db::DbError);
  CHECK(calls == 3);  // max_retries 2: the first try and two more
}

TEST_CASE("every retry is shown to the hook with its attempt number", "[db][retry]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  std::vector<int> seen;
  int calls = 0;
  auto value = keymig::db::with_retry(
      conn,
      [&] {
        if (++calls < 3) throw keymig::db::DbError("lock timeout", "55P03", true);
        return 1;
      },
      [&](const keymig::db::DbError& e, int attempt) {
        CHECK(e.sqlstate() == "55P03");
        seen.push_back(attempt);
      });
  CHECK(value == 1);
  CHECK(seen == std::vector<int>{1, 2});
}

TEST_CASE("a refused connect is retried only where the server may be restarting", "[db][retry]") {
  keymig::db::ConnectOptions options;
  options.dsn = "postgresql://keymig@127.0.0.1:1/nodb?connect_timeout=2";
  options.max_retries = 3;
  options.retry_base_delay = milliseconds(1);
  int retries = 0;
  try {
    (void)keymig::db::connect_with_retry(options,
                                         [&](const keymig::db::DbError&, int) { ++retries; });
    FAIL("connected to a closed port");
  } catch (const keymig::db::DbError& e) {
    // Nothing listens: a command's first connect says so at once.
    CHECK(e.refused());
  }
  CHECK(retries == 0);
  SECTION("serve's sessions (retry_refused) wait for it, then give up") {
    options.retry_refused = true;
    CHECK_THROWS_AS(keymig::db::connect_with_retry(
                        options, [&](const keymig::db::DbError&, int) { ++retries; }),
                    keymig::db::DbError);
    CHECK(retries == 3);
  }
}
