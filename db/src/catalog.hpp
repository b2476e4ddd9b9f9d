#pragma once

// The one catalog query for a target's columns: check_target and check_user_table both
// ask it.

#include <optional>
#include <string>

#include "pq.hpp"

namespace keymig::db {

inline constexpr unsigned kOidBool = 16;
inline constexpr unsigned kOidBytea = 17;
inline constexpr unsigned kOidText = 25;
inline constexpr unsigned kOidVarchar = 1043;

/// A column as the catalog describes it.
struct Column {
  unsigned type_oid = 0;
  unsigned base_oid = 0;  // through domains
  std::string type_name;
  bool not_null = false;
  bool unique = false;  // a unique index (no predicate, no expression) over exactly it
  int max_chars = -1;   // varchar(n), directly or through a domain: n; else -1
};

/// The live column `name` of relation `rel` (an oid), or nullopt. Throws pqxx errors
/// (callers run it inside guarded()).
[[nodiscard]] std::optional<Column> find_column(pqxx::transaction_base& tx, unsigned rel,
                                                const std::string& name);

}  // namespace keymig::db
