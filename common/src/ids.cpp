#include "keymig/ids.hpp"

#include <unistd.h>

#include <ctime>
#include <random>

namespace keymig {

namespace {

std::string utc(std::time_t t, const char* format) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

}  // namespace

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

std::string iso8601_utc(std::chrono::system_clock::time_point t) {
  return utc(std::chrono::system_clock::to_time_t(t), "%Y-%m-%dT%H:%M:%SZ");
}

std::string iso8601_utc(std::uint64_t unix_seconds) {
  constexpr std::uint64_t kMax = 253402300799;  // 9999-12-31T23:59:59Z
  if (unix_seconds > kMax) return "beyond-9999";
  return utc(static_cast<std::time_t>(unix_seconds), "%Y-%m-%dT%H:%M:%SZ");
}

std::string random_hex(int digits) {
  if (digits <= 0) return {};
  if (digits > 16) digits = 16;
  std::random_device rd;
  const std::uint64_t bits = (std::uint64_t{rd()} << 32) | rd();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(static_cast<std::size_t>(digits), '0');
  for (int i = 0; i < digits; ++i) out[static_cast<std::size_t>(i)] = kHex[(bits >> (4 * i)) & 15];
  return out;
}

std::string new_run_id(std::string_view prefix, int random_digits) {
  return std::string(prefix) +
         utc(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()),
             "%Y%m%dT%H%M%SZ") +
         "-" + random_hex(random_digits);
}

}  // namespace keymig
