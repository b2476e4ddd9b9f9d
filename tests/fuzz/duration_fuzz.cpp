// The duration and time-of-day parsers of keyMigration (schedule, timeouts, retention).
#include <string>

#include "fuzz_support.hpp"
#include "keymig/config/config.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(fuzz::text(data, size));
  const config::Origin origin{"fuzz", 1, "keyMigration.fuzz"};
  try {
    fuzz::require(config::parse_duration(text, origin).count() >= 0);
  } catch (const keymig::Error&) {
  }
  try {
    fuzz::require(config::parse_duration_ms(text, origin).count() >= 0);
  } catch (const keymig::Error&) {
  }
  try {
    const int minute = config::parse_time_of_day(text, origin);
    fuzz::require(minute >= 0 && minute < 24 * 60);
  } catch (const keymig::Error&) {
  }
  return 0;
}
