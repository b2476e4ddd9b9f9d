// keygen, inspect and check-config: the commands that need keys but no database.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "command.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/engine/keys.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "target_counts.hpp"

namespace keymig::app {
namespace {

using nlohmann::json;

json target_json(const config::Target& t) {
  return {{"name", t.name},
          {"table", t.table},
          {"id_column", t.id_column},
          {"secret_column", t.secret_column},
          {"flag_column", t.flag_column},
          {"username_column", t.username_column},
          {"sysadmin_columns", t.sysadmin_columns},
          {"only_where", t.only_where.empty() ? json(nullptr)
                                              : json{{"column", t.only_where.column},
                                                     {"equals", t.only_where.equals}}}};
}

const char* reason_words(crypto::Reason reason) {
  switch (reason) {
    case crypto::Reason::not_base64:
      return "not base64url text";
    case crypto::Reason::non_canonical:
      return "base64 that is not in canonical form";
    case crypto::Reason::bad_version:
      return "not a Fernet token (first byte is not 0x80)";
    case crypto::Reason::too_short:
      return "too short to be a Fernet token";
    case crypto::Reason::bad_length:
      return "ciphertext is not a whole number of blocks";
    case crypto::Reason::unknown_key:
      return "no configured key's HMAC verifies it";
    case crypto::Reason::bad_padding:
      return "HMAC verified but the padding is wrong";
    case crypto::Reason::expired:
      return "expired";
    case crypto::Reason::from_future:
      return "timestamp too far in the future";
    case crypto::Reason::ok:
      return "ok";
  }
  return "not verified";
}

void write_stdout(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

// --- keygen ------------------------------------------------------------------------------

// Writes the key to a new file that only its owner can read, so it never sits in a
// terminal's scrollback or in a file made with a loose umask.
void write_key_file(const std::string& path, const SecretString& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) throw UsageError(path + ": exists; keygen never overwrites a key file");
    throw Error(path + ": cannot create: " + std::strerror(errno));
  }
  std::string line;
  line.reserve(text.size() + 1);
  line.append(text.view()).push_back('\n');
  const ssize_t written = ::write(fd, line.data(), line.size());
  const int saved = errno;
  secure_wipe(line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size()) || ::fsync(fd) != 0) {
    ::close(fd);
    throw Error(path + ": cannot write: " + std::strerror(written < 0 ? saved : errno));
  }
  if (::close(fd) != 0) throw Error(path + ": cannot write: " + std::strerror(errno));
}

std::function<int()> setup_keygen(CLI::App& sub, Common& common) {
  auto out = std::make_shared<std::string>();
  sub.add_option("--out", *out, "write the key to a new file with mode 0600 instead of stdout")
      ->type_name("FILE");
  add_output_flags(sub, common);
  return [out, &common] {
    const crypto::Key key = crypto::Key::generate();
    const SecretString text = key.encode();
    const std::string fingerprint = key.fingerprint();
    if (!out->empty()) {
      write_key_file(*out, text);
      if (common.json)
        write_stdout(json{{"file", *out}, {"fingerprint", fingerprint}}.dump() + "\n");
      else
        write_stdout("wrote a new key to " + *out + " (fingerprint " + fingerprint + ")\n");
      return kExitOk;
    }
    // The one place keymig prints a key: that is what keygen is for.
    std::string line;
    line.reserve(text.size() + 64);
    if (common.json) {
      line.append("{\"fingerprint\":\"").append(fingerprint).append("\",\"key\":\"");
      line.append(text.view()).append("\"}\n");
    } else {
      line.append(text.view()).push_back('\n');
    }
    write_stdout(line);
    secure_wipe(line.data(), line.size());
    return kExitOk;
  };
}

// --- inspect -----------------------------------------------------------------------------

struct InspectArgs {
  std::string token = "-";
};

std::function<int()> setup_inspect(CLI::App& sub, Common& common) {
  auto args = std::make_shared<InspectArgs>();
  sub.add_option("token", args->token,
                 "a token, or - (the default) to read tokens from stdin, one per line. "
                 "A token given here is visible in `ps` and shell history: prefer stdin")
      ->type_name("TOKEN|-");
  add_config_flags(sub, common);
  add_output_flags(sub, common);
  return [args, &common] {
    const config::Config config = load_config(common);
    const crypto::KeyRing ring = load_keyring(config);

    std::vector<SecretString> tokens;
    if (args->token != "-") {
      KEYMIG_LOG(
          warn, "inspect", "token_on_command_line",
          {"hint",
           "argv is visible in ps and shell history; pipe tokens on stdin: keymig inspect -"});
      tokens.emplace_back(std::string_view(args->token));
      secure_wipe(args->token.data(), args->token.size());
    } else {
      if (::isatty(STDIN_FILENO) != 0)
        std::cerr << "keymig: reading tokens from stdin, one per line (end with Ctrl-D)\n";
      std::string line;
      line.reserve(4096);
      while (std::getline(std::cin, line)) {
        const auto begin = line.find_first_not_of(" \t\r");
        const auto end = line.find_last_not_of(" \t\r");
        if (begin != std::string::npos)
          tokens.emplace_back(std::string_view(line).substr(begin, end - begin + 1));
        secure_wipe(line.data(), line.size());
      }
    }
    if (tokens.empty()) throw UsageError("inspect: no token read (give one per line on stdin)");

    int verified = 0, active = 0, rolling = 0;
    json items = json::array();
    std::string text;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const crypto::Classification c = ring.classify(tokens[i].view());
      tokens[i].wipe();
      json item{{"index", i + 1}};
      std::string line = "token " + std::to_string(i + 1) + ": ";
      if (c.reason == crypto::Reason::ok && c.key_index >= 0) {
        ++verified;
        (c.key_index == 0 ? active : rolling)++;
        const std::string name = engine::key_display_name(c.key_index);
        const std::string fp = ring.fingerprint(c.key_index);
        item.update({{"verified", true},
                     {"key", name},
                     {"key_index", c.key_index},
                     {"fingerprint", fp},
                     {"timestamp", c.timestamp},
                     {"created_at", iso8601_utc(c.timestamp)}});
        line += name + " (fingerprint " + fp + "), created " + iso8601_utc(c.timestamp) + " (" +
                std::to_string(c.timestamp) + ")";
      } else {
        item.update({{"verified", false}, {"reason", crypto::reason_name(c.reason)}});
        line += std::string("not verified: ") + crypto::reason_name(c.reason) + " (" +
                reason_words(c.reason) + ")";
        // The clear-text timestamp still helps to date a token from an unknown key.
        if (c.reason == crypto::Reason::unknown_key || c.reason == crypto::Reason::bad_length ||
            c.reason == crypto::Reason::bad_padding) {
          item["unverified_timestamp"] = c.timestamp;
          item["unverified_created_at"] = iso8601_utc(c.timestamp);
          line += "; unverified timestamp " + iso8601_utc(c.timestamp) + " (" +
                  std::to_string(c.timestamp) + ")";
        }
      }
      items.push_back(std::move(item));
      text += line + "\n";
    }
    const int unverified = static_cast<int>(tokens.size()) - verified;
    if (common.json) {
      write_stdout(json{{"tokens", items},
                        {"total", tokens.size()},
                        {"active", active},
                        {"rolling", rolling},
                        {"unverified", unverified}}
                       .dump() +
                   "\n");
    } else {
      if (tokens.size() > 1)
        text += std::to_string(tokens.size()) + " tokens: " + std::to_string(active) + " active, " +
                std::to_string(rolling) + " rolling, " + std::to_string(unverified) +
                " not verified\n";
      write_stdout(text);
    }
    return unverified > 0 ? kExitUndecryptable : kExitOk;
  };
}

// --- check-config ------------------------------------------------------------------------

std::vector<std::string> policy_in_words(const config::MfaPolicy& mfa) {
  if (!mfa.enabled) return {"MFA is disabled: nobody is asked for a one-time code at sign-in."};
  std::vector<std::string> out;
  if (mfa.mandatory)
    out.emplace_back("MFA is enabled and mandatory for every user.");
  else if (mfa.mandatory_for_sysadmins)
    out.emplace_back("MFA is enabled: optional for users, mandatory for sysadmins.");
  else
    out.emplace_back("MFA is enabled and optional for every user, sysadmins included.");
  if (!mfa.remember_me_enabled) {
    out.emplace_back("\"Remember me\" is off: a code is asked at every sign-in.");
  } else {
    std::string line = "\"Remember me\" skips the code on a known device for " +
                       std::to_string(mfa.remember_me_days) +
                       (mfa.remember_me_days == 1 ? " day" : " days");
    line += mfa.remember_me_disabled_for_sysadmins ? "; sysadmins enter a code at every sign-in."
                                                   : ", sysadmins included.";
    out.push_back(line);
  }
  return out;
}

std::vector<std::string> policy_warnings(const config::Config& config) {
  const auto& mfa = config.mfa;
  std::vector<std::string> out;
  if (!mfa.enabled && mfa.mandatory)
    out.emplace_back(
        "userLogin.mfa.mandatory is true while userLogin.mfa.enabled is false: users are "
        "required to use MFA they cannot set up (lockout risk)");
  if (!mfa.enabled && mfa.mandatory_for_sysadmins)
    out.emplace_back(
        "userLogin.mfa.mandatoryForSysAdmins is true while userLogin.mfa.enabled is false: "
        "sysadmins are required to use MFA they cannot set up (lockout risk)");
  if (!mfa.remember_me_enabled && mfa.remember_me_disabled_for_sysadmins)
    out.emplace_back(
        "userLogin.mfa.rememberMe.disabledForSysAdmins is true while rememberMe.enabled is "
        "false: the sysadmin exemption has no effect");
  for (const auto& w : config.warnings) out.push_back(w);
  if (config.rolling_keys.empty())
    out.emplace_back(
        "no rolling key configured: nothing to migrate from; tokens made under an old key "
        "cannot be read (set secretStore.rollingKey while rotating)");
  return out;
}

json origin_json(const config::Origin& origin) {
  json out{{"file", origin.file}, {"key", origin.key}};
  if (origin.line > 0) out["line"] = origin.line;
  return out;
}

// --with-db: who deploying this config would lock out, read from the live table.
engine::PreflightReport run_preflight(const Common& common, const config::Config& config) {
  const auto ring = engine::build_keyring(config);
  db::ConnectOptions options;
  options.dsn = effective_dsn(common, config);
  options.lock_timeout = config.migration.lock_timeout;
  options.statement_timeout = config.migration.statement_timeout;
  db::Connection conn(options);
  return engine::lockout_preflight(conn, config, ring);
}

int check_config(const Common& common, bool with_db) {
  const config::Config config =
      config::load(config_files(common), config::process_env(), setting_checks());
  std::optional<engine::PreflightReport> preflight;
  std::optional<engine::ScanAcross> per_target;
  if (with_db) preflight = run_preflight(common, config);
  // Several targets: rows of any of them that no configured key reads are secrets
  // deploying this config would make unreadable.
  if (with_db && config.migration.targets.size() > 1)
    per_target = count_every_target(common, config, engine::build_keyring(config));
  int code = preflight ? preflight->exit_code() : kExitOk;
  if (code == kExitOk && per_target && any_unreadable(*per_target)) code = kExitNeedsRolling;
  const auto keys = engine::describe_keys(config);
  const auto words = policy_in_words(config.mfa);
  const auto warnings = policy_warnings(config);
  const auto& m = config.migration;
  const std::string database =
      !m.dsn.empty() ? "keyMigration.database.dsn" : "libpq environment (PGHOST, PGDATABASE, ...)";

  if (common.json) {
    json jkeys = json::array();
    for (const auto& k : keys) {
      json item{
          {"key", k.label}, {"fingerprint", k.fingerprint}, {"origin", origin_json(k.origin)}};
      if (!k.key_file.empty()) item["key_file"] = k.key_file;
      jkeys.push_back(std::move(item));
    }
    const auto& mfa = config.mfa;
    json targets = json::array();
    for (const auto& t : m.targets) targets.push_back(target_json(t));
    json out{{"ok", true},
             {"files", config.files},
             {"mfa",
              {{"enabled", mfa.enabled},
               {"mandatory", mfa.mandatory},
               {"mandatory_for_sysadmins", mfa.mandatory_for_sysadmins},
               {"remember_me",
                {{"enabled", mfa.remember_me_enabled},
                 {"days", mfa.remember_me_days},
                 {"disabled_for_sysadmins", mfa.remember_me_disabled_for_sysadmins}}},
               {"summary", words}}},
             {"keys", jkeys},
             {"target", target_json(m.targets.front())},
             {"targets", targets},
             {"database", database},
             {"batch_size", m.batch_size},
             {"threads", m.threads},
             {"max_rows_per_second", m.max_rows_per_second},
             {"journal", m.journal},
             {"journal_retention_seconds",
              m.journal_retention ? json(m.journal_retention->count()) : json(nullptr)},
             {"warnings", warnings}};
    if (preflight) out["preflight"] = json::parse(engine::preflight_json(*preflight));
    if (per_target) {
      out["preflight"]["targets"] = target_counts_json(*per_target);
      out["exit_code"] = code;
    }
    write_stdout(out.dump() + "\n");
    return code;
  }

  std::string files;
  for (const auto& f : config.files) files += (files.empty() ? "" : ", ") + f;
  std::string text =
      "config: " + (files.empty() ? std::string("(environment only)") : files) + "\n";
  text += "\nMFA policy:\n";
  for (const auto& w : words) text += "  " + w + "\n";
  text += "\nkeys:\n";
  for (const auto& k : keys) {
    std::string label = k.label;
    label.resize(std::max<std::size_t>(label.size(), 11), ' ');
    text += "  " + label + " fingerprint " + k.fingerprint + "  from " + k.origin.describe();
    if (!k.key_file.empty()) text += " (" + k.key_file + ")";
    text += "\n";
  }
  text += m.targets.size() == 1 ? "\ntarget: " : "\ntargets:\n";
  for (const auto& t : m.targets) {
    if (m.targets.size() > 1) text += "  " + t.name + ": ";
    text += t.table + " (id " + t.id_column + ", secret " + t.secret_column + ", flag " +
            (t.flag_column.empty() ? std::string("none") : t.flag_column);
    if (!t.only_where.empty())
      text +=
          ", only where " + t.only_where.column + " is " + (t.only_where.equals ? "true" : "false");
    text += ")\n";
  }
  text += "database: " + database + "\n";
  text += "batches of " + std::to_string(m.batch_size) + " rows, " +
          (m.threads == 0 ? std::string("all cores") : std::to_string(m.threads) + " threads") +
          ", " +
          (m.max_rows_per_second == 0
               ? std::string("unthrottled")
               : "at most " + std::to_string(m.max_rows_per_second) + " rows/s") +
          ", journal " + (m.journal ? "on" : "off") +
          (m.journal_retention ? ", kept " + std::to_string(m.journal_retention->count()) +
                                     " s after its run (journalRetention)"
                               : std::string(", kept until finalize or journal purge")) +
          "\n";
  if (!warnings.empty()) {
    text += "\nwarnings:\n";
    for (const auto& w : warnings) text += "  - " + w + "\n";
  }
  text += "\nconfig is valid\n";
  if (preflight) text += "\n" + engine::format_preflight(*preflight);
  if (per_target) {
    text += "\n" + target_counts_text(*per_target, "every target, read with this config's keys:");
    if (any_unreadable(*per_target))
      text +=
          "some target holds secrets no configured key reads: deploying this config "
          "would make them unreadable\n";
  }
  write_stdout(text);
  return code;
}

std::function<int()> setup_check_config(CLI::App& sub, Common& common) {
  add_config_flags(sub, common);
  add_db_flags(sub, common);
  add_output_flags(sub, common);
  auto with_db = std::make_shared<bool>(false);
  sub.add_flag("--with-db", *with_db,
               "also read the target tables: exit 4 if this config would lock users out of MFA, "
               "or leave a secret of any target unreadable");
  // A failure's --json object comes from main, as for every command.
  return [&common, with_db] { return check_config(common, *with_db); };
}

const Registrar kKeygen{
    CommandSpec{"keygen",
                "print a new Fernet key (the only command that prints a key)",
                10,
                setup_keygen,
                {},
                "  keymig keygen --out new.key                 a new key in a new file, mode 0600\n"
                "  (umask 077; keymig keygen > new.key)        the same through the shell"}};
const Registrar kCheckConfig{CommandSpec{
    "check-config",
    "validate config and keys; print the MFA policy, key fingerprints and lockout warnings",
    20,
    setup_check_config,
    {},
    "  keymig check-config --config values.yaml             keys, fingerprints, MFA policy\n"
    "  keymig check-config --config values.yaml --with-db   and who this config would lock out\n"
    "  keymig check-config --config values.yaml --json      the same as one JSON object"}};
const Registrar kInspect{CommandSpec{
    "inspect",
    "which configured key made a token, and when; never the plaintext",
    30,
    setup_inspect,
    {},
    "  keymig inspect --config values.yaml - < token.txt   which key made the token on stdin\n"
    "  keymig inspect --config values.yaml --json - < token.txt"}};

}  // namespace
}  // namespace keymig::app
