#pragma once

// base64url as Fernet keys and tokens, the journal and the Pushgateway's label paths use
// it: the one encoder and the decoders every module shares. Thread-safe (no state).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace keymig {

/// Length of the canonical padded encoding of `n` bytes.
[[nodiscard]] constexpr std::size_t encoded_length(std::size_t n) {
  return (n + 2) / 3 * 4;
}
/// Upper bound of the bytes `chars` characters decode to.
[[nodiscard]] constexpr std::size_t decoded_capacity(std::size_t chars) {
  return chars / 4 * 3 + 3;
}

/// Canonical padded base64url; writes exactly encoded_length(len) characters.
void encode_base64url(const std::uint8_t* data, std::size_t len, char* out) noexcept;
/// The same into a string.
[[nodiscard]] std::string encode_base64url(std::string_view bytes);

/// Strict base64url: URL-safe alphabet only, padding either canonical or absent, unused
/// bits zero. `out` holds decoded_capacity(text.size()) bytes. False if not canonical.
[[nodiscard]] bool decode_base64url_strict(std::string_view text, std::uint8_t* out,
                                           std::size_t& out_len) noexcept;

/// What Python 3.11's `base64.urlsafe_b64decode` (binascii, non-strict) makes of a `str`
/// token, as cryptography 48 decodes it: skips non-alphabet characters, accepts '+' and
/// '/', stops at the first complete padding, ignores unused bits; refuses non-ASCII, a
/// missing padding and a lone trailing character. False if Python raises.
[[nodiscard]] bool decode_base64url_python_lenient(std::string_view text, std::uint8_t* out,
                                                   std::size_t& out_len) noexcept;

/// The bytes `text` spells when it is canonical padded base64url (the only spelling
/// Fernet implementations write), so that encoding them again gives `text` back; false
/// for any other text. `out` must hold text.size() / 4 * 3 bytes.
[[nodiscard]] bool decode_canonical_base64url(std::string_view text, std::uint8_t* out,
                                              std::size_t& out_len) noexcept;

}  // namespace keymig
