#pragma once

// Text keymig did not write, made safe to show: a server's message may quote a row (a
// trigger that RAISEs with NEW.secret), libpq's may quote the DSN it could not parse,
// password included, and a username may hold terminal escapes. Everything keymig prints,
// logs or stores from such a source goes through one of these first.

#include <string>
#include <string_view>

namespace keymig {

/// What replaces a token-shaped word.
inline constexpr std::string_view kRedactedToken = "[redacted token]";
/// What replaces a key-shaped word.
inline constexpr std::string_view kRedactedKey = "[redacted key]";
/// What replaces a password, a DSN or a quoted part of one.
inline constexpr std::string_view kRedacted = "[redacted]";

/// `text` with every word shaped like a Fernet token (base64 from "gAAAA", or any long
/// run of base64) replaced by kRedactedToken and every word shaped like a Fernet key (43
/// or 44 base64url characters) by kRedactedKey. Words are maximal runs of base64 and
/// base64url characters; an '=' followed by more of them is not padding and separates two
/// words (`x=KEY`). Thread-safe.
[[nodiscard]] std::string scrub_tokens(std::string_view text);

/// `text` with every occurrence of `secret` replaced by kRedacted; secrets shorter than 3
/// bytes are left alone (every "a" in a message is not a password). Thread-safe.
[[nodiscard]] std::string remove_secret(std::string text, std::string_view secret);

/// `text` with every double-quoted part ("...", quotes included) replaced by kRedacted,
/// except a quoted punctuation character ("=", "]"): what libpq quotes in a message
/// about a connection string is a piece of that string. An unclosed quote redacts to the
/// end. Thread-safe.
[[nodiscard]] std::string strip_quoted(std::string_view text);

/// `text` with control characters, DEL and bytes that are not valid UTF-8 as visible
/// escapes (\n, \t, \r, \x1b, \\ for a backslash), for a terminal: a username may hold
/// escape sequences. Valid UTF-8 beyond ASCII stays as it is. Thread-safe.
[[nodiscard]] std::string escape_control(std::string_view text);

}  // namespace keymig
