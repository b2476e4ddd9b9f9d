#pragma once

// Comma lists as operators write them (--ids 1,2, libpq's host=a,b): the one splitter, so
// that every list keymig reads has the same rule for spaces and empty items.

#include <string>
#include <string_view>
#include <vector>

namespace keymig {

/// Splits "a,b, c" on commas and trims spaces and tabs around each item. Empty items are
/// kept (as ""), so that the caller decides: the CLI refuses them, libpq lists allow them.
/// "" is one empty item. Thread-safe.
[[nodiscard]] std::vector<std::string> split_list(std::string_view text);

}  // namespace keymig
