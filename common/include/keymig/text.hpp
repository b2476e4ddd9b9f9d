#pragma once

// Text keymig reads from operators and libraries: comma lists as operators write them
// (--ids 1,2, libpq's host=a,b), one splitter so that every list has the same rule for
// spaces and empty items; and messages that may span lines, made one line for a log field
// or a request's result.

#include <string>
#include <string_view>
#include <vector>

namespace keymig {

/// Splits "a,b, c" on commas and trims spaces and tabs around each item. Empty items are
/// kept (as ""), so that the caller decides: the CLI refuses them, libpq lists allow them.
/// "" is one empty item. Thread-safe.
[[nodiscard]] std::vector<std::string> split_list(std::string_view text);

/// `text` with its line breaks and tabs as spaces and no trailing space: libpq's and the
/// server's messages end with a newline and may span lines. Thread-safe.
[[nodiscard]] std::string one_line(std::string text);

}  // namespace keymig
