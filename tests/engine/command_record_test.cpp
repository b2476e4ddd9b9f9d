#include "../../engine/src/command_record.hpp"

#include <catch2/catch.hpp>
#include <stdexcept>

#include "exposition.hpp"

using keymig::engine::detail::CommandRecord;
using keymig::engine::detail::configured_label;
using keymig::test::sample;

TEST_CASE("the configured target label takes an unqualified table as public", "[engine][record]") {
  keymig::config::Target t;
  t.table = "users";
  t.secret_column = "mfa_secret";
  CHECK(configured_label(t) == "public.users.mfa_secret");
  t.table = "auth.users";
  CHECK(configured_label(t) == "auth.users.mfa_secret");
}

TEST_CASE("a command record is a failure unless the command says otherwise", "[engine][record]") {
  keymig::metrics::Metrics m;
  keymig::config::Target t;
  t.table = "users";
  t.secret_column = "mfa_secret";
  SECTION("an exception out of the command records a failure") {
    try {
      CommandRecord record(&m, "scan", t);
      CHECK(sample(m.serialize(), "keymig_run_in_progress") == 1.0);
      CHECK(m.target() == "public.users.mfa_secret");
      throw std::runtime_error("lost the database");
    } catch (const std::runtime_error&) {
    }
    const auto text = m.serialize();
    CHECK(sample(text, R"(keymig_last_run_success{command="scan"})") == 0.0);
    CHECK(sample(text, "keymig_run_in_progress") == 0.0);
  }
  SECTION("a success records the time and the resolved target") {
    {
      CommandRecord record(&m, "rollback", t);
      record.on_target("app.users.mfa_secret");
      record.succeeded();
    }
    const auto text = m.serialize();
    CHECK(sample(text, R"(keymig_last_run_success{command="rollback"})") == 1.0);
    CHECK(sample(text, R"(keymig_last_success_timestamp_seconds{command="rollback"})") > 0.0);
    CHECK(m.target() == "app.users.mfa_secret");
  }
  SECTION("an unfinished command records neither") {
    { CommandRecord(&m, "migrate", t).unfinished(); }
    CHECK(!sample(m.serialize(), R"(keymig_last_run_success{command="migrate"})"));
  }
  SECTION("without metrics nothing happens") {
    CommandRecord record(nullptr, "migrate", t);
    record.succeeded();
  }
}
