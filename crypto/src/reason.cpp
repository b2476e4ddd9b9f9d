#include "keymig/crypto/fernet.hpp"

namespace keymig::crypto {

const char* reason_name(Reason reason) noexcept {
  switch (reason) {
    case Reason::ok:
      return "ok";
    case Reason::not_base64:
      return "not_base64";
    case Reason::non_canonical:
      return "non_canonical";
    case Reason::bad_version:
      return "bad_version";
    case Reason::too_short:
      return "too_short";
    case Reason::bad_length:
      return "bad_length";
    case Reason::unknown_key:
      return "unknown_key";
    case Reason::bad_padding:
      return "bad_padding";
    case Reason::expired:
      return "expired";
    case Reason::from_future:
      return "from_future";
  }
  return "unknown";
}

}  // namespace keymig::crypto
