#pragma once

// The end-of-run conflict sweep: rows whose compare-and-swap missed (the application
// changed them under us) are read once more and handled as new rows.

#include <cstdint>

#include "batch_writer.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "throttle.hpp"

namespace keymig::engine::detail {

/// Sweeps out.conflict_ids on `conn` (outside any chunk: no checkpoint), folds what it
/// did into `out` (conflicts left: those still changed), adds it to the run's counts, and
/// returns the number of conflicts it resolved. Undecryptable rows whose ids are
/// `acknowledged` (may be null) are counted and marked so. Each batch waits for
/// `throttle` as the lanes' do. Throws DbError after retries.
std::int64_t sweep_conflicts(db::Connection& conn, const db::Table& table,
                             const crypto::KeyRing& keys, const Options& options,
                             const std::string& run_id, Outcome& out,
                             const AcknowledgedIds* acknowledged, Throttle& throttle);

}  // namespace keymig::engine::detail
