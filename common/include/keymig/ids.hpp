#pragma once

// Names keymig gives things: this host, times as runs and logs print them, and run ids.
// Thread-safe.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace keymig {

/// This machine's host name; "unknown" when the kernel will not say.
[[nodiscard]] std::string host_name();

/// "2026-12-02T15:04:05Z": UTC, whole seconds.
[[nodiscard]] std::string iso8601_utc(std::chrono::system_clock::time_point t);
/// The same for seconds since the epoch; past 9999-12-31T23:59:59Z (a Fernet timestamp
/// may be up to 2^64 - 1) it is "beyond-9999", which has no ISO form.
[[nodiscard]] std::string iso8601_utc(std::uint64_t unix_seconds);

/// `digits` random lower-case hex digits (at most 16).
[[nodiscard]] std::string random_hex(int digits);

/// A time-ordered id, unique enough across hosts: `prefix`, the UTC time as
/// "20261202T150405Z", '-' and `random_digits` random hex digits.
/// new_run_id("m", 8) -> "m20261202T150405Z-1a2b3c4d".
[[nodiscard]] std::string new_run_id(std::string_view prefix, int random_digits);

}  // namespace keymig
