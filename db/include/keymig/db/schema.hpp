#pragma once

// keymig's own tables in schema `keymig` (docs/DESIGN.md section 4) and their versions.

#include "keymig/db/connection.hpp"

namespace keymig::db {

/// The keymig schema version this build creates and understands.
inline constexpr int kSchemaVersion = 8;

/// Creates schema `keymig` (runs, journal, chunks, requests, schema_version) if missing,
/// or upgrades it to kSchemaVersion. Idempotent and safe when several processes start at
/// once (advisory lock). Throws DbError; a newer schema version than kSchemaVersion is a
/// DbError too.
void ensure_schema(Connection& conn);

}  // namespace keymig::db
