#pragma once

// The journal upkeep as the engine's other commands call it (journal_runs.cpp).

#include <string>

#include "command_record.hpp"
#include "keymig/crypto/fernet.hpp"
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

/// finalize's checks on options.target, writing nothing but the verify's baseline: the
/// report with `reason` saying what stands in the way, or empty when nothing does.
[[nodiscard]] FinalizeReport check_finalize(const crypto::KeyRing& keys, const Options& options,
                                            const std::string& run_id, CommandRecord* record);
/// What finalize does once check_finalize found nothing in the way: deletes the run's
/// journal, sets it finalized, records success.
void commit_finalize(const Options& options, FinalizeReport& report, CommandRecord& record);

}  // namespace keymig::engine::detail
