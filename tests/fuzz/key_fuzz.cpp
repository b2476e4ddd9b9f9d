// The key parser: values.yaml, key files and the environment hand it any text.
#include "fuzz_support.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto key = crypto::Key::parse(fuzz::text(data, size));
    // A key that parses makes tokens that it reads back.
    crypto::KeyRing ring(crypto::Key::parse(fuzz::text(data, size)), {});
    const auto token = ring.encrypt("JBSWY3DPEHPK3PXP");
    const auto back = ring.decrypt_active(token.view());
    fuzz::require(back.ok() && back.plaintext.view() == "JBSWY3DPEHPK3PXP");
  } catch (const crypto::KeyError&) {
  }
  return 0;
}
