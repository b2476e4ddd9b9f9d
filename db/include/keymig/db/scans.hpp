#pragma once

// keymig.scans: the last whole-target scan or verify of each target (docs/DESIGN.md
// section 4), the baseline migrate's lockout pre-flight compares against. Functions take
// a Connection, which is not thread-safe: one caller per connection. Each throws DbError.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// One target's last recorded pass.
struct ScanRecord {
  std::string target;      // Table::label()
  std::string command;     // scan | verify
  std::string scanned_at;  // ISO 8601 as the server prints it (set when read)
  std::int64_t rows_scanned = 0;
  std::int64_t undecryptable = 0;  // every row no configured key read
  std::int64_t acknowledged = 0;   // of those, rows in keymig.acknowledged at the time
  std::string counts_json = "{}";  // {"by_key": [{key, fingerprint, rows}], "empty", ...}
  std::string active_fingerprint;
  std::vector<std::string> rolling_fingerprints;
};

/// Replaces the target's record, when schema keymig has keymig.scans; false when it has
/// not (nothing written: scan and verify do not create schema keymig).
bool record_scan(Connection& conn, const ScanRecord& record);

/// The target's record; none when there is none or no keymig.scans.
[[nodiscard]] std::optional<ScanRecord> last_scan(Connection& conn, const std::string& target);

}  // namespace keymig::db
