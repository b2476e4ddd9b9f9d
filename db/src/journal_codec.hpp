#pragma once

// db internals: the form in which keymig.journal keeps a token (docs/DESIGN.md section 4,
// schema version 5). A canonical token is kept as the bytes it spells (they start with
// Fernet's version byte 0x80), anything else as a 0x00 tag and the text as it was;
// keymig.journal_text() spells either back exactly. A token is 3/4 of its text, which
// takes a fifth off each journal row, and so off the bytes a large run writes.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "binary_array.hpp"
#include "keymig/secure.hpp"

namespace keymig::db {

/// The most bytes put_journal_element appends for a token of `text_size` characters,
/// its length word included.
[[nodiscard]] constexpr std::size_t journal_element_bound(std::size_t text_size) noexcept {
  return 4 + 1 + text_size;
}

/// Appends `token` to a bytea[] in binary array format as one element in the journal's
/// form. `out` must have journal_element_bound(token.size()) bytes of spare capacity: a
/// reallocation would leave an unwiped copy of the tokens so far behind.
void put_journal_element(std::string& out, std::string_view token);

/// A bytea[] of each item's `token` in the journal's form, built in a buffer sized up
/// front and wiped when the result goes. `items`: a vector, or any range with size().
template <typename Items, typename Item>
[[nodiscard]] SecretString journal_array(const Items& items, SecretString Item::*token) {
  std::size_t payload = 0;
  for (const auto& item : items) payload += journal_element_bound((item.*token).size());
  std::string out = array_header(kByteaOid, items.size(), false, payload);
  for (const auto& item : items) put_journal_element(out, (item.*token).view());
  return SecretString(std::move(out));
}

}  // namespace keymig::db
