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
