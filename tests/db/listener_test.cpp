#include "keymig/db/listener.hpp"

#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>

#include "pg_fixture.hpp"

using keymig::db::ConnectParams;
using keymig::db::ListenSession;
using keymig::db::ListenStep;
using keymig::db::split_hosts;
using namespace keymig::testing;

namespace {

std::string value_of(const ConnectParams& params, const std::string& key) {
  for (const auto& [k, v] : params)
    if (k == key) return v;
  return "<unset>";
}

// Drives the session as the service's event loop does, with poll(2) instead of Asio.
ListenStep drive(ListenSession& session, ListenStep step, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (step == ListenStep::wait_read || step == ListenStep::wait_write) {
    if (std::chrono::steady_clock::now() > end) return step;
    pollfd p{session.socket(), static_cast<short>(step == ListenStep::wait_read ? POLLIN : POLLOUT),
             0};
    if (::poll(&p, 1, 100) > 0) step = session.step();
  }
  return step;
}

int wait_notifications(ListenSession& session, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int total = 0;
  while (total == 0 && std::chrono::steady_clock::now() < end) {
    pollfd p{session.socket(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    auto n = session.consume();
    if (!n) return -1;
    total += *n;
  }
  return total;
}

}  // namespace

TEST_CASE("a multi-host DSN is split into one connect per host", "[db][listener]") {
  SECTION("keyword form with one port for all") {
    auto attempts = split_hosts("host=a,b port=6000 dbname=d user=u connect_timeout=3");
    REQUIRE(attempts.size() == 2);
    CHECK(value_of(attempts[0], "host") == "a");
    CHECK(value_of(attempts[1], "host") == "b");
    for (const auto& a : attempts) {
      CHECK(value_of(a, "port") == "6000");
      CHECK(value_of(a, "dbname") == "d");
      CHECK(value_of(a, "user") == "u");
      CHECK(value_of(a, "connect_timeout") == "3");
    }
  }
  SECTION("URI form with a port per host") {
    auto attempts = split_hosts("postgresql://u@h1:1,h2:2/db");
    REQUIRE(attempts.size() == 2);
    CHECK(value_of(attempts[0], "host") == "h1");
    CHECK(value_of(attempts[0], "port") == "1");
    CHECK(value_of(attempts[1], "host") == "h2");
    CHECK(value_of(attempts[1], "port") == "2");
    CHECK(value_of(attempts[1], "dbname") == "db");
  }
  SECTION("hostaddr lists count as hosts") {
    auto attempts = split_hosts("hostaddr=127.0.0.1,127.0.0.2 port=1,2");
    REQUIRE(attempts.size() == 2);
    CHECK(value_of(attempts[1], "hostaddr") == "127.0.0.2");
    CHECK(value_of(attempts[1], "port") == "2");
  }
  SECTION("a single host, or a DSN libpq cannot parse, is used as it is") {
    CHECK(split_hosts("host=a port=1,2").empty());
    CHECK(split_hosts("host='unterminated").empty());
  }
}

TEST_CASE("a listen session that cannot connect fails with one line and no password",
          "[db][listener]") {
  ListenSession session("keymig_requests", "keymig-test-listen");
  auto step = session.connect("postgresql://nobody:sekrit-pw@127.0.0.1:1/none?connect_timeout=2");
  if (step != ListenStep::failed) {
    CHECK(session.connect_timeout() == std::chrono::seconds(2));
    step = drive(session, step, std::chrono::seconds(10));
  }
  REQUIRE(step == ListenStep::failed);
  CHECK_FALSE(session.error().empty());
  CHECK(session.error().find('\n') == std::string::npos);
  CHECK(session.error().find("sekrit-pw") == std::string::npos);
  CHECK_FALSE(session.listening());
  CHECK(session.socket() == -1);
  CHECK(session.host_label().empty());
}

TEST_CASE("a listen session tries the hosts of a multi-host DSN in order", "[db][listener]") {
  ListenSession session("keymig_requests", "keymig-test-listen");
  auto step = session.connect("host=127.0.0.1,127.0.0.1 port=1,2 connect_timeout=1");
  CHECK(session.host_label() == "host=127.0.0.1 port=1");
  if (step != ListenStep::failed) CHECK(session.connect_timeout() == std::chrono::seconds(2));
  REQUIRE(session.has_next_host());
  step = session.connect_next_host();
  CHECK(session.host_label() == "host=127.0.0.1 port=2");
  CHECK_FALSE(session.has_next_host());
  session.close();
}

TEST_CASE("a listen session connects without blocking and counts notifications", "[db][listener]") {
  KEYMIG_REQUIRE_DB();
  ListenSession session("keymig_unit_channel", "keymig-test-listen");
  auto step = drive(session, session.connect(test_dsn()), std::chrono::seconds(20));
  REQUIRE(step == ListenStep::listening);
  CHECK(session.listening());
  CHECK(session.socket() >= 0);
  CHECK(sql_value("SELECT count(*) FROM pg_stat_activity "
                  "WHERE application_name = 'keymig-test-listen'") == "1");
  CHECK(session.consume() == 0);
  sql("NOTIFY keymig_unit_channel; NOTIFY other_channel");
  CHECK(wait_notifications(session, std::chrono::seconds(5)) == 1);

  SECTION("and reports a lost session") {
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'keymig-test-listen'");
    CHECK(wait_notifications(session, std::chrono::seconds(5)) == -1);
    CHECK_FALSE(session.error().empty());
  }
}
