#pragma once

// keymig.acknowledged: undecryptable rows an operator has looked at and accepted
// (docs/DESIGN.md section 4), by target and row id, with who and why. Reported, but they
// no longer fail a run. Functions take a Connection, which is not thread-safe: one
// caller per connection. Each throws DbError.

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "keymig/db/connection.hpp"

namespace keymig::db {

struct AcknowledgedRow {
  std::string row_id;
  std::string reason;
  std::string acknowledged_by;
  std::string acknowledged_at;  // ISO 8601 as the server prints it
};

/// The ids acknowledged on `target`; empty when schema keymig has no keymig.acknowledged
/// (a read-only pass on a database keymig never wrote to).
[[nodiscard]] std::unordered_set<std::string> acknowledged_ids(Connection& conn,
                                                               const std::string& target);

/// Every acknowledged row of `target`, by row id.
[[nodiscard]] std::vector<AcknowledgedRow> list_acknowledged(Connection& conn,
                                                             const std::string& target);

/// Records the ids (one transaction); an id acknowledged before gets the new reason, by
/// and time. Returns how many rows were written.
std::int64_t add_acknowledged(Connection& conn, const std::string& target,
                              const std::vector<std::string>& ids, const std::string& reason,
                              const std::string& by);

/// Forgets the ids; returns those that were acknowledged (the others were not).
std::vector<std::string> remove_acknowledged(Connection& conn, const std::string& target,
                                             const std::vector<std::string>& ids);

}  // namespace keymig::db
