// The `keymig` binary: builds the command line from the registered subcommands, runs the
// chosen one and turns what escapes into an exit code and one line on stderr.

#include <malloc.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <exception>
#include <iostream>
#include <nlohmann/json.hpp>
#include <utility>

#include "command.hpp"
#include "keymig/base64.hpp"
#include "keymig/error.hpp"
#include "keymig/process.hpp"
#include "keymig/redact.hpp"

namespace {

using keymig::app::CommandSpec;

constexpr const char* kDescription =
    "keymig rotates the Fernet key that protects users' MFA (TOTP) secrets in PostgreSQL:\n"
    "it re-encrypts every secret made under a rolling (old) key with the active key,\n"
    "online, in resumable batches, and proves the result. Keys come from values.yaml\n"
    "(secretStore) or KEYMIG_ACTIVE_KEY / KEYMIG_ROLLING_KEYS, never from the command line.\n";

bool has_command(const std::vector<CommandSpec>& specs, const std::string& name) {
  return std::any_of(specs.begin(), specs.end(),
                     [&](const CommandSpec& s) { return s.name == name; });
}

// Examples only for commands this build has, so the help never promises what is missing.
std::string footer(const std::vector<CommandSpec>& specs) {
  std::string out = "Examples:\n";
  if (has_command(specs, "keygen"))
    out +=
        "  (umask 077; keymig keygen > new.key)            make a new key, readable by you only\n";
  if (has_command(specs, "check-config"))
    out += "  keymig check-config --config values.yaml        validate keys and MFA policy\n";
  if (has_command(specs, "inspect"))
    out += "  keymig inspect --config values.yaml - < tokens  which key made each token\n";
  if (has_command(specs, "scan"))
    out += "  keymig scan --config values.yaml                how many rows need moving\n";
  if (has_command(specs, "migrate"))
    out += "  keymig migrate --config values.yaml             re-encrypt rolling-key rows\n";
  if (has_command(specs, "verify"))
    out +=
        "  keymig verify --config values.yaml              prove every row reads under the active "
        "key\n";
  out +=
      "\nExit codes: 0 ok, 1 runtime failure, 2 usage or config error, 3 tokens no configured\n"
      "key can read, 4 rows still need a rolling key or a check failed.\n"
      "Run 'keymig COMMAND --help' for a command's flags.";
  return out;
}

// The subcommand the parser had reached, for the "see 'keymig X --help'" hint.
std::string help_hint(CLI::App& app) {
  std::string path = "keymig";
  const CLI::App* current = &app;
  for (;;) {
    const auto subs = current->get_subcommands();
    if (subs.empty()) break;
    current = subs.front();
    path += " " + current->get_name();
  }
  return path + " --help";
}

// The subcommand path the parser reached ("journal purge"), for --json's "command".
std::string command_path(CLI::App& app) {
  std::string path;
  const CLI::App* current = &app;
  for (;;) {
    const auto subs = current->get_subcommands();
    if (subs.empty()) break;
    current = subs.front();
    path += (path.empty() ? "" : " ") + current->get_name();
  }
  return path;
}

// --json before a lone "--": the parser may have failed before it set the flag.
bool json_requested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "--json") return true;
  }
  return false;
}

// An argument that holds a database password: `password=` anywhere (a libpq key=value
// DSN, a URI's ?password=) or a URI's user:password@.
bool holds_password(std::string_view arg) {
  std::string lower(arg);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("password") != std::string::npos) return true;
  const auto scheme = arg.find("://");
  if (scheme == std::string_view::npos) return false;
  const auto at = arg.find('@', scheme + 3);
  return at != std::string_view::npos &&
         arg.substr(scheme + 3, at - scheme - 3).find(':') != std::string_view::npos;
}

// A whole argument that is a Fernet key: the canonical 44 characters of 32 bytes. Refused
// before the parser sees it, since a key may begin with '-': CLI11 read "-h..." as a
// cluster of short flags, printed the help and exited 0. A token (inspect's argument)
// always begins "gAAAA" and is left to the parser.
bool key_shaped(std::string_view arg) {
  std::uint8_t bytes[33];
  std::size_t length = 0;
  return arg.size() == keymig::encoded_length(32) &&
         keymig::decode_canonical_base64url(arg, bytes, length) && length == 32;
}

// The subcommand the operator named, before the parser has run: for --json's "command".
std::string named_command(const std::vector<CommandSpec>& specs, int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (has_command(specs, argv[i])) return argv[i];
  return {};
}

// CLI11 quotes the argument it refuses ("Value X not in range", "argument was not
// expected: X"): a key pasted into the wrong option, or a DSN given without --dsn, would
// reach stderr and a CronJob's log whole.
std::string safe_parse_error(std::string what, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (!holds_password(arg)) continue;
    what = keymig::remove_secret(std::move(what), arg);
    // --option=VALUE: CLI11 quotes only the value.
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string_view::npos)
      what = keymig::remove_secret(std::move(what), arg.substr(eq + 1));
  }
  return keymig::escape_control(keymig::scrub_tokens(what));
}

// One line on stderr and, with --json, one object on stdout: tooling that reads stdout
// learns of the failure too. The exit code is the same either way.
// Every message is scrubbed once more here, whichever module wrote it: one that quotes what
// the operator gave (a listen address, a duration) may quote a key pasted there.
int report_failure(bool json, const std::string& command, const std::string& what, int code) {
  const std::string safe = keymig::scrub_tokens(what);
  std::cerr << "keymig: error: " << safe << '\n';
  if (json && !keymig::app::failure_json_written())
    std::cout << keymig::app::failure_json(command, safe, code) << std::endl;
  return code;
}

int run_action(const std::function<int()>& action, const keymig::app::Common& common,
               const std::string& command) {
  try {
    keymig::app::configure_logging(common);
    return action ? action() : keymig::kExitOk;
  } catch (const keymig::UsageError& e) {
    return report_failure(common.json, command, e.what(), keymig::kExitUsage);
  } catch (const std::exception& e) {
    return report_failure(common.json, command, e.what(), keymig::kExitRuntime);
  } catch (...) {
    return report_failure(common.json, command, "unknown failure", keymig::kExitRuntime);
  }
}

int run(int argc, char** argv) {
  auto specs = keymig::app::registered_commands();
  std::stable_sort(specs.begin(), specs.end(),
                   [](const CommandSpec& a, const CommandSpec& b) { return a.order < b.order; });

  CLI::App app{kDescription, "keymig"};
  app.set_version_flag("--version", std::string("keymig ") + KEYMIG_VERSION);
  app.require_subcommand(0, 1);
  app.footer(footer(specs));

  keymig::app::Common common;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions;
  for (auto& spec : specs) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.description);
    sub->group(keymig::app::command_group(spec));
    // CLI11 copies the parent's footer into each subcommand (and a subcommand's into its
    // own, `journal purge`): without this, every `keymig X --help` ended with the
    // examples of all the others. A command with help text of its own keeps it, above.
    const std::string examples =
        spec.examples.empty() ? std::string() : "Examples:\n" + spec.examples;
    sub->footer(examples);
    actions.emplace_back(sub, spec.setup(*sub, common));
    if (const std::string own = sub->get_footer(); own != examples && !examples.empty())
      sub->footer(own + "\n\n" + examples);
  }

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") break;
    if (!key_shaped(arg)) continue;
    const std::string what =
        "argument " + std::to_string(i) + " (" + std::string(keymig::kRedactedKey) +
        ") is a Fernet key: keymig never takes keys on the command line, where ps and "
        "/proc show them to every user of the machine; give them in values.yaml's "
        "secretStore or KEYMIG_ACTIVE_KEY / KEYMIG_ROLLING_KEYS (a real key typed here is "
        "in the shell's history: treat it as exposed)";
    std::cerr << "keymig: " << what << '\n';
    if (json_requested(argc, argv))
      std::cout << keymig::app::failure_json(named_command(specs, argc, argv), what,
                                             keymig::kExitUsage)
                << std::endl;
    return keymig::kExitUsage;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const std::string what = safe_parse_error(e.what(), argc, argv);
    std::cerr << "keymig: " << what << "; see '" << help_hint(app) << "'\n";
    if (common.json || json_requested(argc, argv))
      std::cout << keymig::app::failure_json(command_path(app), what, keymig::kExitUsage)
                << std::endl;
    return keymig::kExitUsage;
  }

  for (auto& [sub, action] : actions) {
    if (!sub->parsed()) continue;
    return run_action(action, common, command_path(app));
  }
  std::cerr << app.help() << "\nkeymig: no command given\n";
  return keymig::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // A closed pipe (`keymig inspect ... | head -1`) is an ordinary end, not a crash.
  std::signal(SIGPIPE, SIG_IGN);
  // Memory holds keys, tokens and plaintexts: no core file and no ptrace by other
  // processes of the same user, unless the operator opts in; the key variables leave the
  // environment before anything reads them.
  if (keymig::process::harden().core_dumps_allowed)
    std::cerr << "keymig: warning: core dumps allowed (" << keymig::process::kAllowCoreDumps
              << "=1): a core file holds every key and token this process has in memory\n";
  keymig::process::capture_secret_env();
  // A batch's buffers are a few hundred KiB: above glibc's default mmap threshold each
  // one was a fresh mapping, page-faulted in and unmapped again (two fifths of migrate's
  // own CPU). Kept in the heap they are reused; memory stays bounded by the batches in
  // flight.
  ::mallopt(M_MMAP_THRESHOLD, 64 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
  try {
    return run(argc, argv);
  } catch (const keymig::UsageError& e) {
    std::cerr << "keymig: error: " << keymig::scrub_tokens(e.what()) << '\n';
    return keymig::kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "keymig: error: " << keymig::scrub_tokens(e.what()) << '\n';
    return keymig::kExitRuntime;
  } catch (...) {
    std::cerr << "keymig: error: unknown failure\n";
    return keymig::kExitRuntime;
  }
}
