#include "codec.hpp"

namespace keymig::crypto::detail {

Reason decode_token_text(std::string_view text, Buffer& out) noexcept {
  std::size_t len = 0;
  if (decode_base64url_strict(text, out.data(), len)) {
    out.shrink(len);
    return Reason::ok;
  }
  if (decode_base64url_python_lenient(text, out.data(), len)) {
    out.shrink(len);
    return Reason::non_canonical;
  }
  return Reason::not_base64;
}

}  // namespace keymig::crypto::detail
