#pragma once

// How subcommands plug into `keymig`: each command file registers itself with a static
// `Registrar`, so that command groups live in their own files and main.cpp lists none.

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"

namespace keymig::app {

/// Flags every command shares (docs/DESIGN.md section 3).
struct Common {
  std::vector<std::string> config_files;  // --config, repeatable, later wins
  std::string dsn;                        // --dsn; empty: config, then libpq env vars
  bool json = false;                      // --json: one JSON object on stdout
  std::string log_format = "text";        // --log-format text|json
  std::string log_level = "info";         // --log-level debug|info|warn|error
};

/// Adds the common flags to a subcommand (each command decides which apply).
void add_config_flags(CLI::App& sub, Common& common);  // --config
void add_db_flags(CLI::App& sub, Common& common);      // --dsn
void add_output_flags(CLI::App& sub, Common& common);  // --json, --log-format, --log-level
void add_log_flags(CLI::App& sub, Common& common);     // --log-format, --log-level

/// The rule of every user-list flag (--ids, --usernames), stated in its help: repeatable,
/// each value split on commas, spaces and tabs around an item dropped, and an empty item
/// ("", ",", "a,", "a,,b") refused as a usage error, since a stray comma must neither
/// widen nor narrow a selection. Appends the items to `items`.
CLI::Option* add_list_option(CLI::App& sub, const std::string& name,
                             std::vector<std::string>& items, const std::string& help,
                             const std::string& type_name);

/// The files to load: --config, else ./values.yaml if present, else none when
/// KEYMIG_ACTIVE_KEY is set (a configuration from the environment alone) or when the
/// command needs no keys (`keys_required` false: reset-mfa; the defaults then). Throws
/// keymig::UsageError naming the flag to use when there is nothing.
[[nodiscard]] std::vector<std::string> config_files(const Common& common,
                                                    bool keys_required = true);
/// Loads the config files named by --config (none: ./values.yaml if present) and logs its
/// warnings. Throws config::ConfigError.
[[nodiscard]] config::Config load_config(const Common& common, bool keys_required = true);
/// The checks of metrics.listen and metrics.pushGateway by their one parser each (http,
/// metrics), for config::load.
[[nodiscard]] config::SettingChecks setting_checks();
/// Builds the key ring from the config; validates the keys. Throws config::ConfigError
/// (naming file, line and key; never the key).
[[nodiscard]] crypto::KeyRing load_keyring(const config::Config& config);
/// --dsn, else keyMigration.database.dsn, else "" (libpq env vars).
[[nodiscard]] std::string effective_dsn(const Common& common, const config::Config& config);

/// A subcommand: `setup` adds its flags to `sub` and returns the action to run once the
/// command line parsed. The action returns the exit code; exceptions derived from
/// keymig::UsageError exit 2, other errors exit 1 (main prints one line, never a secret).
/// `order` also picks the --help group unless `group` is set: below 100 "Keys and
/// configuration" (keygen 10, check-config 20, inspect 30), 100-199 "Rotation" (scan 110,
/// migrate 120, verify 130, rollback 140, finalize 150), 200-299 "Operations" (status,
/// reset-mfa, journal, serve), 300 and up "Benchmarks".
struct CommandSpec {
  std::string name;
  std::string description;
  int order = 100;  // position in --help
  std::function<std::function<int()>(CLI::App& sub, Common& common)> setup;
  std::string group = {};  // --help group; empty: from `order`
  /// The end of `keymig NAME --help`: lines "  keymig NAME ...   what it does", each a
  /// command an operator would type. Empty: no examples.
  std::string examples = {};
};

/// The --help group of a command (see CommandSpec).
[[nodiscard]] std::string command_group(const CommandSpec& spec);

/// Sets the log facade from --log-format/--log-level. Throws keymig::UsageError.
void configure_logging(const Common& common);

/// The one JSON object a --json command prints on stdout when it fails: {"ok": false,
/// "command", "error", "exit_code"}.
[[nodiscard]] std::string failure_json(const std::string& command, const std::string& error,
                                       int exit_code);
/// For a command that printed its own failure object (a stream it had to close): main
/// then prints none.
void note_failure_json_written();
[[nodiscard]] bool failure_json_written();

struct Registrar {
  explicit Registrar(CommandSpec spec);
};

[[nodiscard]] std::vector<CommandSpec>& registered_commands();

}  // namespace keymig::app
