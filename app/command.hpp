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

/// Loads the config files named by --config (none: ./values.yaml if present).
/// Throws config::ConfigError.
[[nodiscard]] config::Config load_config(const Common& common);
/// Builds the key ring from the config; validates the keys. Throws config::ConfigError
/// (naming file, line and key; never the key).
[[nodiscard]] crypto::KeyRing load_keyring(const config::Config& config);
/// --dsn, else keyMigration.database.dsn, else "" (libpq env vars).
[[nodiscard]] std::string effective_dsn(const Common& common, const config::Config& config);

/// A subcommand: `setup` adds its flags to `sub` and returns the action to run once the
/// command line parsed. The action returns the exit code; exceptions derived from
/// keymig::UsageError exit 2, other errors exit 1 (main prints one line, never a secret).
struct CommandSpec {
  std::string name;
  std::string description;
  int order = 100;  // position in --help
  std::function<std::function<int()>(CLI::App& sub, Common& common)> setup;
};

struct Registrar {
  explicit Registrar(CommandSpec spec);
};

[[nodiscard]] std::vector<CommandSpec>& registered_commands();

}  // namespace keymig::app
