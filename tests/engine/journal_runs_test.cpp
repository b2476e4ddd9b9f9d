// scan, rollback and finalize record their result in the run metrics, success and failure.

#include <catch2/catch.hpp>

#include "exposition.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::crypto::Fernet;
using keymig::crypto::Key;
using keymig::crypto::KeyRing;
using keymig::test::sample;

namespace {

struct Table {
  Key active = Key::generate();
  Key rolling = Key::generate();
  explicit Table(int undecryptable) {
    sql("DROP SCHEMA IF EXISTS h3a_rec CASCADE; CREATE SCHEMA h3a_rec;"
        "CREATE TABLE h3a_rec.users (id bigint PRIMARY KEY, mfa_secret text,"
        " mfa_fernet_active boolean)");
    Fernet f(Key::parse(rolling.encode().view()));
    pqxx::connection c(test_dsn());
    pqxx::work tx(c);
    for (int i = 1; i <= 30; ++i)
      tx.exec_params("INSERT INTO h3a_rec.users VALUES ($1, $2, false)", i,
                     i <= undecryptable ? std::string("not-a-token")
                                        : std::string(f.encrypt("S" + std::to_string(i)).view()));
    tx.commit();
  }
  KeyRing ring() const {
    std::vector<Key> r;
    r.push_back(Key::parse(rolling.encode().view()));
    return KeyRing(Key::parse(active.encode().view()), std::move(r));
  }
};

keymig::engine::Options options(keymig::metrics::Metrics& m) {
  keymig::engine::Options o;
  o.connect = test_options();
  o.target.table = "h3a_rec.users";
  o.target.id_column = "id";
  o.target.secret_column = "mfa_secret";
  o.target.flag_column = "mfa_fernet_active";
  o.batch_size = 7;
  o.threads = 2;
  o.metrics = &m;
  return o;
}

std::optional<double> last_run(const keymig::metrics::Metrics& m, const std::string& command) {
  return sample(m.serialize(), R"(keymig_last_run_success{command=")" + command + R"("})");
}

}  // namespace

TEST_CASE("scan records a success, undecryptable rows included, and a failure",
          "[db][engine][record]") {
  KEYMIG_REQUIRE_DB();
  Table table(2);
  keymig::metrics::Metrics m;
  auto o = options(m);
  const auto report = keymig::engine::scan(table.ring(), o);
  CHECK(report.exit_code() == keymig::kExitUndecryptable);
  CHECK(last_run(m, "scan") == 1.0);
  CHECK(m.target() == "h3a_rec.users.mfa_secret");
  CHECK(sample(m.serialize(), "keymig_run_in_progress") == 0.0);

  o.target.table = "h3a_rec.no_such_table";
  CHECK_THROWS(keymig::engine::scan(table.ring(), o));
  CHECK(last_run(m, "scan") == 0.0);
  CHECK(m.target() == "h3a_rec.no_such_table.mfa_secret");
}

TEST_CASE("rollback and finalize record success and failure", "[db][engine][record]") {
  KEYMIG_REQUIRE_DB();
  Table table(0);
  const KeyRing ring = table.ring();
  keymig::metrics::Metrics m;
  const auto o = options(m);
  const auto first = keymig::engine::migrate(ring, o);
  REQUIRE(first.state == "completed");
  CHECK(last_run(m, "migrate") == 1.0);

  SECTION("rollback") {
    CHECK_THROWS(keymig::engine::rollback(o, "no-such-run"));
    CHECK(last_run(m, "rollback") == 0.0);
    const auto r = keymig::engine::rollback(o, first.run_id);
    CHECK(r.state == "rolled_back");
    CHECK(last_run(m, "rollback") == 1.0);
    CHECK(sample(m.serialize(), R"(keymig_last_success_timestamp_seconds{command="rollback"})") >
          0.0);
  }
  SECTION("finalize") {
    CHECK_THROWS(keymig::engine::finalize(ring, o, "no-such-run"));
    CHECK(last_run(m, "finalize") == 0.0);
    // A row under the rolling key again: not finalized (exit 4) is a failed finalize.
    Fernet f(Key::parse(table.rolling.encode().view()));
    sql("UPDATE h3a_rec.users SET mfa_secret = '" + std::string(f.encrypt("again").view()) +
        "' WHERE id = 1");
    const auto refused = keymig::engine::finalize(ring, o, first.run_id);
    CHECK(refused.exit_code() == keymig::kExitNeedsRolling);
    CHECK(last_run(m, "finalize") == 0.0);
    const auto second = keymig::engine::migrate(ring, o);
    REQUIRE(second.state == "completed");
    const auto done = keymig::engine::finalize(ring, o, first.run_id);
    CHECK(done.finalized);
    CHECK(last_run(m, "finalize") == 1.0);
    // finalize verifies as part of itself: no verify run is recorded.
    CHECK(!last_run(m, "verify"));
  }
}

TEST_CASE("journal purge refuses an age under 1h before it connects", "[engine][purge]") {
  keymig::engine::Options o;
  o.connect.dsn = "postgresql://nobody@127.0.0.1:1/none";  // never reached
  for (const auto age : {std::chrono::seconds(0), std::chrono::seconds(3599)})
    CHECK_THROWS_AS(keymig::engine::purge_journals(o, age), keymig::UsageError);
}

TEST_CASE("finalize keeps the journal while a journaled row holds what the active key cannot read",
          "[db][engine][finalize]") {
  KEYMIG_REQUIRE_DB();
  Table table(0);
  const KeyRing ring = table.ring();
  keymig::metrics::Metrics m;
  const auto o = options(m);
  const auto run = keymig::engine::migrate(ring, o);
  REQUIRE(run.state == "completed");
  const std::string journal =
      "SELECT count(*) FROM keymig.journal WHERE run_id = '" + run.run_id + "'";
  REQUIRE(sql_value(journal) == "30");
  // Changed since the run: one row unreadable, others emptied, deleted, re-encrypted.
  Fernet active(Key::parse(table.active.encode().view()));
  sql("UPDATE h3a_rec.users SET mfa_secret = 'garbage' WHERE id = 4;"
      "UPDATE h3a_rec.users SET mfa_secret = NULL WHERE id = 5;"
      "DELETE FROM h3a_rec.users WHERE id = 6;"
      "UPDATE h3a_rec.users SET mfa_secret = '" +
      std::string(active.encrypt("fresh").view()) + "' WHERE id = 7");
  const auto refused = keymig::engine::finalize(ring, o, run.run_id);
  CHECK_FALSE(refused.finalized);
  CHECK(refused.exit_code() == keymig::kExitNeedsRolling);
  CHECK(refused.journal_unreadable == 1);
  CHECK(refused.journal_unreadable_rows == std::vector<std::string>{"4"});
  CHECK(refused.reason.find("1 journaled rows") != std::string::npos);
  CHECK(sql_value(journal) == "30");
  CHECK(last_run(m, "finalize") == 0.0);

  sql("UPDATE h3a_rec.users SET mfa_secret = '' WHERE id = 4");
  const auto done = keymig::engine::finalize(ring, o, run.run_id);
  CHECK(done.finalized);
  CHECK(sql_value(journal) == "0");
}
