#include "keymig/secure.hpp"

#include <cstring>

namespace keymig {

void secure_wipe(void* data, std::size_t size) noexcept {
  if (data != nullptr && size != 0) explicit_bzero(data, size);
}

}  // namespace keymig
