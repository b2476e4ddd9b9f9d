#pragma once

// db internals: arrays in PostgreSQL's binary array format (array_recv), sent as binary
// parameters. One dimension, lower bound 1, then each element as a 4-byte big-endian
// length (-1: NULL) and its bytes. The server reads it without array_in's per-element
// parsing, which was a seventh of a batch's time.

#include <cstddef>
#include <cstdint>
#include <pqxx/binarystring>
#include <string>
#include <string_view>

#include "keymig/secure.hpp"

namespace keymig::db {

inline constexpr std::uint32_t kBoolOid = 16;
inline constexpr std::uint32_t kByteaOid = 17;
inline constexpr std::uint32_t kTextOid = 25;
/// The length word of a NULL element.
inline constexpr std::uint32_t kNullLength = 0xFFFFFFFFu;

/// Writes v big-endian at out[at, at + 4), which must exist.
inline void set_u32(std::string& out, std::size_t at, std::uint32_t v) {
  out[at] = static_cast<char>(v >> 24);
  out[at + 1] = static_cast<char>(v >> 16);
  out[at + 2] = static_cast<char>(v >> 8);
  out[at + 3] = static_cast<char>(v);
}

inline void put_u32(std::string& out, std::uint32_t v) {
  out.append(4, '\0');
  set_u32(out, out.size() - 4, v);
}

/// The header of an array of n elements of type elem_oid, with room reserved for
/// `payload` more bytes (the elements with their length words).
[[nodiscard]] inline std::string array_header(std::uint32_t elem_oid, std::size_t n, bool has_null,
                                              std::size_t payload) {
  std::string out;
  out.reserve(20 + payload);
  put_u32(out, 1);
  put_u32(out, has_null ? 1 : 0);
  put_u32(out, elem_oid);
  put_u32(out, static_cast<std::uint32_t>(n));
  put_u32(out, 1);
  return out;
}

inline void put_element(std::string& out, std::string_view v) {
  put_u32(out, static_cast<std::uint32_t>(v.size()));
  out.append(v);
}

/// A binary parameter libpqxx sends as is. Its buffer is shared with the copy libpqxx
/// keeps while the statement runs, so wiping it after the call wipes that copy too.
class BinaryParam {
 public:
  explicit BinaryParam(std::string_view bytes) : value_(bytes.data(), bytes.size()) {}
  BinaryParam(const BinaryParam&) = delete;
  BinaryParam& operator=(const BinaryParam&) = delete;
  ~BinaryParam() { secure_wipe(const_cast<unsigned char*>(value_.data()), value_.size()); }
  [[nodiscard]] const pqxx::binarystring& get() const noexcept { return value_; }

 private:
  pqxx::binarystring value_;
};

}  // namespace keymig::db
