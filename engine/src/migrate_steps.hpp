#pragma once

// migrate's steps, so that a migrate over several targets (targets.cpp) checks every
// target before it writes in any: check (reads only), then the schema, then the pre-flight
// (reads only), then the run.

#include <optional>
#include <string>
#include <vector>

#include "batch.hpp"
#include "command_record.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"
#include "keymig/engine/engine.hpp"
#include "lanes.hpp"

namespace keymig::engine::detail {

/// What migrate knows of options.target before it writes.
struct MigratePrep {
  db::Table table;
  std::vector<std::string> not_found;  // selected ids or usernames with no row
  AcknowledgedIds acknowledged;
  std::optional<PreflightCheck> preflight;  // none for a dry run
};

/// The target, its privileges and the selection; writes nothing. Throws TargetError,
/// UsageError, DbError.
[[nodiscard]] MigratePrep check_migrate(db::Connection& reader, const Options& options);

/// The acknowledged ids and the lockout pre-flight (needs schema keymig; writes nothing).
/// Throws UsageError when the pre-flight refuses.
void preflight_migrate(db::Connection& reader, const crypto::KeyRing& keys, const Options& options,
                       MigratePrep& prep);

/// Plans or resumes the run, runs the lanes, sweeps, completes, reports; records the
/// outcome in `record`.
[[nodiscard]] MigrateReport run_migrate(const crypto::KeyRing& keys, const Options& options,
                                        db::Connection& reader, LaneSessions& sessions,
                                        MigratePrep prep, CommandRecord& record);

}  // namespace keymig::engine::detail
