#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace keymig::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };
enum class Format { text, json };

/// One `key=value` field of a log line. Values are ids, counts, fingerprints and
/// durations: never a key, a token or a plaintext.
struct Field {
  Field(std::string_view k, std::string_view v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, const char* v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, const std::string& v) : key(k), value(v), quoted(true) {}
  Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false"), quoted(false) {}
  Field(std::string_view k, double v);
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Field(std::string_view k, T v) : key(k), value(std::to_string(v)), quoted(false) {}

  std::string_view key;
  std::string value;
  bool quoted;
};

/// Thread-safe; call once at start-up (and again on a config reload).
void configure(Level min_level, Format format);
[[nodiscard]] bool enabled(Level level) noexcept;
[[nodiscard]] Format format() noexcept;
/// Writes one line to stderr. Thread-safe: lines never interleave.
void write(Level level, std::string_view module, std::string_view event,
           std::initializer_list<Field> fields = {});

[[nodiscard]] bool parse_level(std::string_view text, Level& out) noexcept;
[[nodiscard]] bool parse_format(std::string_view text, Format& out) noexcept;

}  // namespace keymig::log

// The level is checked before any field is formatted.
#define KEYMIG_LOG(level, module, event, ...)                                          \
  do {                                                                                 \
    if (::keymig::log::enabled(::keymig::log::Level::level))                           \
      ::keymig::log::write(::keymig::log::Level::level, module, event, {__VA_ARGS__}); \
  } while (0)
