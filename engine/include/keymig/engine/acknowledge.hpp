#pragma once

// Acknowledged undecryptable rows (docs/DESIGN.md sections 3 and 4): an operator records,
// by id and with a reason, rows no key will ever read (orphans whose key is gone), so
// that they are still reported but no longer fail scan, migrate, verify or check-config
// --with-db. A new undecryptable row still does.

#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/db/acknowledged.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine {

/// What `keymig acknowledge` did or lists. Ids, reasons, names and times; no token.
struct AcknowledgeReport {
  std::string target;
  std::string action;                         // add | list | remove
  std::vector<db::AcknowledgedRow> rows;      // add: those recorded; list: all of the target
  std::vector<std::string> removed;           // remove: ids forgotten
  std::vector<std::string> not_acknowledged;  // remove: ids that were not acknowledged
  [[nodiscard]] std::string to_json() const;
};

/// Records the ids as acknowledged on the configured target, with `reason` and `by`.
/// All or nothing: an id with no row, or whose row a configured key reads (or is empty),
/// is a UsageError (exit 2) naming it, and nothing is recorded. Creates schema keymig if
/// missing. Throws db::TargetError, db::DbError, UsageError.
[[nodiscard]] AcknowledgeReport acknowledge_rows(const crypto::KeyRing& keys,
                                                 const Options& options,
                                                 const std::vector<std::string>& ids,
                                                 const std::string& reason, const std::string& by);

/// The target's acknowledged rows (none when schema keymig is not there).
[[nodiscard]] AcknowledgeReport list_acknowledged_rows(const Options& options);

/// Forgets the ids on the target: their rows fail runs again while undecryptable.
[[nodiscard]] AcknowledgeReport remove_acknowledged_rows(const Options& options,
                                                         const std::vector<std::string>& ids);

}  // namespace keymig::engine
