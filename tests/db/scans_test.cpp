#include "keymig/db/scans.hpp"

#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;

namespace {

// The test server's URI with another database ("" when it is not a URI).
std::string dsn_for_database(const std::string& name) {
  const std::string dsn = test_dsn();
  const auto scheme = dsn.find("://");
  if (scheme == std::string::npos) return {};
  const auto slash = dsn.find('/', scheme + 3);
  const auto query = dsn.find('?', scheme + 3);
  std::string out = dsn.substr(0, slash == std::string::npos ? query : slash) + "/" + name;
  if (query != std::string::npos) out += dsn.substr(query);
  return out;
}

}  // namespace

TEST_CASE("a target's last scan replaces the one before and reads back", "[db][scans]") {
  KEYMIG_REQUIRE_DB();
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);
  const std::string target =
      "h1_scans.users-" +
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".mfa_secret";
  CHECK_FALSE(keymig::db::last_scan(conn, target).has_value());

  keymig::db::ScanRecord rec;
  rec.target = target;
  rec.command = "scan";
  rec.rows_scanned = 100;
  rec.undecryptable = 9;
  rec.acknowledged = 2;
  rec.counts_json = R"({"by_key": [{"key": "active", "fingerprint": "aa", "rows": 91}]})";
  rec.active_fingerprint = "aa";
  rec.rolling_fingerprints = {"bb", "cc"};
  REQUIRE(keymig::db::record_scan(conn, rec));
  rec.command = "verify";
  rec.undecryptable = 10;
  REQUIRE(keymig::db::record_scan(conn, rec));

  auto got = keymig::db::last_scan(conn, target);
  REQUIRE(got);
  CHECK(got->command == "verify");
  CHECK(got->rows_scanned == 100);
  CHECK(got->undecryptable == 10);
  CHECK(got->acknowledged == 2);
  CHECK(got->active_fingerprint == "aa");
  CHECK(got->rolling_fingerprints == std::vector<std::string>{"bb", "cc"});
  CHECK(got->counts_json.find("\"fingerprint\": \"aa\"") != std::string::npos);
  CHECK_FALSE(got->scanned_at.empty());
  CHECK(sql_value("SELECT count(*) FROM keymig.scans WHERE target = '" + target + "'") == "1");
}

TEST_CASE("without keymig.scans a scan is not recorded and none is found", "[db][scans]") {
  KEYMIG_REQUIRE_DB();
  auto options = test_options();
  options.dsn = dsn_for_database("h1_scans_none");
  if (options.dsn.empty()) {
    WARN("KEYMIG_TEST_DSN is not a URI: no second database");
    return;
  }
  sql("DROP DATABASE IF EXISTS h1_scans_none WITH (FORCE)");
  sql("CREATE DATABASE h1_scans_none");
  {
    keymig::db::Connection conn(options);
    keymig::db::ScanRecord rec;
    rec.target = "public.users.mfa_secret";
    rec.command = "scan";
    CHECK_FALSE(keymig::db::record_scan(conn, rec));
    CHECK_FALSE(keymig::db::last_scan(conn, rec.target).has_value());
  }
  sql("DROP DATABASE IF EXISTS h1_scans_none WITH (FORCE)");
}
