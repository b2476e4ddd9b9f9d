// `keymig status` and `keymig reset-mfa`: what the platform's admin pages show per user,
// and the break-glass for a locked-out user. Neither ever prints a secret.

#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "command.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/engine/mfa_admin.hpp"
#include "keymig/error.hpp"
#include "keymig/redact.hpp"
#include "target_counts.hpp"

namespace keymig::app {

namespace {

db::Connection connect(const Common& common, const config::Config& config) {
  db::ConnectOptions options;
  options.dsn = effective_dsn(common, config);
  options.lock_timeout = config.migration.lock_timeout;
  options.statement_timeout = config.migration.statement_timeout;
  return db::Connection(options);
}

std::string key_column(const engine::UserStatus& u) {
  if (!u.mfa) return "-";
  if (!u.key_checked) return "unchecked";
  if (u.key_index >= 0) return crypto::KeyRing::key_label(u.key_index);
  return std::string("undecryptable:") + crypto::reason_name(u.reason);
}

// "true", or "false (stored: true)" when the stored flag disagrees.
std::string fernet_active_column(const engine::UserStatus& u) {
  std::string out = u.fernet_active ? "true" : "false";
  if (u.flag_wrong)
    out += std::string(" (stored: ") +
           (u.stored_flag ? (*u.stored_flag ? "true" : "false") : "null") + ")";
  return out;
}

nlohmann::json user_json(const engine::UserStatus& u) {
  nlohmann::json j = {{"id", u.id},
                      {"username", u.username},
                      {"mfa", u.mfa},
                      {"key", key_column(u)},
                      {"mfa_fernet_active", u.fernet_active},
                      {"sysadmin", u.sysadmin}};
  j["stored_flag"] = u.stored_flag ? nlohmann::json(*u.stored_flag) : nlohmann::json(nullptr);
  j["flag_wrong"] = u.flag_wrong;
  j["double_encrypted"] = u.double_encrypted;
  if (u.unreadable()) j["reason"] = crypto::reason_name(u.reason);
  return j;
}

void print_summary(const engine::StatusReport& s) {
  std::cout << "target " << s.target << ": " << s.users << " users, " << s.with_mfa << " with MFA, "
            << s.without_mfa << " without\n";
  for (const auto& k : s.by_key)
    std::cout << "  " << k.label << " (" << k.fingerprint << "): " << k.users << "\n";
  std::cout << "  undecryptable: " << s.undecryptable_total;
  if (!s.undecryptable.empty()) {
    std::string sep = " (";
    for (const auto& [reason, n] : s.undecryptable) {
      std::cout << sep << reason << " " << n;
      sep = ", ";
    }
    std::cout << ")";
  }
  std::cout << "\n";
  if (s.has_flag_column)
    std::cout << "  wrong \"MFA fernet active\" flag: " << s.wrong_flag << "\n";
  std::cout << "  double-encrypted (the plaintext is itself a token): " << s.double_encrypted;
  for (std::size_t i = 0; i < s.double_encrypted_ids.size() && i < 20; ++i)
    std::cout << (i == 0 ? " (ids " : " ") << escape_control(s.double_encrypted_ids[i]);
  if (s.double_encrypted > 0) std::cout << (s.double_encrypted > 20 ? " ...)" : ")");
  std::cout << "\n";
  std::cout << "  sysadmins: " << s.sysadmins << " (" << s.sysadmins_without_mfa << " without MFA, "
            << s.sysadmins_unreadable << " unreadable)\n";
  for (const auto& col : s.missing_sysadmin_columns)
    std::cout << "  note: sysAdminColumns \"" << col << "\" is not in the table\n";
  for (const auto& nf : s.not_found) std::cout << "  not found: " << nf << "\n";
}

void print_user_header() {
  std::cout << "ID\tUSERNAME\tMFA\tKEY\tMFA_FERNET_ACTIVE\tSYSADMIN\n";
}

// Ids and usernames are the application's data: a name holding "\x1b[2J" or a newline
// must not repaint the operator's terminal or forge a line.
void print_user_line(const engine::UserStatus& u) {
  std::cout << escape_control(u.id) << '\t'
            << (u.username.empty() ? "-" : escape_control(u.username)) << '\t'
            << (u.mfa ? "yes" : "no") << '\t' << key_column(u) << '\t' << fernet_active_column(u)
            << '\t' << (u.sysadmin ? "yes" : "no") << '\n';
}

struct StatusFlags {
  bool list = false;
  std::vector<std::string> usernames;
  std::vector<std::string> ids;
  std::int64_t page_size = 5000;
};

int run_status(const Common& common, const StatusFlags& flags) {
  engine::StatusOptions options;
  options.selection.usernames = flags.usernames;
  options.selection.ids = flags.ids;
  options.page_size = flags.page_size;
  engine::validate_selection(options.selection, true);
  auto config = load_config(common);
  auto keys = load_keyring(config);
  options.threads = config.migration.threads;
  auto conn = connect(common, config);
  // The users are the first target's; with several, every target's secrets by key too,
  // read before the first line is written.
  std::optional<engine::ScanAcross> per_target;
  if (config.migration.targets.size() > 1 && options.selection.empty())
    per_target = count_every_target(common, config, keys);

  // List rows are written as they are classified: a million users never sit in memory.
  bool first = true;
  std::function<void(const engine::UserStatus&)> on_user;
  if (flags.list && common.json) {
    std::cout << "{\"users\":[";
    on_user = [&](const engine::UserStatus& u) {
      std::cout << (first ? "" : ",") << user_json(u).dump();
      first = false;
    };
  } else if (flags.list) {
    print_user_header();
    on_user = print_user_line;
  }
  engine::StatusReport report;
  try {
    report = engine::mfa_status(conn, config, keys, options, on_user);
  } catch (const std::exception& e) {
    if (flags.list && common.json) {
      // The users array is open on stdout: close it into the one failure object.
      const int code = dynamic_cast<const UsageError*>(&e) ? kExitUsage : kExitRuntime;
      std::string rest = failure_json("status", e.what(), code);
      std::cout << "]," << rest.substr(1) << std::endl;
      note_failure_json_written();
    }
    throw;
  }
  if (common.json) {
    auto j = nlohmann::json::parse(report.to_json());
    if (per_target) j["targets"] = target_counts_json(*per_target);
    if (flags.list) {
      std::string rest = j.dump();  // "{...}": splice its members after the users array
      std::cout << "]" << (rest.size() > 2 ? "," + rest.substr(1) : "}") << "\n";
    } else {
      std::cout << j.dump() << "\n";
    }
  } else {
    if (flags.list) std::cout << "\n";
    print_summary(report);
    if (per_target)
      std::cout << "\n" << target_counts_text(*per_target, "every target's secrets by key:");
  }
  std::cout.flush();
  return kExitOk;
}

struct ResetFlags {
  std::vector<std::string> usernames;
  std::vector<std::string> ids;
  bool yes = false;
};

bool confirmed_on_terminal(const engine::ResetPlan& plan) {
  std::cerr << "Type 'yes' to clear the MFA secret and flag of these " << plan.users.size()
            << " user(s) in " << plan.target << ": ";
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "yes";
}

int run_reset(const Common& common, const ResetFlags& flags) {
  db::Selection selection;
  selection.usernames = flags.usernames;
  selection.ids = flags.ids;
  engine::validate_selection(selection, false);
  const bool terminal = ::isatty(STDIN_FILENO) == 1 && ::isatty(STDERR_FILENO) == 1;
  if (!flags.yes && !terminal)
    throw UsageError("reset-mfa: not on a terminal, so nobody can confirm: pass --yes");

  // Clearing a secret needs no key: a break-glass without the active key (lost, or never
  // configured on this machine) must still work. Keys that are configured are checked.
  auto config = load_config(common, /*keys_required=*/false);
  std::optional<crypto::KeyRing> keys;
  if (config.active_key) keys.emplace(load_keyring(config));
  const crypto::KeyRing* ring = keys ? &*keys : nullptr;
  auto conn = connect(common, config);
  auto plan = engine::plan_reset_mfa(conn, config, ring, selection);

  // The users, never their secrets: an operator confirms who, not what.
  std::ostream& shown = common.json ? std::cerr : std::cout;
  shown << "reset-mfa will clear MFA for " << plan.users.size() << " user(s) in " << plan.target
        << ":\n";
  for (const auto& u : plan.users)
    shown << "  id=" << escape_control(u.id)
          << (u.username.empty() ? "" : " username=" + escape_control(u.username))
          << " mfa=" << (u.mfa ? "yes" : "no") << " key=" << key_column(u)
          << (u.sysadmin ? " sysadmin" : "") << "\n";
  if (!ring) shown << "(no active key configured: which key made each secret is not checked)\n";
  shown.flush();
  if (!flags.yes && !confirmed_on_terminal(plan))
    throw UsageError("reset-mfa: not confirmed; nothing changed");

  auto result = engine::reset_mfa(conn, config, ring, plan);
  const std::string undo = "keymig rollback --run " + result.run_id;
  if (common.json) {
    nlohmann::json users = nlohmann::json::array();
    for (const auto& u : result.users) users.push_back(user_json(u));
    std::cout << nlohmann::json{{"run_id", result.run_id},
                                {"target", result.target},
                                {"cleared", result.users.size()},
                                {"users", users},
                                {"undo", undo}}
                     .dump()
              << "\n";
  } else {
    std::cout << "cleared MFA for " << result.users.size() << " user(s); run " << result.run_id
              << " journals the old secrets and flags\n"
              << "undo with: " << undo << "\n"
              << "the journal holds the old secrets until `keymig finalize --run " << result.run_id
              << "` or `keymig journal purge`\n";
  }
  return kExitOk;
}

const Registrar status_command{CommandSpec{
    "status",
    "users with MFA, how many secrets under each key, wrong flags; --list for one row per user",
    210,
    [](CLI::App& sub, Common& common) -> std::function<int()> {
      auto flags = std::make_shared<StatusFlags>();
      add_config_flags(sub, common);
      add_db_flags(sub, common);
      add_output_flags(sub, common);
      sub.add_flag("--list", flags->list,
                   "one row per user: id, username, MFA, key, MFA fernet active, sysadmin");
      add_list_option(sub, "--usernames", flags->usernames, "only these users", "A,B");
      add_list_option(sub, "--ids", flags->ids, "only these ids", "1,2");
      sub.add_option("--page-size", flags->page_size, "rows per keyset page")
          ->check(CLI::Range(1, 1000000));
      return [&common, flags] { return run_status(common, *flags); };
    },
    {},
    "  keymig status --config values.yaml                         users per key, wrong flags\n"
    "  keymig status --config values.yaml --list --usernames alice   one row per named user"}};

const Registrar reset_command{CommandSpec{
    "reset-mfa",
    "break-glass: clear the MFA secret and flag of the named users (journaled; undo with "
    "rollback)",
    220,
    [](CLI::App& sub, Common& common) -> std::function<int()> {
      auto flags = std::make_shared<ResetFlags>();
      add_config_flags(sub, common);
      add_db_flags(sub, common);
      add_output_flags(sub, common);
      add_list_option(sub, "--usernames", flags->usernames, "exact usernames", "A,B");
      add_list_option(sub, "--ids", flags->ids, "exact ids", "1,2");
      sub.add_flag("--yes", flags->yes, "do not ask (required when not on a terminal)");
      return [&common, flags] { return run_reset(common, *flags); };
    },
    {},
    "  keymig reset-mfa --config values.yaml --usernames alice     shows the users, asks 'yes'\n"
    "  keymig reset-mfa --config values.yaml --ids 1042 --yes      in a script\n"
    "  keymig rollback --config values.yaml --run RUN_ID           undo it (docs/break-glass.md)"}};

}  // namespace

}  // namespace keymig::app
