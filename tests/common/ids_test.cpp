#include "keymig/ids.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <regex>
#include <set>
#include <string>

using namespace keymig;
using std::chrono::system_clock;

namespace {

// "2026-12-02T15:04:05Z" -> "20261202T150405Z", the spelling inside run ids.
std::string compact(const std::string& iso) {
  std::string out;
  for (char c : iso)
    if (c != '-' && c != ':') out += c;
  return out;
}

}  // namespace

TEST_CASE("host_name is what the kernel calls this machine", "[common][ids]") {
  char expected[256] = {};
  REQUIRE(gethostname(expected, sizeof expected - 1) == 0);
  const std::string name = host_name();
  CHECK(name == (expected[0] == '\0' ? std::string("unknown") : std::string(expected)));
  CHECK_FALSE(name.empty());
  CHECK(name.find('\0') == std::string::npos);
}

TEST_CASE("iso8601_utc spells a time point in UTC to the whole second", "[common][ids]") {
  CHECK(iso8601_utc(system_clock::from_time_t(0)) == "1970-01-01T00:00:00Z");
  // 1985-10-26T01:20:00-07:00
  CHECK(iso8601_utc(system_clock::from_time_t(499162800)) == "1985-10-26T08:20:00Z");
  CHECK(iso8601_utc(system_clock::from_time_t(951782400)) == "2000-02-29T00:00:00Z");
  // Seconds are truncated, never rounded up.
  CHECK(iso8601_utc(system_clock::from_time_t(59) + std::chrono::milliseconds(999)) ==
        "1970-01-01T00:00:59Z");
}

TEST_CASE("iso8601_utc spells epoch seconds, and beyond-9999 past the ISO range", "[common][ids]") {
  CHECK(iso8601_utc(std::uint64_t{0}) == "1970-01-01T00:00:00Z");
  CHECK(iso8601_utc(std::uint64_t{1700000000}) == "2023-11-14T22:13:20Z");
  CHECK(iso8601_utc(std::uint64_t{253402300799}) == "9999-12-31T23:59:59Z");
  CHECK(iso8601_utc(std::uint64_t{253402300800}) == "beyond-9999");
  CHECK(iso8601_utc(std::numeric_limits<std::uint64_t>::max()) == "beyond-9999");
  // Both overloads agree where both apply.
  CHECK(iso8601_utc(std::uint64_t{499162800}) == iso8601_utc(system_clock::from_time_t(499162800)));
}

TEST_CASE("random_hex gives the digits asked for, at most 16, lower-case hex", "[common][ids]") {
  const std::regex hex("[0-9a-f]*");
  for (int digits : {1, 2, 7, 8, 15, 16}) {
    INFO(digits);
    const std::string out = random_hex(digits);
    CHECK(out.size() == static_cast<std::size_t>(digits));
    CHECK(std::regex_match(out, hex));
  }
  CHECK(random_hex(0).empty());
  CHECK(random_hex(-3).empty());
  CHECK(random_hex(17).size() == 16);
  CHECK(random_hex(1000).size() == 16);

  SECTION("every hex digit turns up, and draws differ") {
    std::set<char> seen;
    std::set<std::string> draws;
    for (int i = 0; i < 200; ++i) {
      const std::string out = random_hex(16);
      seen.insert(out.begin(), out.end());
      draws.insert(out);
    }
    CHECK(seen.size() == 16);
    CHECK(draws.size() == 200);  // a repeat has odds of about 2^-50
  }
}

TEST_CASE("new_run_id is the prefix, the UTC time, a dash and random hex", "[common][ids]") {
  const std::string before = compact(iso8601_utc(system_clock::now()));
  const std::string id = new_run_id("m", 8);
  const std::string after = compact(iso8601_utc(system_clock::now()));
  INFO(id);
  CHECK(std::regex_match(id, std::regex("m[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")));
  const std::string stamp = id.substr(1, 16);
  CHECK(before <= stamp);
  CHECK(stamp <= after);

  CHECK(std::regex_match(new_run_id("reset-", 12),
                         std::regex("reset-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}")));
  CHECK(new_run_id("m", 8) != new_run_id("m", 8));
}
