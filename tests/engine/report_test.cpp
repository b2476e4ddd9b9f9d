#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "keymig/engine/engine.hpp"
#include "keymig/error.hpp"

using keymig::engine::MigrateReport;
using keymig::engine::ScanReport;
using keymig::engine::VerifyReport;

TEST_CASE("acknowledged undecryptable rows fail no pass, a new one still does",
          "[engine][report]") {
  ScanReport scan;
  scan.undecryptable = 9;
  scan.acknowledged = 9;
  CHECK(scan.exit_code() == keymig::kExitOk);
  scan.undecryptable = 10;
  CHECK(scan.exit_code() == keymig::kExitUndecryptable);

  VerifyReport verify;
  verify.undecryptable = 9;
  verify.acknowledged = 9;
  CHECK(verify.exit_code() == keymig::kExitOk);
  CHECK(verify.succeeded());
  verify.acknowledged = 8;
  CHECK(verify.exit_code() == keymig::kExitUndecryptable);
  CHECK(verify.succeeded());
  verify.needs_rolling = 1;
  CHECK_FALSE(verify.succeeded());

  MigrateReport migrate;
  migrate.state = "completed";
  migrate.undecryptable = 9;
  migrate.acknowledged = 9;
  migrate.undecryptable_rows.push_back({"7", "unknown_key", true});
  CHECK(migrate.exit_code() == keymig::kExitOk);
  const auto j = nlohmann::json::parse(migrate.to_json());
  CHECK(j["acknowledged"] == 9);
  CHECK(j["undecryptable_rows"][0]["acknowledged"] == true);
  CHECK(j["succeeded"] == true);
}

TEST_CASE("a migrate succeeded when its run completed without rows left to a rolling key",
          "[engine][report]") {
  MigrateReport r;
  r.state = "completed";
  r.undecryptable = 3;  // data, with its own alert: still a success
  CHECK(r.succeeded());
  r.rejected = 1;  // still needs the rolling key
  CHECK_FALSE(r.succeeded());
  r.rejected = 0;
  r.state = "running";  // stopped, or left to other workers
  CHECK_FALSE(r.succeeded());
  r.state = "completed";
  r.dry_run = true;
  CHECK_FALSE(r.succeeded());
}
