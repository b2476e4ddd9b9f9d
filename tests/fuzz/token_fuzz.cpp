// The token decoder and classifier: any bytes a table can hold.
#include "fuzz_support.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto token = fuzz::text(data, size);
  const auto& ring = fuzz::ring();
  (void)crypto::unverified_timestamp(token);
  const auto c = ring.classify(token);
  fuzz::require(c.key_index >= -1 && c.key_index <= static_cast<int>(ring.rolling_count()));
  const auto r = ring.rotate(token);
  fuzz::require(r.key_index == c.key_index);
  if (r.key_index > 0 && r.reason == crypto::Reason::ok) {
    // What migrate would write: the active key alone reads it, timestamp kept.
    const auto moved = ring.decrypt_active(r.token.view());
    fuzz::require(moved.ok());
    fuzz::require(moved.timestamp == r.timestamp);
    const auto before = ring.decrypt_with(token, r.key_index);
    fuzz::require(before.ok() && before.plaintext.view() == moved.plaintext.view());
  }
  const auto d = ring.decrypt_active(token);
  fuzz::require(!d.ok() || c.key_index == 0);
  return 0;
}
