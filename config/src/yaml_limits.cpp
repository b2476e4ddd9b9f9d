#include "yaml_limits.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/secure.hpp"

namespace keymig::config::detail {
namespace {

[[noreturn]] void refuse(const std::string& file, int line, const std::string& problem) {
  throw ConfigError(Origin{file, line, ""}.describe() + ": " + problem);
}

std::string limit_note() { return " (a limit of keymig's values.yaml loader); refused before parsing"; }

bool is_blank(char c) { return c == ' ' || c == '\t'; }
bool is_break(char c) { return c == '\n' || c == '\r'; }
bool is_flow_indicator(char c) {
  return c == ',' || c == '[' || c == ']' || c == '{' || c == '}';
}

// One pass over the text, a line at a time in block context and a character at a time
// inside flow collections and quoted scalars. It follows YAML only as far as it must to
// know what is structure and what is text: quoted scalars, plain scalars (a `[` inside
// `a[0]` is text), comments (` #`), block scalars (`|`, `>`: their lines are text) and
// flow collections. Depth is the open block levels (indentation columns, one more for each
// `- `, `? ` or `: ` that starts a nested node on the same line) plus open flow brackets.
class Scanner {
 public:
  Scanner(std::string_view text, const std::string& file, const YamlLimits& limits)
      : s_(text), file_(file), limits_(limits) {}

  void run() {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") i_ = 3;
    while (i_ < s_.size()) line();
  }

 private:
  static constexpr int kNoBlockScalar = -2;

  // --- positions ---
  bool at_end() const { return i_ >= s_.size(); }
  char peek(std::size_t ahead = 0) const {
    return i_ + ahead < s_.size() ? s_[i_ + ahead] : '\0';
  }
  bool eol() const { return at_end() || is_break(s_[i_]); }
  // End of input, a blank or a line break after position i_ + ahead.
  bool blank_at(std::size_t ahead) const {
    return i_ + ahead >= s_.size() || is_blank(s_[i_ + ahead]) || is_break(s_[i_ + ahead]);
  }
  int column() const { return static_cast<int>(i_ - line_start_); }
  void skip_blanks() {
    while (!at_end() && is_blank(s_[i_])) ++i_;
  }
  void newline() {  // at a '\n'
    ++i_;
    ++line_;
    line_start_ = i_;
  }
  void next_line() {
    const std::size_t nl = s_.find('\n', i_);
    if (nl == std::string_view::npos) {
      i_ = s_.size();
      return;
    }
    i_ = nl;
    newline();
  }

  // --- limits ---
  void check_depth() const {
    const std::size_t depth = block_.size() + static_cast<std::size_t>(flow_);
    if (depth > static_cast<std::size_t>(limits_.max_depth))
      refuse(file_, line_,
             "nesting deeper than " + std::to_string(limits_.max_depth) + " levels" + limit_note());
  }
  void push_block(int col) {
    block_.push_back(col);
    check_depth();
  }
  void alias() {
    if (++aliases_ > limits_.max_aliases)
      refuse(file_, line_,
             "more than " + std::to_string(limits_.max_aliases) + " aliases (*name)" + limit_note());
  }

  // --- pieces ---
  // An anchor, alias or tag name: up to a blank, a line break or (in flow) a flow indicator.
  void skip_name() {
    ++i_;  // the '&', '*' or '!'
    if (peek() == '<') {  // a verbatim tag !<...>
      while (!eol() && peek() != '>') ++i_;
      if (!eol()) ++i_;
      return;
    }
    while (!at_end() && !is_blank(s_[i_]) && !is_break(s_[i_]) &&
           !(flow_ > 0 && is_flow_indicator(s_[i_])))
      ++i_;
  }

  // A quoted scalar, possibly over several lines: nothing inside it is structure.
  void quoted() {
    const char quote = s_[i_++];
    while (!at_end()) {
      const char c = s_[i_];
      if (c == '\n') {
        newline();
      } else if (quote == '"' && c == '\\') {
        ++i_;
        if (peek() == '\n')
          newline();
        else if (!at_end())
          ++i_;
      } else if (c == quote) {
        ++i_;
        if (quote == '\'' && peek() == '\'') {
          ++i_;  // '' is a quote inside a single-quoted scalar
          continue;
        }
        return;
      } else {
        ++i_;
      }
    }
  }

  // A plain scalar in block context, to the end of the line, a ` #` comment or a `: ` that
  // makes it a key. True when a value follows (the key's `:` has been consumed).
  bool plain_block() {
    while (!eol()) {
      const char c = s_[i_];
      if (c == ':' && blank_at(1)) {
        ++i_;
        return true;
      }
      if (c == '#' && i_ > line_start_ && is_blank(s_[i_ - 1])) {
        next_line();
        return false;
      }
      ++i_;
    }
    if (!at_end()) next_line();
    return false;
  }

  // A plain scalar inside a flow collection: it cannot hold a flow indicator.
  void plain_flow() {
    ++i_;  // its first character, whatever it is
    while (!at_end()) {
      const char c = s_[i_];
      if (is_break(c) || is_flow_indicator(c)) return;
      if (c == ':' && (blank_at(1) || is_flow_indicator(peek(1)))) return;
      if (c == '#' && is_blank(s_[i_ - 1])) return;
      ++i_;
    }
  }

  // From a '[' or '{' to its matching bracket, across lines; indentation means nothing here.
  // A `key: value` entry of a flow sequence is a map of its own, one level more: `open_`
  // holds 'p' for it until its `,` or `]`.
  void open(char kind) {
    open_.push_back(kind);
    flow_ = static_cast<int>(open_.size());
    check_depth();
  }
  void close_pair() {
    if (!open_.empty() && open_.back() == 'p') open_.pop_back();
    flow_ = static_cast<int>(open_.size());
  }
  void pair_indicator() {
    if (!open_.empty() && open_.back() == '[') open('p');
  }

  void flow() {
    open(s_[i_++]);
    while (!open_.empty() && !at_end()) {
      const char c = s_[i_];
      if (c == '\n') {
        newline();
      } else if (is_blank(c) || c == '\r') {
        ++i_;
      } else if (c == ',') {
        close_pair();
        ++i_;
      } else if (c == '#' && (i_ == line_start_ || is_blank(s_[i_ - 1]))) {
        while (!eol()) ++i_;
      } else if (c == '[' || c == '{') {
        open(c);
        ++i_;
      } else if (c == ']' || c == '}') {
        close_pair();
        if (!open_.empty()) open_.pop_back();
        flow_ = static_cast<int>(open_.size());
        ++i_;
      } else if (c == '"' || c == '\'') {
        quoted();
        if (peek() == ':') {  // a JSON-like "key":value
          pair_indicator();
          ++i_;
        }
      } else if (c == '*') {
        alias();
        skip_name();
      } else if (c == '&' || c == '!') {
        skip_name();
      } else if ((c == '?' || c == ':' || c == '-') &&
                 (blank_at(1) || is_flow_indicator(peek(1)))) {
        if (c != '-') pair_indicator();
        ++i_;
      } else {
        plain_flow();
      }
    }
    open_.clear();  // an unclosed bracket at the end: yaml-cpp reports it
    flow_ = 0;
  }

  // `|` or `>` with its indicators: the lines that follow, indented more than `parent`,
  // are its text.
  void block_scalar_header(int parent) {
    ++i_;
    int explicit_indent = 0;
    while (!eol() && (peek() == '+' || peek() == '-' || (peek() >= '1' && peek() <= '9'))) {
      if (peek() != '+' && peek() != '-') explicit_indent = peek() - '0';
      ++i_;
    }
    scalar_parent_ = parent;
    scalar_indent_ = explicit_indent > 0 ? parent + explicit_indent : -1;
    next_line();
  }

  // One node and what follows it on its line: indicators, properties, then a scalar or a
  // collection. `container` is the column of the collection it is in (for a block scalar).
  void node(int container) {
    for (;;) {
      skip_blanks();
      if (eol()) {
        if (!at_end()) next_line();
        return;
      }
      const char c = s_[i_];
      const int col = column();
      if (c == '#') {
        next_line();
        return;
      }
      if ((c == '-' || c == '?' || c == ':') && blank_at(1)) {
        ++i_;
        skip_blanks();
        if (eol() || peek() == '#') continue;
        container = col;
        push_block(column());
        continue;
      }
      if (c == '&' || c == '!') {
        skip_name();
        continue;
      }
      if (c == '*') {
        alias();
        skip_name();
        continue;
      }
      if (c == '[' || c == '{') {
        flow();
        continue;  // the rest of its line: a comment, or `: value` for a flow key
      }
      if (c == '|' || c == '>') {
        block_scalar_header(container);
        return;
      }
      if (c == '"' || c == '\'') {
        quoted();
        skip_blanks();
        if (peek() == ':' && blank_at(1)) {
          ++i_;
          container = col;
        }
        continue;
      }
      if (!plain_block()) return;
      container = col;  // a key: its value is in the map at the key's column
    }
  }

  // One line in block context.
  void line() {
    std::size_t p = i_;
    while (p < s_.size() && s_[p] == ' ') ++p;
    const int indent = static_cast<int>(p - i_);
    std::size_t q = p;
    while (q < s_.size() && is_blank(s_[q])) ++q;
    const bool empty = q >= s_.size() || is_break(s_[q]);

    if (scalar_parent_ != kNoBlockScalar) {  // inside a block scalar's text?
      if (empty) {
        next_line();
        return;
      }
      if (scalar_indent_ < 0 && indent > scalar_parent_) scalar_indent_ = indent;
      if (scalar_indent_ >= 0 && indent >= scalar_indent_) {
        next_line();
        return;
      }
      scalar_parent_ = kNoBlockScalar;
    }
    if (empty || s_[q] == '#') {
      next_line();
      return;
    }
    if (indent == 0) {
      const std::string_view rest = s_.substr(p);
      const bool marker = (rest.substr(0, 3) == "---" || rest.substr(0, 3) == "...") &&
                          (rest.size() == 3 || is_blank(rest[3]) || is_break(rest[3]));
      if (marker) {  // a document starts or ends: nothing is open
        block_.clear();
        if (rest[0] == '.') {
          next_line();
          return;
        }
        i_ = p + 3;
        node(-1);
        return;
      }
      if (rest[0] == '%' && block_.empty()) {  // a directive
        next_line();
        return;
      }
    }
    while (!block_.empty() && block_.back() >= indent) block_.pop_back();
    const int container = block_.empty() ? -1 : block_.back();
    i_ = p;
    push_block(indent);
    node(container);
  }

  std::string_view s_;
  const std::string& file_;
  const YamlLimits& limits_;
  std::size_t i_ = 0;
  std::size_t line_start_ = 0;
  int line_ = 1;
  std::vector<int> block_;  // the columns of the open block levels
  std::vector<char> open_;  // the open flow collections: '[', '{', 'p' for a pair in a '['
  int flow_ = 0;            // open_.size()
  int aliases_ = 0;
  int scalar_parent_ = kNoBlockScalar;  // in a block scalar: its parent's column
  int scalar_indent_ = -1;              // its text's indentation, once known
};

}  // namespace

std::string read_limited(const std::string& path, const YamlLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) refuse(path, 0, std::string("cannot read config file: ") + std::strerror(errno));
  const std::string too_big = "larger than " + std::to_string(limits.max_bytes) + " bytes" +
                              limit_note();
  struct stat st {};
  std::size_t expect = limits.max_bytes + 1;  // a pipe: room for the most it may hold
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    if (static_cast<std::uint64_t>(st.st_size) > limits.max_bytes) {
      ::close(fd);
      refuse(path, 0, too_big);
    }
    expect = static_cast<std::size_t>(st.st_size) + 1;
  }
  // Reserved once, so that growing never leaves a copy of a key in freed memory.
  std::string text;
  text.reserve(std::min(expect, limits.max_bytes + 1));
  char chunk[16384];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = errno;
      secure_wipe(chunk, sizeof chunk);
      ::close(fd);
      if (got < 0) {
        secure_wipe(text.data(), text.size());
        refuse(path, 0, std::string("cannot read config file: ") + std::strerror(err));
      }
      return text;
    }
    if (text.size() + static_cast<std::size_t>(got) > limits.max_bytes) {
      secure_wipe(chunk, sizeof chunk);
      secure_wipe(text.data(), text.size());
      ::close(fd);
      refuse(path, 0, too_big);
    }
    text.append(chunk, static_cast<std::size_t>(got));
  }
}

void check_yaml_limits(std::string_view text, const std::string& file, const YamlLimits& limits) {
  if (text.size() > limits.max_bytes)
    refuse(file, 0, "larger than " + std::to_string(limits.max_bytes) + " bytes" + limit_note());
  Scanner(text, file, limits).run();
}

}  // namespace keymig::config::detail
