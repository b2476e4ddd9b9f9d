#pragma once

// The journal upkeep as the engine's other commands call it (journal_runs.cpp).

#include <string>

#include "keymig/db/connection.hpp"
#include "keymig/engine/engine.hpp"

namespace keymig::engine::detail {

/// maintain_journal on an open session, for the target labelled `target` (Table::label()):
/// the retention purge when `apply_retention` (and Options::journal_retention), then the
/// journal gauges.
JournalUpkeep upkeep_journal(db::Connection& conn, const std::string& target,
                             const Options& options, bool apply_retention);

/// upkeep_journal after a command that changed the journal, where a failure must not turn
/// the command's outcome into one: it is logged (warn) instead.
void upkeep_journal_after(db::Connection& conn, const std::string& target, const Options& options,
                          bool apply_retention, JournalUpkeep* out = nullptr) noexcept;

}  // namespace keymig::engine::detail
