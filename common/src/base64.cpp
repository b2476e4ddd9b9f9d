#include "keymig/base64.hpp"

#include <array>
#include <cstring>

namespace keymig {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::uint8_t kInvalid = 0xFF;

// Built at compile time; `lenient` also maps the standard alphabet's '+' and '/', as
// urlsafe_b64decode's translate step leaves them in place for the standard decoder.
constexpr std::array<std::uint8_t, 256> make_table(bool lenient) {
  std::array<std::uint8_t, 256> table{};
  for (auto& v : table) v = kInvalid;
  for (std::uint8_t i = 0; i < 64; ++i) table[static_cast<unsigned char>(kAlphabet[i])] = i;
  if (lenient) {
    table['+'] = 62;
    table['/'] = 63;
  }
  return table;
}

constexpr std::array<std::uint8_t, 256> kStrict = make_table(false);
constexpr std::array<std::uint8_t, 256> kLenient = make_table(true);

// One table per position in a quad, pre-shifted, so a quad is four loads and three ORs.
// An invalid character sets bit 24, which no valid combination reaches.
constexpr std::uint32_t kBadBit = 1u << 24;
constexpr std::array<std::uint32_t, 256> make_shifted(int shift) {
  std::array<std::uint32_t, 256> table{};
  for (std::size_t c = 0; c < 256; ++c)
    table[c] = kStrict[c] == kInvalid ? kBadBit : std::uint32_t{kStrict[c]} << shift;
  return table;
}
constexpr std::array<std::uint32_t, 256> kQuad0 = make_shifted(18);
constexpr std::array<std::uint32_t, 256> kQuad1 = make_shifted(12);
constexpr std::array<std::uint32_t, 256> kQuad2 = make_shifted(6);
constexpr std::array<std::uint32_t, 256> kQuad3 = make_shifted(0);

// Two output characters per 12 input bits, stored in memory order: little-endian only.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kPairs assumes little-endian");
constexpr std::array<std::uint16_t, 4096> make_pairs() {
  std::array<std::uint16_t, 4096> table{};
  for (std::size_t v = 0; v < 4096; ++v) {
    const auto hi = static_cast<std::uint8_t>(kAlphabet[v >> 6]);
    const auto lo = static_cast<std::uint8_t>(kAlphabet[v & 63]);
    table[v] = static_cast<std::uint16_t>(hi | (lo << 8));  // little-endian byte order
  }
  return table;
}
constexpr std::array<std::uint16_t, 4096> kPairs = make_pairs();

inline std::uint8_t lookup(const std::array<std::uint8_t, 256>& table, char c) {
  return table[static_cast<unsigned char>(c)];
}

}  // namespace

void encode_base64url(const std::uint8_t* data, std::size_t len, char* out) noexcept {
  std::size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            std::uint32_t{data[i + 2]};
    const std::uint32_t quad =
        std::uint32_t{kPairs[v >> 12]} | (std::uint32_t{kPairs[v & 4095]} << 16);
    std::memcpy(out, &quad, 4);
    out += 4;
  }
  const std::size_t rest = len - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16;
    out[0] = kAlphabet[(v >> 18) & 63];
    out[1] = kAlphabet[(v >> 12) & 63];
    out[2] = '=';
    out[3] = '=';
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out[0] = kAlphabet[(v >> 18) & 63];
    out[1] = kAlphabet[(v >> 12) & 63];
    out[2] = kAlphabet[(v >> 6) & 63];
    out[3] = '=';
  }
}

std::string encode_base64url(std::string_view bytes) {
  std::string out(encoded_length(bytes.size()), '\0');
  encode_base64url(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), out.data());
  return out;
}

bool decode_base64url_strict(std::string_view text, std::uint8_t* out,
                             std::size_t& out_len) noexcept {
  std::size_t data_len = text.size();
  while (data_len > 0 && text[data_len - 1] == '=') --data_len;
  const std::size_t pads = text.size() - data_len;
  const std::size_t rem = data_len % 4;
  if (rem == 1) return false;
  if (pads != 0 && pads != (rem == 0 ? 0 : 4 - rem)) return false;

  const char* in = text.data();
  std::uint8_t* o = out;
  std::uint8_t bad = 0;
  const std::size_t full = data_len - rem;
  std::uint32_t bad_quads = 0;
  for (std::size_t i = 0; i < full; i += 4) {
    const auto* q = reinterpret_cast<const unsigned char*>(in + i);
    const std::uint32_t v = kQuad0[q[0]] | kQuad1[q[1]] | kQuad2[q[2]] | kQuad3[q[3]];
    bad_quads |= v;
    const std::uint8_t bytes[3] = {static_cast<std::uint8_t>(v >> 16),
                                   static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    std::memcpy(o, bytes, 3);
    o += 3;
  }
  if ((bad_quads & kBadBit) != 0) return false;
  if (rem == 2) {
    const std::uint8_t a = lookup(kStrict, in[full]);
    const std::uint8_t b = lookup(kStrict, in[full + 1]);
    bad |= a | b;
    if ((b & 0x0F) != 0) bad |= 0x80;  // unused bits must be zero
    *o++ = static_cast<std::uint8_t>((a << 2) | (b >> 4));
  } else if (rem == 3) {
    const std::uint8_t a = lookup(kStrict, in[full]);
    const std::uint8_t b = lookup(kStrict, in[full + 1]);
    const std::uint8_t c = lookup(kStrict, in[full + 2]);
    bad |= a | b | c;
    if ((c & 0x03) != 0) bad |= 0x80;
    *o++ = static_cast<std::uint8_t>((a << 2) | (b >> 4));
    *o++ = static_cast<std::uint8_t>((b << 4) | (c >> 2));
  }
  // Valid sextets are below 64, so any invalid character leaves a high bit set.
  if ((bad & 0xC0) != 0) return false;
  out_len = static_cast<std::size_t>(o - out);
  return true;
}

bool decode_base64url_python_lenient(std::string_view text, std::uint8_t* out,
                                     std::size_t& out_len) noexcept {
  // Mirrors CPython 3.11 binascii.a2b_base64(strict_mode=False), the decoder under
  // cryptography 48's Fernet; kept separate from the fast path because it only runs on
  // text the strict decoder refused.
  for (const char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;  // str: ValueError
  std::uint8_t* o = out;
  int quad_pos = 0;
  int pads = 0;
  std::uint8_t left = 0;
  for (const char ch : text) {
    if (ch == '=') {
      if (quad_pos >= 2 && quad_pos + ++pads >= 4) {
        out_len = static_cast<std::size_t>(o - out);
        return true;
      }
      continue;
    }
    const std::uint8_t v = lookup(kLenient, ch);
    if (v >= 64) continue;
    pads = 0;
    switch (quad_pos) {
      case 0:
        quad_pos = 1;
        left = v;
        break;
      case 1:
        quad_pos = 2;
        *o++ = static_cast<std::uint8_t>((left << 2) | (v >> 4));
        left = v & 0x0F;
        break;
      case 2:
        quad_pos = 3;
        *o++ = static_cast<std::uint8_t>((left << 4) | (v >> 2));
        left = v & 0x03;
        break;
      default:
        quad_pos = 0;
        *o++ = static_cast<std::uint8_t>((left << 6) | v);
        left = 0;
        break;
    }
  }
  if (quad_pos != 0) return false;  // a lone character, or "Incorrect padding"
  out_len = static_cast<std::size_t>(o - out);
  return true;
}

bool decode_canonical_base64url(std::string_view text, std::uint8_t* out,
                                std::size_t& out_len) noexcept {
  // The strict decoder also takes unpadded text, which does not spell itself back.
  return text.size() % 4 == 0 && decode_base64url_strict(text, out, out_len);
}

}  // namespace keymig
