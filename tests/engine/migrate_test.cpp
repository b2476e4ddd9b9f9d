#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "keymig/crypto/fernet.hpp"
#include "keymig/engine/engine.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::crypto::Fernet;
using keymig::crypto::Key;
using keymig::crypto::KeyRing;

namespace {

struct Keys {
  keymig::SecretString active_text = Key::generate().encode();
  keymig::SecretString rolling_text = Key::generate().encode();
  Fernet active{Key::parse(active_text.view())};
  Fernet rolling{Key::parse(rolling_text.view())};
  KeyRing ring() const {
    std::vector<Key> r;
    r.push_back(Key::parse(rolling_text.view()));
    return KeyRing(Key::parse(active_text.view()), std::move(r));
  }
};

keymig::engine::Options options_for(const std::string& table) {
  keymig::engine::Options o;
  o.connect = test_options();
  o.target.table = table;
  o.target.id_column = "id";
  o.target.secret_column = "mfa_secret";
  o.target.flag_column = "mfa_fernet_active";
  o.batch_size = 7;  // many batches and chunks on a small table
  o.threads = 2;
  return o;
}

std::string plaintext_of(const Fernet& f, const std::string& token) {
  auto d = f.decrypt(token);
  return d.ok() ? std::string(d.plaintext.view())
                : std::string("<") + keymig::crypto::reason_name(d.reason) + ">";
}

}  // namespace

TEST_CASE("migrate, verify, rollback and finalize a small table through the engine API",
          "[db][engine]") {
  KEYMIG_REQUIRE_DB();
  Keys keys;
  const KeyRing ring = keys.ring();
  sql("DROP SCHEMA IF EXISTS h3a_eng CASCADE; CREATE SCHEMA h3a_eng;"
      "CREATE TABLE h3a_eng.users (id bigint PRIMARY KEY, username text, mfa_secret text,"
      " mfa_fernet_active boolean)");
  {
    pqxx::connection c(test_dsn());
    pqxx::work tx(c);
    for (int i = 1; i <= 100; ++i) {
      std::string secret = "JBSWY3DPEHPK3PXP" + std::to_string(i);
      std::string token;
      if (i % 10 == 0)
        token = std::string(keys.active.encrypt(secret).view());
      else
        token = std::string(keys.rolling.encrypt_at_time(secret, 1000000 + i).view());
      if (i == 13) token = "not-a-token";
      if (i == 17) token = "";
      tx.exec_params("INSERT INTO h3a_eng.users VALUES ($1, $2, $3, $4)", i,
                     "user" + std::to_string(i), i == 29 ? nullptr : token.c_str(), i % 20 == 0);
    }
    tx.commit();
  }
  auto options = options_for("h3a_eng.users");

  auto scan = keymig::engine::scan(ring, options);
  CHECK(scan.rows_scanned == 100);
  CHECK(scan.active == 10);
  CHECK(scan.rolling == 87);
  CHECK(scan.empty == 2);
  CHECK(scan.undecryptable == 1);
  CHECK(scan.flag_wrong == 5);
  CHECK(scan.exit_code() == keymig::kExitUndecryptable);
  CHECK(sql_value("SELECT count(*) FROM h3a_eng.users WHERE mfa_fernet_active") == "5");

  auto before = keymig::engine::verify(ring, options);
  CHECK(before.needs_rolling == 87);
  CHECK(before.exit_code() == keymig::kExitNeedsRolling);

  auto dry = options;
  dry.dry_run = true;
  auto d = keymig::engine::migrate(ring, dry);
  CHECK(d.rotated == 87);
  CHECK(d.run_id.empty());
  CHECK(sql_value("SELECT count(*) FROM h3a_eng.users WHERE mfa_fernet_active") == "5");

  auto m = keymig::engine::migrate(ring, options);
  CHECK(m.state == "completed");
  CHECK(m.rows_scanned == 100);
  CHECK(m.rotated == 87);
  CHECK(m.already_active == 10);
  CHECK(m.flag_fixed == 5);
  CHECK(m.empty == 2);
  CHECK(m.undecryptable == 1);
  CHECK(m.conflicts == 0);
  REQUIRE(m.undecryptable_rows.size() == 1);
  CHECK(m.undecryptable_rows[0].id == "13");
  CHECK(m.exit_code() == keymig::kExitUndecryptable);
  REQUIRE(m.run_totals);
  CHECK(m.run_totals->rotated == 87);
  CHECK(m.run_totals->rows_scanned == 100);
  auto json = nlohmann::json::parse(m.to_json());
  for (const char* k : {"run_id", "rows_scanned", "rotated", "already_active", "flag_fixed",
                        "empty", "undecryptable", "conflicts", "seconds", "undecryptable_rows"})
    CHECK(json.contains(k));
  CHECK(m.to_json().find(keys.active_text.view().substr(0, 20)) == std::string::npos);

  // Rotation keeps the plaintext and the timestamp, and sets the flag.
  const std::string token5 = sql_value("SELECT mfa_secret FROM h3a_eng.users WHERE id = 5");
  CHECK(plaintext_of(keys.active, token5) == "JBSWY3DPEHPK3PXP5");
  CHECK(keymig::crypto::unverified_timestamp(token5) == std::optional<std::uint64_t>(1000005));
  CHECK(sql_value("SELECT count(*) FROM h3a_eng.users WHERE mfa_fernet_active") == "97");
  CHECK(sql_value("SELECT mfa_secret FROM h3a_eng.users WHERE id = 13") == "not-a-token");

  auto after = keymig::engine::verify(ring, options, m.run_id);
  CHECK(after.ok == 97);
  CHECK(after.needs_rolling == 0);
  CHECK(after.mismatched == 0);
  CHECK(after.journal_checked == 92);  // 87 rotated + 5 flag fixes
  CHECK(after.journal_failed == 0);
  CHECK(after.exit_code() == keymig::kExitUndecryptable);

  SECTION("a second migrate finds nothing to do") {
    auto again = keymig::engine::migrate(ring, options);
    CHECK(again.rotated == 0);
    CHECK(again.already_active == 97);
    CHECK(again.run_id != m.run_id);
  }
  SECTION("rollback restores the old tokens except where the row changed since") {
    const std::string fresh = std::string(keys.active.encrypt("re-enrolled").view());
    sql("UPDATE h3a_eng.users SET mfa_secret = '" + fresh + "' WHERE id = 7");
    auto rb = keymig::engine::rollback(options, m.run_id);
    CHECK(rb.journal_rows == 92);
    CHECK(rb.restored == 91);
    CHECK(rb.left == 1);
    CHECK(rb.left_rows == std::vector<std::string>{"7"});
    CHECK(rb.state == "rolled_back");
    auto v = keymig::engine::verify(ring, options);
    CHECK(v.needs_rolling == 86);
    CHECK(sql_value("SELECT count(*) FROM h3a_eng.users WHERE mfa_fernet_active") == "6");
    CHECK(plaintext_of(keys.rolling,
                       sql_value("SELECT mfa_secret FROM h3a_eng.users WHERE id = 5")) ==
          "JBSWY3DPEHPK3PXP5");
    CHECK_THROWS_AS(keymig::engine::finalize(ring, options, m.run_id), keymig::UsageError);
  }
  SECTION("finalize deletes the journal once nothing needs the rolling key") {
    auto f = keymig::engine::finalize(ring, options, m.run_id);
    CHECK(f.finalized);
    CHECK(f.rolling_key_retirable);
    CHECK(f.journal_deleted == 92);
    CHECK(f.exit_code() == keymig::kExitOk);
    CHECK(sql_value("SELECT state FROM keymig.runs WHERE run_id = '" + m.run_id + "'") ==
          "finalized");
    CHECK_THROWS_AS(keymig::engine::rollback(options, m.run_id), keymig::UsageError);
  }
  SECTION("finalize refuses while rows still need the rolling key") {
    sql("UPDATE h3a_eng.users SET mfa_secret = '" +
        std::string(keys.rolling.encrypt("late").view()) + "' WHERE id = 3");
    auto f = keymig::engine::finalize(ring, options, m.run_id);
    CHECK_FALSE(f.finalized);
    CHECK(f.exit_code() == keymig::kExitNeedsRolling);
    CHECK(f.verify.needs_rolling == 1);
    CHECK(sql_value("SELECT count(*) FROM keymig.journal WHERE run_id = '" + m.run_id + "'") ==
          "92");
  }
}

TEST_CASE("migrate by usernames touches only those users and resumes a stopped run",
          "[db][engine]") {
  KEYMIG_REQUIRE_DB();
  Keys keys;
  const KeyRing ring = keys.ring();
  sql("DROP SCHEMA IF EXISTS h3a_sel CASCADE; CREATE SCHEMA h3a_sel;"
      "CREATE TABLE h3a_sel.users (id text PRIMARY KEY, username text, mfa_secret text,"
      " mfa_fernet_active boolean)");
  {
    pqxx::connection c(test_dsn());
    pqxx::work tx(c);
    for (int i = 1; i <= 60; ++i)
      tx.exec_params("INSERT INTO h3a_sel.users VALUES ($1, $2, $3, false)",
                     "id-" + std::to_string(i), "user" + std::to_string(i),
                     std::string(keys.rolling.encrypt("s").view()));
    tx.commit();
  }
  auto options = options_for("h3a_sel.users");
  options.target.username_column = "username";

  auto some = options;
  some.selection.usernames = {"user3", "user40", "ghost"};
  auto m = keymig::engine::migrate(ring, some);
  CHECK(m.rotated == 2);
  CHECK(m.rows_scanned == 2);
  CHECK(m.not_found == std::vector<std::string>{"ghost"});
  CHECK(sql_value("SELECT count(*) FROM h3a_sel.users WHERE mfa_fernet_active") == "2");

  // A stop request drains: the run stays resumable and a plain re-run finishes it.
  std::atomic<bool> stop{false};
  auto stopping = options;
  stopping.stop = &stop;
  int pages = 0;
  stopping.max_rows_per_second = 200;  // slow enough to stop in the middle
  stopping.progress = [&](const keymig::engine::Progress&) {
    if (++pages >= 1) stop = true;
  };
  auto first = keymig::engine::migrate(ring, stopping);
  CHECK(first.stopped);
  CHECK(first.state == "running");
  // The process exits 1 for a drained run; its report must say the same.
  CHECK(first.exit_code() == keymig::kExitRuntime);
  CHECK(nlohmann::json::parse(first.to_json())["exit_code"] == keymig::kExitRuntime);
  CHECK(first.rotated < 58);
  auto rest = keymig::engine::migrate(ring, options);
  CHECK(rest.resumed);
  CHECK(rest.run_id == first.run_id);
  CHECK(rest.state == "completed");
  CHECK(first.rotated + rest.rotated == 58);
  auto v = keymig::engine::verify(ring, options, rest.run_id);
  CHECK(v.needs_rolling == 0);
  CHECK(v.journal_checked == 58);
  CHECK(v.exit_code() == keymig::kExitOk);
}
