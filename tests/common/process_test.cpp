#include "keymig/process.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>

// One test case: capture_secret_env() works once per process.
TEST_CASE("the key variables move out of the environment and stay readable to keymig",
          "[process]") {
  ::setenv("KEYMIG_ACTIVE_KEY", "active-key-value", 1);
  ::unsetenv("KEYMIG_ROLLING_KEYS");
  ::setenv("KEYMIG_PROCESS_TEST_OTHER", "plain", 1);
  keymig::process::capture_secret_env();
  CHECK(std::getenv("KEYMIG_ACTIVE_KEY") == nullptr);
  CHECK(keymig::process::secret_env("KEYMIG_ACTIVE_KEY") ==
        std::optional<std::string>("active-key-value"));
  // Unset at start stays unset, even if something sets it later.
  ::setenv("KEYMIG_ROLLING_KEYS", "late", 1);
  CHECK_FALSE(keymig::process::secret_env("KEYMIG_ROLLING_KEYS").has_value());
  // Other variables are read live.
  CHECK(keymig::process::secret_env("KEYMIG_PROCESS_TEST_OTHER") ==
        std::optional<std::string>("plain"));
  ::unsetenv("KEYMIG_PROCESS_TEST_OTHER");
  CHECK_FALSE(keymig::process::secret_env("KEYMIG_PROCESS_TEST_OTHER").has_value());
}
