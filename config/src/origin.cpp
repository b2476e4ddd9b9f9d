#include "keymig/config/config.hpp"

namespace keymig::config {

std::string Origin::describe() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  if (!key.empty()) out += (out.empty() ? "" : " ") + key;
  return out;
}

}  // namespace keymig::config
