#include "keymig/config/config.hpp"

#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "keymig/process.hpp"
#include "yaml_limits.hpp"

namespace keymig::config {
namespace {

// One leaf of the merged configuration: the YAML value and the file it came from. Keeping
// the node (not a copy of its text) keeps yaml-cpp's mark, so errors can name the line.
struct Leaf {
  YAML::Node node;
  std::string file;
};

// The merged tree, flattened to dotted paths ("keyMigration.target.table"). Merging files
// into one map of leaves is a deep merge of maps: a later file replaces leaves, keeps the
// siblings it does not mention, and `key: null` deletes (as Helm does).
using Leaves = std::map<std::string, Leaf>;

// keyMigration's schema: what may appear, so a typo is an error instead of a silent
// default. Maps are recursed into; everything else is a leaf.
const std::set<std::string>& migration_maps() {
  static const std::set<std::string> maps = {
      "keyMigration",
      "keyMigration.database",
      "keyMigration.target",
      "keyMigration.metrics",
      "keyMigration.schedule",
      "keyMigration.throttle",
      "keyMigration.target.onlyWhere",
      "keyMigration.control",
  };
  return maps;
}

const std::set<std::string>& migration_leaves() {
  static const std::set<std::string> leaves = {
      "keyMigration.database.dsn",
      "keyMigration.targets",
      "keyMigration.target.name",
      "keyMigration.target.table",
      "keyMigration.target.idColumn",
      "keyMigration.target.secretColumn",
      "keyMigration.target.activeFlagColumn",
      "keyMigration.target.usernameColumn",
      "keyMigration.target.sysAdminColumns",
      "keyMigration.target.onlyWhere.column",
      "keyMigration.target.onlyWhere.equals",
      "keyMigration.batchSize",
      "keyMigration.threads",
      "keyMigration.maxRowsPerSecond",
      "keyMigration.journal",
      "keyMigration.journalRetention",
      "keyMigration.lockTimeout",
      "keyMigration.statementTimeout",
      "keyMigration.throttle.maxReplicaLag",
      "keyMigration.throttle.flagFile",
      "keyMigration.throttle.maxActiveSessions",
      "keyMigration.throttle.criticalActiveSessions",
      "keyMigration.throttle.adaptive",
      "keyMigration.control.tokenFile",
      "keyMigration.metrics.listen",
      "keyMigration.metrics.pushGateway",
      "keyMigration.metrics.textfile",
      "keyMigration.schedule.every",
      "keyMigration.schedule.at",
  };
  return leaves;
}

// The sections outside keyMigration that keymig reads, with the same schema rule: every
// key in them is keymig's, so `rolingKeyFile:` or `mandatry:` is a typo to report, not a
// setting to ignore (a rolling key silently dropped locks its users out).
const std::set<std::string>& read_maps() {
  static const std::set<std::string> maps = {"secretStore", "userLogin.mfa",
                                             "userLogin.mfa.rememberMe"};
  return maps;
}

const std::set<std::string>& read_leaves() {
  static const std::set<std::string> leaves = {
      "secretStore.activeKey",
      "secretStore.activeKeyFile",
      "secretStore.rollingKey",
      "secretStore.rollingKeyFile",
      "secretStore.rollingKeys",
      "secretStore.rollingKeyFiles",
      "userLogin.mfa.enabled",
      "userLogin.mfa.mandatory",
      "userLogin.mfa.mandatoryForSysAdmins",
      "userLogin.mfa.rememberMe.enabled",
      "userLogin.mfa.rememberMe.days",
      "userLogin.mfa.rememberMe.disabledForSysAdmins",
  };
  return leaves;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool within(const std::string& path, const std::string& section) {
  return path == section || starts_with(path, section + ".");
}

// Sections whose keys all belong to keymig. `userLogin` itself is not one: the platform's
// chart keeps its other login settings beside `mfa` (a password policy, ...), and the
// rest of a Helm values file, outside these three, belongs to the chart.
bool in_schema(const std::string& path) {
  return within(path, "keyMigration") || within(path, "secretStore") ||
         within(path, "userLogin.mfa");
}

bool schema_map(const std::string& path) {
  return migration_maps().count(path) != 0 || read_maps().count(path) != 0;
}

bool schema_leaf(const std::string& path) {
  return migration_leaves().count(path) != 0 || read_leaves().count(path) != 0;
}

// "known here: a, b" for an unknown key's parent, from the schema.
std::string known_under(const std::string& parent) {
  std::string known;
  const auto add = [&](const std::set<std::string>& paths) {
    for (const auto& p : paths)
      if (p.rfind('.') == parent.size() && starts_with(p, parent + "."))
        known += (known.empty() ? "" : ", ") + p.substr(parent.size() + 1);
  };
  add(migration_leaves());
  add(read_leaves());
  add(migration_maps());
  add(read_maps());
  return known;
}

int line_of(const YAML::Node& node) {
  return node.Mark().is_null() ? 0 : node.Mark().line + 1;
}

[[noreturn]] void fail(const std::string& file, int line, const std::string& key,
                       const std::string& problem) {
  throw ConfigError(Origin{file, line, key}.describe() + ": " + problem);
}

[[noreturn]] void fail(const Origin& origin, const std::string& problem) {
  throw ConfigError(origin.describe() + ": " + problem);
}

Origin origin_of(const std::string& path, const Leaf& leaf) {
  return Origin{leaf.file, line_of(leaf.node), path};
}

const char* kind_name(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Null:
      return "null";
    default:
      return "nothing";
  }
}

// Removes `path` and everything below it.
void erase_subtree(Leaves& leaves, const std::string& path) {
  leaves.erase(path);
  const std::string prefix = path + ".";
  for (auto it = leaves.lower_bound(prefix); it != leaves.end() && starts_with(it->first, prefix);)
    it = leaves.erase(it);
}

void merge_map(Leaves& leaves, const YAML::Node& map, const std::string& path,
               const std::string& file);

// key_line: the line of the map key naming `path`. An empty value's mark is where the
// parser stopped looking for one, often the next line that holds anything.
void merge_value(Leaves& leaves, const YAML::Node& value, const std::string& path,
                 const std::string& file, int key_line) {
  const bool in_migration = within(path, "keyMigration");
  if (in_schema(path) && !schema_map(path) && !schema_leaf(path))
    fail(file, key_line, path,
         "unknown key (known here: " + known_under(path.substr(0, path.rfind('.'))) + ")");
  if (value.IsNull()) {
    erase_subtree(leaves, path);
    return;
  }
  if (schema_map(path) || path == "userLogin") {
    if (!value.IsMap())
      fail(file, line_of(value), path, std::string("expected a map, got ") + kind_name(value));
    merge_map(leaves, value, path, file);
    return;
  }
  if (value.IsMap() && in_migration)
    fail(file, line_of(value), path,
         path == "keyMigration.targets" ? "expected a list of targets (- table: ...), got a map"
                                        : "expected a value, got a map");
  erase_subtree(leaves, path);
  leaves[path] = Leaf{value, file};
}

// `mfa` in another case, or one letter added, dropped or changed (`mfaa`, `MFA`, `mf`).
bool near_mfa(const std::string& name) {
  std::string n;
  for (char c : name) n.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  const std::string target = "mfa";
  if (n == target) return true;
  if (n.size() + 1 < target.size() || n.size() > target.size() + 1) return false;
  // Edit distance at most 1.
  std::size_t i = 0, j = 0, edits = 0;
  while (i < n.size() && j < target.size()) {
    if (n[i] == target[j]) {
      ++i, ++j;
      continue;
    }
    if (++edits > 1) return false;
    if (n.size() > target.size())
      ++i;
    else if (n.size() < target.size())
      ++j;
    else
      ++i, ++j;
  }
  edits += (n.size() - i) + (target.size() - j);
  return edits <= 1;
}

void merge_map(Leaves& leaves, const YAML::Node& map, const std::string& path,
               const std::string& file) {
  // A map here replaces a scalar an earlier file put at the same path.
  leaves.erase(path);
  // yaml-cpp keeps both of two equal keys and lookups see the first, so a second
  // `activeKey:` further down would be ignored without a word.
  std::map<std::string, int> seen;  // name -> line
  for (const auto& entry : map) {
    if (!entry.first.IsScalar())
      fail(file, line_of(entry.first), path, "map keys must be plain names");
    const std::string name = entry.first.Scalar();
    const std::string child = path.empty() ? name : path + "." + name;
    // Top level: only the sections keymig reads; the chart owns the rest.
    if (path.empty() && name != "userLogin" && name != "secretStore" && name != "keyMigration")
      continue;
    if (path == "userLogin" && name != "mfa") {
      // The chart's other login settings stay its own; a misspelt `mfa` would leave the
      // whole MFA policy at its defaults without a word.
      if (near_mfa(name))
        fail(file, line_of(entry.first), child,
             "unknown key: did you mean userLogin.mfa? (keymig reads only userLogin.mfa "
             "here; the chart's other login settings beside it are left alone)");
      continue;
    }
    const auto [first, fresh] = seen.emplace(name, line_of(entry.first));
    if (!fresh)
      fail(file, line_of(entry.first), child,
           "duplicate key (first at line " + std::to_string(first->second) +
               "); give each key once");
    merge_value(leaves, entry.second, child, file, line_of(entry.first));
  }
}

// Best effort: the dotted key a YAML syntax error sits under, from indentation. Only the
// key names are taken from the text, never a value (a value may be a key).
std::string key_near_line(const std::string& text, int error_line) {
  std::vector<std::pair<std::size_t, std::string>> stack;
  std::istringstream in(text);
  std::string line;
  for (int n = 0; n <= error_line && std::getline(in, line); ++n) {
    std::size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    std::size_t start = indent;
    if (line.compare(start, 2, "- ") == 0) start += 2;
    std::size_t end = start;
    while (end < line.size() && (std::isalnum(static_cast<unsigned char>(line[end])) ||
                                 line[end] == '_' || line[end] == '-'))
      ++end;
    if (end == start || end >= line.size() || line[end] != ':') continue;
    while (!stack.empty() && stack.back().first >= indent) stack.pop_back();
    stack.emplace_back(indent, line.substr(start, end - start));
  }
  std::string key;
  for (const auto& part : stack) key += (key.empty() ? "" : ".") + part.second;
  return key;
}

YAML::Node parse_file(const std::string& path) {
  // A hostile shape (too big, too deep, an alias bomb) is refused on a cheap scan before
  // yaml-cpp builds a tree of it.
  std::string text = detail::read_limited(path);
  try {
    detail::check_yaml_limits(text, path);
  } catch (...) {
    secure_wipe(text.data(), text.size());
    throw;
  }
  try {
    YAML::Node root = YAML::Load(text);
    secure_wipe(text.data(), text.size());
    return root;
  } catch (const YAML::ParserException& e) {
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    const std::string key = e.mark.is_null() ? "" : key_near_line(text, e.mark.line);
    secure_wipe(text.data(), text.size());
    // e.msg is yaml-cpp's fixed description; e.what() could quote the document.
    fail(path, line, key, "YAML syntax error: " + e.msg);
  }
}

// --- typed reads of the merged leaves ---------------------------------------------------

class Reader {
 public:
  explicit Reader(const Leaves& leaves) : leaves_(leaves) {}

  const Leaf* find(const std::string& path) const {
    auto it = leaves_.find(path);
    return it == leaves_.end() ? nullptr : &it->second;
  }

  void read_bool(const std::string& path, bool& out) const {
    const Leaf* leaf = find(path);
    if (leaf == nullptr) return;
    bool value = false;
    if (!leaf->node.IsScalar() || !YAML::convert<bool>::decode(leaf->node, value))
      fail(origin_of(path, *leaf), "expected true or false");
    out = value;
  }

  template <typename Int>
  void read_int(const std::string& path, Int& out, std::int64_t min, std::int64_t max) const {
    const Leaf* leaf = find(path);
    if (leaf == nullptr) return;
    std::int64_t value = 0;
    if (!leaf->node.IsScalar() || !YAML::convert<std::int64_t>::decode(leaf->node, value))
      fail(origin_of(path, *leaf), "expected a whole number" + range_text(min, max));
    if (value < min || value > max)
      fail(origin_of(path, *leaf),
           std::to_string(value) + " is out of range" + range_text(min, max));
    out = static_cast<Int>(value);
  }

  // Secret-safe: the message never quotes the value.
  void read_string(const std::string& path, std::string& out) const {
    const Leaf* leaf = find(path);
    if (leaf == nullptr) return;
    if (!leaf->node.IsScalar())
      fail(origin_of(path, *leaf), std::string("expected a string, got ") + kind_name(leaf->node));
    out = leaf->node.Scalar();
  }

  void read_string_list(const std::string& path, std::vector<std::string>& out) const {
    const Leaf* leaf = find(path);
    if (leaf == nullptr) return;
    if (!leaf->node.IsSequence())
      fail(origin_of(path, *leaf), std::string("expected a list, got ") + kind_name(leaf->node));
    std::vector<std::string> values;
    for (std::size_t i = 0; i < leaf->node.size(); ++i) {
      const YAML::Node item = leaf->node[i];
      if (!item.IsScalar())
        fail(leaf->file, line_of(item), path + "[" + std::to_string(i) + "]",
             std::string("expected a string, got ") + kind_name(item));
      values.push_back(item.Scalar());
    }
    out = std::move(values);
  }

 private:
  static std::string range_text(std::int64_t min, std::int64_t max) {
    if (max == std::numeric_limits<std::int64_t>::max())
      return " (at least " + std::to_string(min) + ")";
    return " (" + std::to_string(min) + ".." + std::to_string(max) + ")";
  }

  const Leaves& leaves_;
};

bool is_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

// Who besides keymig's own user may read a file holding keys: "others", "its group", or
// "" when nobody. A file someone else owns and shares with keymig's own group alone is how
// a service is given a secret (root:keymig 0440; a Kubernetes secret volume with fsGroup
// and defaultMode 0440): the group is the reader meant, so that is not worth a warning.
std::string too_open(const struct stat& st) {
  const bool shared_with_us = st.st_uid != ::geteuid() && st.st_gid == ::getegid();
  if ((st.st_mode & S_IROTH) != 0) return "others";
  if ((st.st_mode & S_IRGRP) != 0 && !shared_with_us) return "its group";
  return {};
}

std::string mode_text(const struct stat& st) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return mode;
}

// A key file as configured: `PATH`, or `{path: PATH, optional: true}` for one that may be
// absent (a Kubernetes Secret item deleted once its key was retired).
struct KeyFileEntry {
  std::string path;
  bool optional = false;
};

KeyFileEntry key_file_entry(const YAML::Node& node, const std::string& file, const Origin& origin) {
  if (node.IsScalar()) return KeyFileEntry{node.Scalar(), false};
  if (!node.IsMap())
    fail(origin, "expected the path of a key file, or {path: FILE, optional: true}");
  KeyFileEntry entry;
  std::set<std::string> seen;
  for (const auto& item : node) {
    const std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
    const Origin at{file, line_of(item.first), origin.key + "." + name};
    if (!seen.insert(name).second) fail(at, "duplicate key; give each key once");
    if (name == "path") {
      if (!item.second.IsScalar()) fail(at, "expected the path of a key file");
      entry.path = item.second.Scalar();
    } else if (name == "optional") {
      if (!item.second.IsScalar() || !YAML::convert<bool>::decode(item.second, entry.optional))
        fail(at, "expected true or false");
    } else {
      fail(at, "unknown key (known here: path, optional)");
    }
  }
  if (entry.path.empty()) fail(origin, "expected a path: {path: FILE, optional: true}");
  return entry;
}

// Reads a key file (a mounted Kubernetes secret, typically with a trailing newline).
// Relative paths are relative to the config file naming them, so a values file and its
// keys can move together. An optional file that does not exist is skipped with a warning
// (a missing rolling key shows in check-config and in migrate's lockout pre-flight).
// A file a values file names: relative to the values file's directory.
std::string beside(const std::string& config_file, const std::string& path) {
  std::string file = path;
  if (file.front() != '/') file = directory_of(config_file) + "/" + file;
  return std::filesystem::path(file).lexically_normal().string();
}

// A key or token file's text, trimmed, at most 4096 bytes. Read into a buffer that never
// grows (a reallocation would leave a copy of the secret behind, unwiped); `too_large` is
// the error beyond that, `what` names the file in the others ("key file").
SecretString read_secret_file(const std::string& file, const Origin& origin,
                              const std::string& what, const std::string& too_large) {
  constexpr std::size_t kMaxBytes = 4096;
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(origin, "cannot read " + what + " " + file + ": " + std::strerror(errno));
  std::string content;
  content.reserve(kMaxBytes);
  char buf[256];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    if (content.size() + static_cast<std::size_t>(in.gcount()) > kMaxBytes) {
      secure_wipe(buf, sizeof buf);
      secure_wipe(content.data(), content.size());
      fail(origin, too_large);
    }
    content.append(buf, static_cast<std::size_t>(in.gcount()));
  }
  secure_wipe(buf, sizeof buf);
  SecretString text(trim(content));
  secure_wipe(content.data(), content.size());
  if (text.empty()) fail(origin, what + " " + file + " is empty");
  return text;
}

std::optional<KeySetting> read_key_file(const KeyFileEntry& entry, const std::string& config_file,
                                        const Origin& origin, std::vector<std::string>& warnings) {
  if (entry.path.empty()) fail(origin, "expected the path of a key file");
  const std::string file = beside(config_file, entry.path);

  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    const int error = errno;
    if (entry.optional && error == ENOENT) {
      warnings.push_back(origin.describe() + ": optional key file " + file +
                         " does not exist; that key is not configured");
      return std::nullopt;
    }
    fail(origin, "cannot read key file " + file + ": " + std::strerror(error) +
                     (error == ENOENT ? " (mark a key file that may be absent optional: {path: "
                                        "FILE, optional: true})"
                                      : ""));
  }
  if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
    fail(origin, "key file " + file + " is not a regular file");
  SecretString text = read_secret_file(file, origin, "key file",
                                       "key file " + file + " is too large to hold a Fernet key");
  if (const std::string who = too_open(st); !who.empty())
    warnings.push_back(
        origin.describe() + ": key file " + file + " is readable by " + who + " (mode " +
        mode_text(st) +
        "); chmod 600 it, or give it to another owner with keymig's own group and mode 0440"
        " (a Kubernetes secret: fsGroup and defaultMode 0440)");
  return KeySetting{std::move(text), origin, file};
}

// keyMigration.control.tokenFile: the bearer token of serve's POST /control/* routes. It
// can pause every rotation, so unlike a key file (a warning) one that others may read is
// refused: the routes stay off rather than open to whoever reads the file. The same
// owner/group rule as key files (0600, or another owner's 0440 shared with our group).
void read_token_file(const std::string& path, const std::string& config_file, const Origin& origin,
                     Migration& m) {
  const std::string file = beside(config_file, path);
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0)
    fail(origin, "cannot read token file " + file + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(origin, "token file " + file + " is not a regular file");
  if (const std::string who = too_open(st); !who.empty())
    fail(origin, "token file " + file + " is readable by " + who + " (mode " + mode_text(st) +
                     "); chmod 600 it (or another owner and keymig's group, mode 0440)");
  auto token = std::make_shared<const SecretString>(read_secret_file(
      file, origin, "token file", "token file " + file + " is larger than 4096 bytes"));
  // A short token is guessable over HTTP however constant-time the compare.
  if (token->size() < 16) fail(origin, "token file " + file + " holds fewer than 16 characters");
  m.control.token_file = file;
  m.control.token = std::move(token);
}

// A values file that holds keys inline is a key file too: one readable by others gets the
// same warning.
bool holds_inline_keys(const YAML::Node& root) {
  if (!root.IsMap()) return false;
  const YAML::Node store = root["secretStore"];
  if (!store || !store.IsMap()) return false;
  for (const char* name : {"activeKey", "rollingKey"}) {
    const YAML::Node key = store[name];
    if (key && key.IsScalar() && !key.Scalar().empty()) return true;
  }
  const YAML::Node list = store["rollingKeys"];
  return list && list.IsSequence() && list.size() > 0;
}

void warn_if_open(const std::string& path, std::vector<std::string>& warnings) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  if (const std::string who = too_open(st); !who.empty())
    warnings.push_back(path + ": holds keys (secretStore) and is readable by " + who + " (mode " +
                       mode_text(st) +
                       "); chmod 600 it, or keep the keys in key files (activeKeyFile, "
                       "rollingKeyFiles) or KEYMIG_ACTIVE_KEY / KEYMIG_ROLLING_KEYS");
}

std::optional<KeySetting> read_inline_key(const Reader& reader, const std::string& path) {
  const Leaf* leaf = reader.find(path);
  if (leaf == nullptr) return std::nullopt;
  const Origin origin = origin_of(path, *leaf);
  if (!leaf->node.IsScalar())
    fail(origin, std::string("expected a key (a string), got ") + kind_name(leaf->node));
  // Helm charts ship `rollingKey: ""` as the "none" value.
  if (leaf->node.Scalar().empty()) return std::nullopt;
  return KeySetting{SecretString(trim(leaf->node.Scalar())), origin, {}};
}

std::optional<KeySetting> read_file_key(const Reader& reader, const std::string& path,
                                        std::vector<std::string>& warnings) {
  const Leaf* leaf = reader.find(path);
  if (leaf == nullptr) return std::nullopt;
  if (leaf->node.IsScalar() && leaf->node.Scalar().empty()) return std::nullopt;
  const Origin origin = origin_of(path, *leaf);
  return read_key_file(key_file_entry(leaf->node, leaf->file, origin), leaf->file, origin,
                       warnings);
}

std::vector<SecretString> split_commas(std::string_view text) {
  std::vector<SecretString> parts;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string part = trim(text.substr(start, comma - start));
    if (!part.empty()) parts.emplace_back(std::move(part));
    start = comma + 1;
  }
  return parts;
}

void read_keys(const Reader& reader, const Getenv& env, Config& config) {
  if (const Leaf* leaf = reader.find("secretStore.activeKeyFile");
      leaf != nullptr && !leaf->node.IsScalar())
    fail(origin_of("secretStore.activeKeyFile", *leaf),
         "expected the path of a key file (the active key cannot be optional)");
  auto active = read_inline_key(reader, "secretStore.activeKey");
  auto active_file = read_file_key(reader, "secretStore.activeKeyFile", config.warnings);
  if (active && active_file)
    fail(active_file->origin, "set either secretStore.activeKey (" + active->origin.describe() +
                                  ") or secretStore.activeKeyFile, not both");
  if (active) config.active_key = std::move(active);
  if (active_file) config.active_key = std::move(active_file);

  if (auto key = read_inline_key(reader, "secretStore.rollingKey"))
    config.rolling_keys.push_back(std::move(*key));
  if (auto key = read_file_key(reader, "secretStore.rollingKeyFile", config.warnings))
    config.rolling_keys.push_back(std::move(*key));
  if (const Leaf* leaf = reader.find("secretStore.rollingKeys")) {
    if (!leaf->node.IsSequence())
      fail(origin_of("secretStore.rollingKeys", *leaf),
           std::string("expected a list of keys, got ") + kind_name(leaf->node));
    for (std::size_t i = 0; i < leaf->node.size(); ++i) {
      const YAML::Node item = leaf->node[i];
      const Origin origin{leaf->file, line_of(item),
                          "secretStore.rollingKeys[" + std::to_string(i) + "]"};
      if (!item.IsScalar() || item.Scalar().empty())
        fail(origin, "expected a key (a non-empty string)");
      config.rolling_keys.push_back(KeySetting{SecretString(trim(item.Scalar())), origin, {}});
    }
  }
  if (const Leaf* leaf = reader.find("secretStore.rollingKeyFiles")) {
    if (!leaf->node.IsSequence())
      fail(origin_of("secretStore.rollingKeyFiles", *leaf),
           std::string("expected a list of key files, got ") + kind_name(leaf->node));
    for (std::size_t i = 0; i < leaf->node.size(); ++i) {
      const YAML::Node item = leaf->node[i];
      const Origin origin{leaf->file, line_of(item),
                          "secretStore.rollingKeyFiles[" + std::to_string(i) + "]"};
      if (auto key = read_key_file(key_file_entry(item, leaf->file, origin), leaf->file, origin,
                                   config.warnings))
        config.rolling_keys.push_back(std::move(*key));
    }
  }

  // The environment wins over every file: that is how a Kubernetes Secret usually arrives.
  if (auto value = env("KEYMIG_ACTIVE_KEY")) {
    SecretString text(trim(*value));
    secure_wipe(value->data(), value->size());
    if (!text.empty())
      config.active_key = KeySetting{std::move(text), Origin{"env", 0, "KEYMIG_ACTIVE_KEY"}, {}};
  }
  if (auto value = env("KEYMIG_ROLLING_KEYS")) {
    auto parts = split_commas(*value);
    secure_wipe(value->data(), value->size());
    // Set but empty (an optional Secret that is absent) leaves the files' rolling keys.
    if (!parts.empty()) config.rolling_keys.clear();
    for (std::size_t i = 0; i < parts.size(); ++i)
      config.rolling_keys.push_back(
          KeySetting{std::move(parts[i]),
                     Origin{"env", 0, "KEYMIG_ROLLING_KEYS[" + std::to_string(i) + "]"},
                     {}});
  }
}

bool valid_identifier(const std::string& s);

void read_identifier(const Reader& reader, const std::string& path, std::string& out,
                     bool required) {
  reader.read_string(path, out);
  if (const Leaf* leaf = reader.find(path)) {
    if (required && out.empty()) fail(origin_of(path, *leaf), "must not be empty");
    if (!valid_identifier(out)) fail(origin_of(path, *leaf), "is not a usable identifier");
  }
}

bool valid_identifier(const std::string& s) {
  return s.find('\0') == std::string::npos && s.size() <= 200;
}

// The single `keyMigration.target:` map, read from the merged leaves as before.
Target read_single_target(const Reader& reader) {
  Target t;
  reader.read_string("keyMigration.target.name", t.name);
  read_identifier(reader, "keyMigration.target.table", t.table, true);
  read_identifier(reader, "keyMigration.target.idColumn", t.id_column, true);
  read_identifier(reader, "keyMigration.target.secretColumn", t.secret_column, true);
  read_identifier(reader, "keyMigration.target.activeFlagColumn", t.flag_column, false);
  read_identifier(reader, "keyMigration.target.usernameColumn", t.username_column, false);
  reader.read_string_list("keyMigration.target.sysAdminColumns", t.sysadmin_columns);
  if (const Leaf* leaf = reader.find("keyMigration.target.sysAdminColumns")) {
    for (std::size_t i = 0; i < t.sysadmin_columns.size(); ++i)
      if (t.sysadmin_columns[i].empty())
        fail(leaf->file, line_of(leaf->node[i]),
             "keyMigration.target.sysAdminColumns[" + std::to_string(i) + "]", "must not be empty");
  }
  read_identifier(reader, "keyMigration.target.onlyWhere.column", t.only_where.column, true);
  reader.read_bool("keyMigration.target.onlyWhere.equals", t.only_where.equals);
  if (const Leaf* leaf = reader.find("keyMigration.target.onlyWhere.equals");
      leaf != nullptr && t.only_where.column.empty())
    fail(origin_of("keyMigration.target.onlyWhere.equals", *leaf),
         "needs keyMigration.target.onlyWhere.column (the boolean column to filter on)");
  return t;
}

// The string value of one field of a target list entry; never quotes it.
std::string entry_string(const YAML::Node& value, const Origin& at, bool required) {
  if (!value.IsScalar()) fail(at, std::string("expected a string, got ") + kind_name(value));
  const std::string out = value.Scalar();
  if (required && out.empty()) fail(at, "must not be empty");
  if (!valid_identifier(out)) fail(at, "is not a usable identifier");
  return out;
}

RowFilter entry_filter(const YAML::Node& node, const std::string& file, const Origin& origin) {
  if (!node.IsMap()) fail(origin, "expected a map: {column: COLUMN, equals: true}");
  RowFilter filter;
  std::set<std::string> seen;
  for (const auto& item : node) {
    const std::string name = item.first.IsScalar() ? item.first.Scalar() : "";
    const Origin at{file, line_of(item.first), origin.key + "." + name};
    if (!seen.insert(name).second) fail(at, "duplicate key; give each key once");
    if (name == "column") {
      filter.column = entry_string(item.second, at, true);
    } else if (name == "equals") {
      if (!item.second.IsScalar() || !YAML::convert<bool>::decode(item.second, filter.equals))
        fail(at, "expected true or false");
    } else {
      fail(at, "unknown key (known here: column, equals)");
    }
  }
  if (filter.column.empty()) fail(origin, "needs column: the boolean column to filter on");
  return filter;
}

// One entry of `keyMigration.targets:`, a map with the fields of `target:` plus a name.
Target read_target_entry(const YAML::Node& node, const std::string& file, const Origin& origin) {
  if (!node.IsMap())
    fail(origin, std::string("expected a map (table, idColumn, secretColumn, ...), got ") +
                     kind_name(node));
  Target t;
  std::map<std::string, int> seen;
  for (const auto& item : node) {
    if (!item.first.IsScalar()) fail(origin, "map keys must be plain names");
    const std::string name = item.first.Scalar();
    const Origin at{file, line_of(item.first), origin.key + "." + name};
    const auto [first, fresh] = seen.emplace(name, at.line);
    if (!fresh)
      fail(at, "duplicate key (first at line " + std::to_string(first->second) +
                   "); give each key once");
    const YAML::Node& value = item.second;
    if (value.IsNull()) continue;  // as in a map: null leaves the default
    if (name == "name") {
      t.name = entry_string(value, at, true);
    } else if (name == "table") {
      t.table = entry_string(value, at, true);
    } else if (name == "idColumn") {
      t.id_column = entry_string(value, at, true);
    } else if (name == "secretColumn") {
      t.secret_column = entry_string(value, at, true);
    } else if (name == "activeFlagColumn") {
      t.flag_column = entry_string(value, at, false);
    } else if (name == "usernameColumn") {
      t.username_column = entry_string(value, at, false);
    } else if (name == "sysAdminColumns") {
      if (!value.IsSequence()) fail(at, std::string("expected a list, got ") + kind_name(value));
      t.sysadmin_columns.clear();
      for (std::size_t i = 0; i < value.size(); ++i)
        t.sysadmin_columns.push_back(entry_string(
            value[i], Origin{file, line_of(value[i]), at.key + "[" + std::to_string(i) + "]"},
            true));
    } else if (name == "onlyWhere") {
      t.only_where = entry_filter(value, file, at);
    } else {
      fail(at,
           "unknown key (known here: name, table, idColumn, secretColumn, activeFlagColumn, "
           "usernameColumn, sysAdminColumns, onlyWhere)");
    }
  }
  if (seen.count("table") == 0)
    fail(origin, "needs table (and idColumn and secretColumn, unless id and mfa_secret)");
  return t;
}

std::string unqualified(const std::string& table) {
  const auto dot = table.find('.');
  return dot == std::string::npos ? table : table.substr(dot + 1);
}

// Default names, then the rules every list obeys: names unique and usable in a run id, no
// column rotated twice in one run.
void name_targets(std::vector<Target>& targets, const std::vector<Origin>& origins) {
  std::map<std::string, int> per_table;
  for (const auto& t : targets) ++per_table[t.table];
  for (auto& t : targets)
    if (t.name.empty())
      t.name = per_table[t.table] == 1 ? unqualified(t.table)
                                       : unqualified(t.table) + "." + t.secret_column;
  std::map<std::string, std::size_t> names;
  std::map<std::pair<std::string, std::string>, std::size_t> columns;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Target& t = targets[i];
    // One target keeps today's run ids, in which the name takes no part.
    if (targets.size() > 1 && !valid_target_name(t.name))
      fail(origins[i], "target name '" + t.name +
                           "' is not usable: give `name:` of 1-63 letters, digits, '_', '.' "
                           "or '-'");
    if (const auto [first, fresh] = names.emplace(t.name, i); !fresh)
      fail(origins[i], "target name '" + t.name + "' is also the name of " +
                           origins[first->second].key + ": give each target its own `name:`");
    if (const auto [first, fresh] = columns.emplace(std::pair{t.table, t.secret_column}, i); !fresh)
      fail(origins[i], t.table + "." + t.secret_column + " is also " + origins[first->second].key +
                           ": one column is one target (it would be rotated twice)");
  }
}

void read_targets(const Reader& reader, Migration& m) {
  const Leaf* list = reader.find("keyMigration.targets");
  std::vector<Origin> origins;
  if (list == nullptr) {
    m.targets = {read_single_target(reader)};
    const Leaf* table = reader.find("keyMigration.target.table");
    origins.push_back(table ? origin_of("keyMigration.target", *table)
                            : Origin{"", 0, "keyMigration.target"});
    name_targets(m.targets, origins);
    return;
  }
  const Origin origin = origin_of("keyMigration.targets", *list);
  for (const char* key : {"table", "idColumn", "secretColumn", "activeFlagColumn", "usernameColumn",
                          "sysAdminColumns", "name", "onlyWhere.column", "onlyWhere.equals"})
    if (const Leaf* single = reader.find(std::string("keyMigration.target.") + key))
      fail(origin_of(std::string("keyMigration.target.") + key, *single),
           "set keyMigration.target (one target) or keyMigration.targets (a list), not both "
           "(keyMigration.targets is at " +
               origin.describe() + ")");
  if (!list->node.IsSequence())
    fail(origin, std::string("expected a list of targets, got ") + kind_name(list->node));
  if (list->node.size() == 0) fail(origin, "must list at least one target");
  if (list->node.size() > 256) fail(origin, "lists more than 256 targets");
  m.targets.clear();
  for (std::size_t i = 0; i < list->node.size(); ++i) {
    const YAML::Node item = list->node[i];
    origins.push_back(
        Origin{list->file, line_of(item), "keyMigration.targets[" + std::to_string(i) + "]"});
    m.targets.push_back(read_target_entry(item, list->file, origins.back()));
  }
  name_targets(m.targets, origins);
}

void read_migration(const Reader& reader, const SettingChecks& checks, Migration& m) {
  reader.read_string("keyMigration.database.dsn", m.dsn);
  read_targets(reader, m);
  reader.read_int("keyMigration.batchSize", m.batch_size, 1, kMaxBatchSize);
  reader.read_int("keyMigration.threads", m.threads, 0, kMaxThreads);
  reader.read_int("keyMigration.maxRowsPerSecond", m.max_rows_per_second, 0, kMaxRowsPerSecond);
  reader.read_bool("keyMigration.journal", m.journal);
  if (const Leaf* leaf = reader.find("keyMigration.journalRetention")) {
    const Origin origin = origin_of("keyMigration.journalRetention", *leaf);
    if (!leaf->node.IsScalar()) fail(origin, "expected a duration like 7d or 12h");
    // "" and "0" keep every journal until finalize or `journal purge`, as before.
    const std::string text = leaf->node.Scalar();
    if (!text.empty() && text != "0") {
      const auto keep = parse_duration(text, origin);
      // The floor of `journal purge --older-than`: a run idle for less may still be
      // resumed or rolled back by an operator who has not got to it yet.
      if (keep < std::chrono::hours(1))
        fail(origin, "must be at least 1h (or 0: keep until finalize)");
      m.journal_retention = keep;
    }
  }
  for (auto [path, out] :
       {std::pair{"keyMigration.lockTimeout", &m.lock_timeout},
        std::pair{"keyMigration.statementTimeout", &m.statement_timeout},
        std::pair{"keyMigration.throttle.maxReplicaLag", &m.throttle.max_replica_lag}}) {
    if (const Leaf* leaf = reader.find(path)) {
      const Origin origin = origin_of(path, *leaf);
      if (!leaf->node.IsScalar()) fail(origin, "expected a duration like 2s, 500ms or 1m");
      *out = parse_duration_ms(leaf->node.Scalar(), origin);
    }
  }
  reader.read_string("keyMigration.throttle.flagFile", m.throttle.flag_file);
  reader.read_int("keyMigration.throttle.maxActiveSessions", m.throttle.max_active_sessions, 0,
                  100'000);
  reader.read_int("keyMigration.throttle.criticalActiveSessions",
                  m.throttle.critical_active_sessions, 0, 100'000);
  reader.read_bool("keyMigration.throttle.adaptive", m.throttle.adaptive);
  if (const Leaf* leaf = reader.find("keyMigration.control.tokenFile")) {
    const Origin origin = origin_of("keyMigration.control.tokenFile", *leaf);
    if (!leaf->node.IsScalar()) fail(origin, "expected the path of a file holding a token");
    if (!leaf->node.Scalar().empty()) read_token_file(leaf->node.Scalar(), leaf->file, origin, m);
  }
  reader.read_string("keyMigration.metrics.listen", m.metrics.listen);
  if (const Leaf* leaf = reader.find("keyMigration.metrics.listen")) {
    const std::string problem =
        checks.listen_address ? checks.listen_address(m.metrics.listen) : "";
    if (!problem.empty()) fail(origin_of("keyMigration.metrics.listen", *leaf), problem);
  }
  reader.read_string("keyMigration.metrics.pushGateway", m.metrics.push_gateway);
  if (const Leaf* leaf = reader.find("keyMigration.metrics.pushGateway");
      leaf != nullptr && !m.metrics.push_gateway.empty()) {
    const std::string problem =
        checks.push_gateway ? checks.push_gateway(m.metrics.push_gateway) : "";
    if (!problem.empty()) fail(origin_of("keyMigration.metrics.pushGateway", *leaf), problem);
  }
  reader.read_string("keyMigration.metrics.textfile", m.metrics.textfile);
  if (const Leaf* leaf = reader.find("keyMigration.schedule.every")) {
    const Origin origin = origin_of("keyMigration.schedule.every", *leaf);
    if (!leaf->node.IsScalar()) fail(origin, "expected a duration like 24h or 30m");
    const auto every = parse_duration(leaf->node.Scalar(), origin);
    if (every.count() <= 0) fail(origin, "must be longer than 0s");
    m.schedule.every = every;
  }
  if (const Leaf* leaf = reader.find("keyMigration.schedule.at")) {
    const Origin origin = origin_of("keyMigration.schedule.at", *leaf);
    m.schedule.at_minute_of_day =
        parse_time_of_day(leaf->node.IsScalar() ? leaf->node.Scalar() : "", origin);
  }
}

// Parses "1h30m", "2s", "500ms" into milliseconds; `allow_ms` decides whether "ms" is a unit.
std::int64_t parse_duration_millis(const std::string& text, const Origin& origin, bool allow_ms) {
  const std::string hint =
      allow_ms ? "a duration like 2s, 500ms or 1m30s" : "a duration like 30m, 6h or 1d";
  const std::string s = trim(text);
  if (s == "0") return 0;
  if (s.empty()) fail(origin, "expected " + hint);
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t digits = i;
    while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
    if (digits == i || digits - i > 9) fail(origin, "'" + s + "' is not " + hint);
    const std::int64_t number = std::stoll(s.substr(i, digits - i));
    std::size_t unit_end = digits;
    while (unit_end < s.size() && std::isalpha(static_cast<unsigned char>(s[unit_end]))) ++unit_end;
    const std::string unit = s.substr(digits, unit_end - digits);
    std::int64_t scale = 0;
    if (unit == "ms" && allow_ms)
      scale = 1;
    else if (unit == "s")
      scale = 1000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "h")
      scale = 3'600'000;
    else if (unit == "d")
      scale = 86'400'000;
    else
      fail(origin,
           "'" + s + "' is not " + hint + " (units: " + (allow_ms ? "ms, " : "") + "s, m, h, d)");
    total += number * scale;
    if (total > std::int64_t{366} * 86'400'000) fail(origin, "'" + s + "' is longer than a year");
    i = unit_end;
  }
  return total;
}

}  // namespace

Getenv process_env() {
  // The key variables left the environment at start (process::capture_secret_env).
  return [](const char* name) -> std::optional<std::string> {
    return keymig::process::secret_env(name);
  };
}

std::chrono::seconds parse_duration(const std::string& text, const Origin& origin) {
  const std::int64_t ms = parse_duration_millis(text, origin, false);
  return std::chrono::seconds(ms / 1000);
}

std::chrono::milliseconds parse_duration_ms(const std::string& text, const Origin& origin) {
  return std::chrono::milliseconds(parse_duration_millis(text, origin, true));
}

int parse_time_of_day(const std::string& text, const Origin& origin) {
  const std::string s = trim(text);
  const bool shape = (s.size() == 5 && s[2] == ':') || (s.size() == 4 && s[1] == ':');
  if (shape) {
    const std::size_t colon = s.find(':');
    const std::string hh = s.substr(0, colon), mm = s.substr(colon + 1);
    const bool digits = is_digits(hh) && is_digits(mm);
    if (digits) {
      const int h = std::stoi(hh), m = std::stoi(mm);
      if (h < 24 && m < 60) return h * 60 + m;
    }
  }
  fail(origin, "expected a UTC time of day \"HH:MM\" (00:00..23:59), got '" + s + "'");
}

bool valid_target_name(const std::string& s) {
  return !s.empty() && s.size() <= kMaxTargetNameLength &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' ||
                  c == '-';
         });
}

std::vector<Target> select_targets(const std::vector<Target>& targets,
                                   const std::vector<std::string>& names) {
  if (names.empty()) return targets;
  std::vector<Target> out;
  for (const auto& t : targets)
    if (std::find(names.begin(), names.end(), t.name) != names.end()) out.push_back(t);
  for (const auto& name : names)
    if (std::none_of(targets.begin(), targets.end(),
                     [&](const Target& t) { return t.name == name; })) {
      std::string known;
      for (const auto& t : targets) known += (known.empty() ? "" : ", ") + t.name;
      throw ConfigError("--target: no target named '" + name + "' (configured: " + known + ")");
    }
  return out;
}

Config load(const std::vector<std::string>& paths, const Getenv& env, const SettingChecks& checks) {
  Config config;
  config.files = paths;
  Leaves leaves;
  for (const auto& path : paths) {
    const YAML::Node root = parse_file(path);
    if (root.IsNull()) continue;  // an empty file is a valid (empty) values file
    if (!root.IsMap())
      fail(path, line_of(root), "",
           std::string("expected a map at the top, got ") + kind_name(root));
    if (holds_inline_keys(root)) warn_if_open(path, config.warnings);
    merge_map(leaves, root, "", path);
  }
  const Reader reader(leaves);

  MfaPolicy& mfa = config.mfa;
  reader.read_bool("userLogin.mfa.enabled", mfa.enabled);
  reader.read_bool("userLogin.mfa.mandatory", mfa.mandatory);
  reader.read_bool("userLogin.mfa.mandatoryForSysAdmins", mfa.mandatory_for_sysadmins);
  reader.read_bool("userLogin.mfa.rememberMe.enabled", mfa.remember_me_enabled);
  reader.read_int("userLogin.mfa.rememberMe.days", mfa.remember_me_days, 0, 36'500);
  reader.read_bool("userLogin.mfa.rememberMe.disabledForSysAdmins",
                   mfa.remember_me_disabled_for_sysadmins);

  read_keys(reader, env, config);
  read_migration(reader, checks, config.migration);
  return config;
}

}  // namespace keymig::config
