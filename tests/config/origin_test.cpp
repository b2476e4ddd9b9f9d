#include <catch2/catch.hpp>
#include <string>

#include "keymig/config/config.hpp"

namespace cfg = keymig::config;

TEST_CASE("an origin reads as file, line and key, leaving out what is unknown",
          "[config][origin]") {
  CHECK(cfg::Origin{"values.yaml", 12, "secretStore.activeKey"}.describe() ==
        "values.yaml:12 secretStore.activeKey");
  CHECK(cfg::Origin{"env", 0, "KEYMIG_ACTIVE_KEY"}.describe() == "env KEYMIG_ACTIVE_KEY");
  CHECK(cfg::Origin{"values.yaml", 3, ""}.describe() == "values.yaml:3");
  CHECK(cfg::Origin{"values.yaml", 0, ""}.describe() == "values.yaml");
  CHECK(cfg::Origin{"", 0, "keyMigration.batchSize"}.describe() == "keyMigration.batchSize");
  CHECK(cfg::Origin{}.describe().empty());
}

TEST_CASE("an origin never shows a key or a token that sits where a key name belongs",
          "[config][origin]") {
  // A Fernet key pasted one line too deep is a map key, and its path is the origin.
  const std::string key = "tazpRlJq5WYm1LJHhq1z56EEtLh5_uKDMCjITfq-iPI=";
  const std::string token =
      "gAAAAABkR2hbAAECAwQFBgcICQoLDA0ODxlsHaPVvwBM9sDcWM1_MOxU8Vdq9y6FPUMgLo4BxO2GvbmI";
  CHECK(cfg::Origin{"values.yaml", 4, "keyMigration." + key}.describe() ==
        "values.yaml:4 keyMigration.[redacted key]");
  CHECK(cfg::Origin{"values.yaml", 6, "keyMigration.targets[0]." + key}.describe() ==
        "values.yaml:6 keyMigration.targets[0].[redacted key]");
  CHECK(cfg::Origin{"values.yaml", 2, "secretStore." + token}.describe() ==
        "values.yaml:2 secretStore.[redacted token]");
  // Terminal escapes in a key or a file name are shown, not obeyed.
  CHECK(cfg::Origin{"v\x1b.yaml", 3, "keyMigration.bad\x1b[31mRED"}.describe() ==
        "v\\x1b.yaml:3 keyMigration.bad\\x1b[31mRED");
  CHECK(cfg::Origin{"v\x1b.yaml", 3, "keyMigration.bad\x1b[31mRED"}.describe().find('\x1b') ==
        std::string::npos);
}
