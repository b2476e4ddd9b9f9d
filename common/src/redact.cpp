#include "keymig/redact.hpp"

#include <algorithm>
#include <cstdio>

namespace keymig {

namespace {

bool is_base64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

// Both alphabets and padding: a token pasted through a tool that used the standard
// alphabet is still a token.
bool is_word_char(char c) {
  return is_base64url(c) || c == '+' || c == '/' || c == '=';
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Long enough that no message keymig or PostgreSQL writes has such a word, short enough
// that a cut token (a varchar too small) is still caught: a whole token is over 100.
constexpr std::size_t kLongWord = 60;

bool mixes_cases_and_digits(std::string_view w) {
  bool upper = false, lower = false, digit = false;
  for (char c : w) {
    upper = upper || (c >= 'A' && c <= 'Z');
    lower = lower || (c >= 'a' && c <= 'z');
    digit = digit || (c >= '0' && c <= '9');
  }
  return upper && lower && digit;
}

// A Fernet key: 32 bytes as base64url, 44 characters with one '=' (43 without), or as
// 64 hex digits.
bool looks_like_key(std::string_view w) {
  if (w.size() == 64 && std::all_of(w.begin(), w.end(), is_hex)) return true;
  std::string_view body = w;
  if (body.size() == 44 && body.back() == '=') body.remove_suffix(1);
  if (body.size() != 43) return false;
  return std::all_of(body.begin(), body.end(),
                     [](char c) { return is_base64url(c) || c == '+' || c == '/'; }) &&
         mixes_cases_and_digits(body);
}

bool looks_like_token(std::string_view w) {
  // Version 0x80 and a timestamp below 2^32: every token of this era begins "gAAAAA".
  if (w.find("gAAAA") != std::string_view::npos) return true;
  if (w.size() < kLongWord) return false;
  // A long path or a digest is not a token.
  if (w.find('/') != std::string_view::npos && w.find('+') == std::string_view::npos) return false;
  return mixes_cases_and_digits(w);
}

}  // namespace

std::string scrub_tokens(std::string_view text) {
  // '=' is base64's padding, so it only ends a word: one before more base64 is a
  // separator, or `name=KEY` (a key pasted into --option=) would be one word too long to
  // look like a key.
  const auto in_word = [&](std::size_t at) {
    if (!is_word_char(text[at])) return false;
    return text[at] != '=' || at + 1 == text.size() || text[at + 1] == '=' ||
           !is_word_char(text[at + 1]);
  };
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (!in_word(i)) {
      out.push_back(text[i++]);
      continue;
    }
    std::size_t end = i;
    while (end < text.size() && in_word(end)) ++end;
    const std::string_view word = text.substr(i, end - i);
    if (looks_like_token(word))
      out += kRedactedToken;
    else if (looks_like_key(word))
      out += kRedactedKey;
    else
      out += word;
    i = end;
  }
  return out;
}

std::string remove_secret(std::string text, std::string_view secret) {
  if (secret.size() < 3) return text;
  for (auto at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + kRedacted.size()))
    text.replace(at, secret.size(), kRedacted);
  return text;
}

std::string strip_quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '"') {
      out.push_back(text[i++]);
      continue;
    }
    const auto close = text.find('"', i + 1);
    if (close == std::string_view::npos) {
      out += kRedacted;
      break;
    }
    const std::string_view inner = text.substr(i + 1, close - i - 1);
    const bool punctuation = inner.size() == 1 && !is_base64url(inner[0]) && inner[0] != ' ';
    if (punctuation)
      out.append(text.substr(i, close - i + 1));
    else
      out += kRedacted;
    i = close + 1;
  }
  return out;
}

namespace {

// Length of the valid UTF-8 sequence at text[i] (2..4), or 0.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto b = static_cast<unsigned char>(text[i]);
  std::size_t n = 0;
  unsigned min = 0;
  unsigned cp = 0;
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2, min = 0x80, cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3, min = 0x800, cp = b & 0x0F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4, min = 0x10000, cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto c = static_cast<unsigned char>(text[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  // C1 controls (U+0080..U+009F) act as escapes on some terminals.
  if (cp >= 0x80 && cp <= 0x9F) return 0;
  return n;
}

}  // namespace

std::string escape_control(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F) {
      if (c == '\\') out.push_back('\\');
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t n = utf8_sequence(text, i)) {
        out.append(text.substr(i, n));
        i += n;
        continue;
      }
    }
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default: {
        char buf[5];
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
        out += buf;
      }
    }
    ++i;
  }
  return out;
}

}  // namespace keymig
