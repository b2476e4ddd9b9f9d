#pragma once

// Cheap refusals of hostile values.yaml shapes before yaml-cpp builds its tree: a file too
// big, nesting too deep (yaml-cpp's parser recurses per level, and slows on deep input) and
// too many aliases (each `*name` is a way back into a shared subtree: a billion-laughs file
// is a few hundred of them). Module-private: config::load calls it for every file.

#include <cstddef>
#include <string>
#include <string_view>

namespace keymig::config::detail {

struct YamlLimits {
  // A values file delivered as a ConfigMap or Secret cannot exceed 1 MiB either.
  std::size_t max_bytes = 1024 * 1024;
  // Block indentation levels (a `- ` or `? ` on a line counts as one) plus open flow
  // brackets. Helm values nest about 10 deep.
  int max_depth = 64;
  // `*name` aliases in one file.
  int max_aliases = 1000;
};

/// Reads at most limits.max_bytes from `path` (a FIFO or /dev/zero cannot make it read
/// forever). Throws ConfigError naming the file: unreadable, or over the size limit.
[[nodiscard]] std::string read_limited(const std::string& path, const YamlLimits& limits = {});

/// Scans `text` (the content of `file`) for nesting depth and alias count, understanding
/// quotes, comments, block scalars and flow collections well enough that a valid file
/// is never refused for what sits inside a string or comment. Throws ConfigError naming the
/// file, the line and the limit, never quoting the text.
void check_yaml_limits(std::string_view text, const std::string& file,
                       const YamlLimits& limits = {});

}  // namespace keymig::config::detail
