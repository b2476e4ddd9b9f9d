#pragma once

// The rotation commands over every selected target (Options::targets) as one command
// (docs/DESIGN.md section 3, "Several targets"): each target's report in config order, and
// their sum, which keeps the fields, exit codes and success rules of one target's report.
//
// Every target is checked against the database before any is written. With one target a
// call is exactly the engine.hpp call; with several, a migrate is one run "RUN" made of one
// run per target, "RUN/name" (keymig.runs.run_group = RUN), each with its own chunks,
// checkpoint, journal and counts. The commands that take a run id take RUN or "RUN/name".

#include <string>
#include <vector>

#include "keymig/engine/engine.hpp"

namespace keymig::engine {

/// One command's reports: `each[i]` is the report on `names[i]`; `total` sums them.
template <class Report>
struct Across {
  std::vector<std::string> names;
  std::vector<Report> each;
  Report total;
  /// total's JSON plus "targets": [each report's JSON with its "name"].
  [[nodiscard]] std::string to_json() const;
  [[nodiscard]] int exit_code() const noexcept { return total.exit_code(); }
};

using ScanAcross = Across<ScanReport>;
using MigrateAcross = Across<MigrateReport>;
using VerifyAcross = Across<VerifyReport>;
using RollbackAcross = Across<RollbackReport>;
using FinalizeAcross = Across<FinalizeReport>;

/// Narrows options.targets (every configured target, as options_from_config sets them) to
/// those `names` (all when empty), config order kept; the others go to
/// unselected_targets. Throws ConfigError for a name no target has.
void select_targets(Options& options, const std::vector<std::string>& names);

/// The run id of one target's part of a run over several targets: "RUN/name".
[[nodiscard]] std::string member_run_id(const std::string& run, const std::string& name);

[[nodiscard]] ScanAcross scan_targets(const crypto::KeyRing& keys, const Options& options);

/// Migrates the targets in order under one run. Without run_id it resumes the newest
/// unfinished run over these targets (same selection, same active key), skipping the
/// targets whose part completed; several processes given one run_id share every target's
/// chunks. A stop (signal, critical load) leaves the later targets for the resume. A
/// selection (ids, usernames) needs exactly one target: UsageError otherwise.
[[nodiscard]] MigrateAcross migrate_targets(const crypto::KeyRing& keys, const Options& options);

/// Verifies every target; with run_id, each target's part of that run is journal-checked.
[[nodiscard]] VerifyAcross verify_targets(const crypto::KeyRing& keys, const Options& options,
                                          const std::string& run_id = {});

/// Rolls back every part of the run on the selected targets.
[[nodiscard]] RollbackAcross rollback_targets(const Options& options, const std::string& run_id);

/// Checks every selected target (verify, and each part's journal), and finalizes the run's
/// parts only when none of them stands in the way and no row of any selected target needs
/// a rolling key: total.targets_needing_rolling names those that do. The rolling key is
/// retirable only when every configured target was checked.
[[nodiscard]] FinalizeAcross finalize_targets(const crypto::KeyRing& keys, const Options& options,
                                              const std::string& run_id);

/// `journal purge --run-id` of every part of a rolled-back run.
[[nodiscard]] PurgeReport purge_run_journals(const Options& options, const std::string& run_id);

}  // namespace keymig::engine
