#include <catch2/catch.hpp>
#include <string>

#include "keymig/crypto/fernet.hpp"

using namespace keymig::crypto;

TEST_CASE("reason names are stable labels", "[crypto]") {
  CHECK(std::string(reason_name(Reason::ok)) == "ok");
  CHECK(std::string(reason_name(Reason::non_canonical)) == "non_canonical");
  CHECK(std::string(reason_name(Reason::unknown_key)) == "unknown_key");
  CHECK(std::string(reason_name(Reason::from_future)) == "from_future");
}
