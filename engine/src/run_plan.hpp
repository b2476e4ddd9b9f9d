#pragma once

// Plan or resume a migration: which run (the named one, the newest unfinished one of the
// same target and selection, or a new one), how its id range is cut into chunks, and the
// run's creation and claim in keymig.runs.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// A selection as keymig.runs.selection keeps it ("null" for the whole target).
[[nodiscard]] std::string selection_json(const db::Selection& selection);

struct RunPlan {
  std::optional<db::Run> run;  // none for a dry run
  bool resumed = false;        // an earlier run resumed or joined
  std::int64_t total = 0;      // rows to read, for progress
};

/// Chooses, creates (with its chunks) or joins the run and claims it for this process.
/// `options` is this call's copy: a resumed run's selection and journal setting replace
/// the given ones. `max_lanes` sizes the chunks of a new run. Throws UsageError for a
/// named run that cannot be resumed (other kind, target or active key; rolled back,
/// finalized), DbError.
[[nodiscard]] RunPlan plan_run(db::Connection& reader, const db::Table& table,
                               const crypto::KeyRing& keys, Options& options, int max_lanes);

}  // namespace keymig::engine::detail
