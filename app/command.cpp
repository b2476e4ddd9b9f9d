#include "command.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "keymig/engine/keys.hpp"
#include "keymig/http/server.hpp"
#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"
#include "keymig/process.hpp"
#include "keymig/secure.hpp"
#include "keymig/text.hpp"

namespace keymig::app {

std::vector<CommandSpec>& registered_commands() {
  // A function-local static: registrars in other translation units run during static
  // initialisation, in an order we do not control.
  static std::vector<CommandSpec> commands;
  return commands;
}

Registrar::Registrar(CommandSpec spec) {
  registered_commands().push_back(std::move(spec));
}

std::string command_group(const CommandSpec& spec) {
  if (!spec.group.empty()) return spec.group;
  if (spec.order < 100) return "Keys and configuration";
  if (spec.order < 200) return "Rotation";
  if (spec.order < 300) return "Operations";
  return "Benchmarks";
}

namespace {
std::atomic<bool> g_failure_json_written{false};
}  // namespace

std::string failure_json(const std::string& command, const std::string& error, int exit_code) {
  const nlohmann::json j = {
      {"ok", false}, {"command", command}, {"error", error}, {"exit_code", exit_code}};
  // A server's message in another encoding must not turn the report into an exception.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void note_failure_json_written() {
  g_failure_json_written.store(true);
}

bool failure_json_written() {
  return g_failure_json_written.load();
}

void add_config_flags(CLI::App& sub, Common& common) {
  // One file per --config, so `--config a.yaml TOKEN` never swallows a positional.
  sub.add_option("--config", common.config_files,
                 "values.yaml to read (repeatable; later files win key by key). "
                 "Default: ./values.yaml")
      ->type_name("FILE")
      ->allow_extra_args(false);
}

void add_db_flags(CLI::App& sub, Common& common) {
  sub.add_option("--dsn", common.dsn,
                 "libpq DSN or URI; default: keyMigration.database.dsn, else the PG* "
                 "environment variables (none: exit 2). Keep passwords in PGPASSWORD or "
                 "~/.pgpass, not here")
      ->type_name("DSN");
}

void add_output_flags(CLI::App& sub, Common& common) {
  sub.add_flag("--json", common.json, "print one JSON object on stdout");
  add_log_flags(sub, common);
}

void add_log_flags(CLI::App& sub, Common& common) {
  sub.add_option("--log-format", common.log_format, "log lines on stderr: text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->envname("KEYMIG_LOG_FORMAT");
  sub.add_option("--log-level", common.log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->envname("KEYMIG_LOG_LEVEL");
}

namespace {

constexpr const char* kListRule =
    " (comma-separated, repeatable; spaces around items are ignored; an empty item is an "
    "error)";

// Not CLI11's delimiter(','): it drops empty items silently, and a refused empty item is
// the rule.
std::vector<std::string> split_list_value(const std::string& name, const std::string& value) {
  auto items = split_list(value);
  for (const auto& item : items)
    if (item.empty())
      throw CLI::ValidationError(name, "empty item in \"" + value + "\" (check the commas)");
  return items;
}

}  // namespace

CLI::Option* add_list_option(CLI::App& sub, const std::string& name,
                             std::vector<std::string>& items, const std::string& help,
                             const std::string& type_name) {
  return sub
      .add_option_function<std::vector<std::string>>(
          name,
          [&items, name](const std::vector<std::string>& values) {
            for (const auto& value : values)
              for (auto& item : split_list_value(name, value)) items.push_back(std::move(item));
          },
          help + kListRule)
      ->type_name(type_name)
      ->allow_extra_args(false);
}

void configure_logging(const Common& common) {
  log::Level level{};
  log::Format format{};
  if (!log::parse_level(common.log_level, level))
    throw UsageError("--log-level must be debug, info, warn or error");
  if (!log::parse_format(common.log_format, format))
    throw UsageError("--log-format must be text or json");
  log::configure(level, format);
}

std::vector<std::string> config_files(const Common& common, bool keys_required) {
  if (!common.config_files.empty()) return common.config_files;
  if (::access("values.yaml", F_OK) == 0) return {"values.yaml"};
  if (!keys_required) return {};
  auto active = process::secret_env("KEYMIG_ACTIVE_KEY");
  const bool from_env = active && !active->empty();
  if (active) secure_wipe(active->data(), active->size());
  if (from_env) return {};
  throw UsageError(
      "no configuration: pass --config FILE (a values.yaml with secretStore.activeKey), run "
      "where ./values.yaml is, or set KEYMIG_ACTIVE_KEY");
}

config::SettingChecks setting_checks() {
  config::SettingChecks checks;
  checks.listen_address = [](const std::string& text) {
    try {
      (void)http::parse_listen_address(text);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  checks.push_gateway = metrics::push_gateway_problem;
  return checks;
}

config::Config load_config(const Common& common, bool keys_required) {
  config::Config config =
      config::load(config_files(common, keys_required), config::process_env(), setting_checks());
  for (const auto& warning : config.warnings)
    KEYMIG_LOG(warn, "config", "config_warning", {"detail", warning});
  return config;
}

crypto::KeyRing load_keyring(const config::Config& config) {
  return engine::build_keyring(config);
}

std::string effective_dsn(const Common& common, const config::Config& config) {
  if (!common.dsn.empty()) return common.dsn;
  return config.migration.dsn;
}

}  // namespace keymig::app
