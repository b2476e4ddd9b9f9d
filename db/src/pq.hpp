#pragma once

// db internals: the libpqxx session behind db::Connection, the translation of libpqxx
// exceptions into db::DbError at the module boundary (error.cpp), and the small helpers
// that turn values into statement parameters and fields back into values.

#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "keymig/db/connection.hpp"
#include "keymig/db/target.hpp"

namespace keymig::db {

struct Connection::Impl {
  ConnectOptions options;
  std::unique_ptr<pqxx::connection> conn;
  std::unordered_set<std::string> prepared;  // statement names prepared on `conn`

  /// The live session; throws a retryable DbError when it is gone.
  pqxx::connection& get();
  void open();
};

/// Rethrows the exception in flight as DbError (or lets keymig errors through), adding
/// `context` (what was being done) to the message. `connecting`: the session was being
/// opened, so a broken connection is one that never was (refused: DbError::refused(); or
/// could not connect), not one that was lost.
[[noreturn]] void rethrow_translated(std::string_view context, bool connecting = false);

/// Runs f(pqxx::connection&) and translates libpqxx exceptions.
template <typename F>
auto guarded(Connection& conn, std::string_view context, F&& f) {
  try {
    return f(conn.impl().get());
  } catch (...) {
    rethrow_translated(context);
  }
}

/// The name of `sql` as a prepared statement of this session, preparing it on first use.
/// For statements whose parameters are large: an unnamed statement is planned with its
/// parameters folded in as constants, and the planner copies those constants (whole
/// arrays of tokens) several times per execution. A prepared statement soon runs a
/// generic plan that refers to them instead.
[[nodiscard]] std::string prepared(Connection::Impl& impl, const std::string& sql);

namespace detail {
inline void append_array_element(std::string& out, std::string_view value, bool first) {
  if (!first) out.push_back(',');
  out.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}
}  // namespace detail

/// A PostgreSQL array literal of text elements ("{...}", each element quoted), for a
/// `$n::text[]` parameter; nullopt elements are NULL.
template <typename Value>  // std::string or std::optional<std::string>
[[nodiscard]] std::string text_array(const std::vector<Value>& values) {
  std::string out = "{";
  bool first = true;
  for (const auto& v : values) {
    if constexpr (std::is_same_v<Value, std::string>) {
      detail::append_array_element(out, v, first);
    } else if (v) {
      detail::append_array_element(out, *v, first);
    } else {
      out += first ? "NULL" : ",NULL";
    }
    first = false;
  }
  out.push_back('}');
  return out;
}

/// A text expression as a value of the secret column (bytea: its UTF-8 bytes).
[[nodiscard]] inline std::string secret_value(const Table& t, const std::string& text_expr) {
  return t.secret_is_bytea ? "convert_to(" + text_expr + ", 'UTF8')" : text_expr;
}

/// Nullable text parameter for exec_params.
[[nodiscard]] inline const char* opt_param(const std::optional<std::string>& v) {
  return v ? v->c_str() : nullptr;
}
[[nodiscard]] inline std::optional<std::string> opt_text(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return std::string(f.c_str(), f.size());
}
[[nodiscard]] inline std::optional<bool> opt_bool(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.c_str()[0] == 't';
}

}  // namespace keymig::db
