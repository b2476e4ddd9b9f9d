#include "keymig/config/config.hpp"
#include "keymig/redact.hpp"

namespace keymig::config {

ConfigError::ConfigError(const std::string& what) : UsageError(scrub_tokens(what)) {}

std::string Origin::describe() const {
  // Both come from outside: a YAML map key is whatever the file holds (a key pasted one
  // line too deep is a map key), and a file name or a key may hold terminal escapes.
  std::string out = escape_control(file);
  if (line > 0) out += ":" + std::to_string(line);
  if (!key.empty()) out += (out.empty() ? "" : " ") + escape_control(scrub_tokens(key));
  return out;
}

}  // namespace keymig::config
