// The MFA admin reports: the selection rule, one user's status, the counts of `status`
// and the pre-flight's text and JSON. No secret reaches any of them.

#include <nlohmann/json.hpp>
#include <sstream>

#include "keymig/engine/mfa_admin.hpp"
#include "keymig/error.hpp"
#include "keymig/redact.hpp"

namespace keymig::engine {

namespace {

nlohmann::json status_json(const StatusReport& s) {
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& k : s.by_key)
    keys.push_back({{"key", k.label}, {"fingerprint", k.fingerprint}, {"users", k.users}});
  // "users_total", not "users": `status --list --json` puts the user rows under "users".
  return {{"target", s.target},
          {"users_total", s.users},
          {"with_mfa", s.with_mfa},
          {"without_mfa", s.without_mfa},
          {"by_key", keys},
          {"undecryptable", s.undecryptable_total},
          {"undecryptable_by_reason", s.undecryptable},
          {"wrong_flag", s.wrong_flag},
          {"sysadmins", s.sysadmins},
          {"sysadmins_without_mfa", s.sysadmins_without_mfa},
          {"sysadmins_unreadable", s.sysadmins_unreadable},
          {"double_encrypted", s.double_encrypted},
          {"double_encrypted_ids", s.double_encrypted_ids},
          {"not_found", s.not_found},
          {"missing_sysadmin_columns", s.missing_sysadmin_columns},
          {"seconds", s.seconds}};
}

nlohmann::json user_ref_json(const UserRef& u) {
  return {{"id", u.id}, {"username", u.username}, {"reason", u.reason}, {"sysadmin", u.sysadmin}};
}

}  // namespace

std::string StatusReport::to_json() const {
  return status_json(*this).dump();
}

void validate_selection(const db::Selection& selection, bool allow_empty) {
  if (selection.empty()) {
    if (allow_empty) return;
    throw UsageError("no users selected: name them with --usernames a,b or --ids 1,2");
  }
  for (const auto* list : {&selection.ids, &selection.usernames}) {
    for (const auto& item : *list) {
      if (item.empty()) throw UsageError("an empty name in the user list (check the commas)");
      // keymig matches exactly, but an operator who types a pattern expects it to match
      // many users: refuse rather than silently select nobody (or the wrong one).
      if (item.find_first_of("%*?") != std::string::npos)
        throw UsageError("\"" + escape_control(item) +
                         "\" looks like a pattern (% * ?): name users exactly");
    }
  }
}

UserStatus classify_user(const crypto::KeyRing& keys, std::string id, std::string username,
                         std::string_view token, bool is_null, std::optional<bool> stored_flag,
                         bool has_flag, bool sysadmin) {
  UserStatus u;
  u.id = std::move(id);
  u.username = std::move(username);
  u.sysadmin = sysadmin;
  u.stored_flag = stored_flag;
  u.mfa = !is_null && !token.empty();
  if (u.mfa) {
    auto c = keys.classify_deep(token);
    u.key_index = c.reason == crypto::Reason::ok ? c.key_index : -1;
    u.double_encrypted = c.double_encrypted;
    u.reason = c.reason;
    u.fernet_active = u.key_index == 0;
  }
  u.flag_wrong = has_flag && stored_flag.value_or(false) != u.fernet_active;
  return u;
}

void StatusReport::add(const UserStatus& u) {
  ++users;
  if (u.sysadmin) ++sysadmins;
  if (u.flag_wrong) ++wrong_flag;
  if (!u.mfa) {
    ++without_mfa;
    if (u.sysadmin) ++sysadmins_without_mfa;
    return;
  }
  ++with_mfa;
  if (u.double_encrypted) {
    ++double_encrypted;
    if (double_encrypted_ids.size() < kMaxListedUsers) double_encrypted_ids.push_back(u.id);
  }
  if (u.key_index >= 0 && u.key_index < static_cast<int>(by_key.size())) {
    ++by_key[u.key_index].users;
    return;
  }
  ++undecryptable_total;
  ++undecryptable[crypto::reason_name(u.reason)];
  if (u.sysadmin) ++sysadmins_unreadable;
}

int PreflightReport::exit_code() const noexcept {
  if (!swapped_keys.empty()) return kExitUsage;
  return locked_out > 0 ? kExitNeedsRolling : kExitOk;
}

std::string format_preflight(const PreflightReport& r) {
  std::ostringstream out;
  const auto& s = r.status;
  out << "database pre-flight (" << s.target << "): " << s.users << " users, " << s.with_mfa
      << " with MFA, " << r.locked_out << " would be locked out";
  if (r.acknowledged > 0) out << " (and " << r.acknowledged << " acknowledged)";
  out << "\n";
  for (const auto& k : s.by_key)
    out << "  " << k.label << " (" << k.fingerprint << "): " << k.users << " users\n";
  for (const auto& [reason, n] : s.undecryptable)
    out << "  undecryptable (" << reason << "): " << n << " users\n";
  for (const auto& u : r.locked_out_users)
    out << "  locked out: id=" << escape_control(u.id)
        << (u.username.empty() ? "" : " username=" + escape_control(u.username))
        << " reason=" << u.reason << (u.sysadmin ? " sysadmin" : "") << "\n";
  if (static_cast<std::int64_t>(r.locked_out_users.size()) < r.locked_out)
    out << "  ... and " << r.locked_out - static_cast<std::int64_t>(r.locked_out_users.size())
        << " more\n";
  for (const auto& u : r.sysadmins_at_risk)
    out << "  sysadmin at risk: id=" << escape_control(u.id)
        << (u.username.empty() ? "" : " username=" + escape_control(u.username))
        << " reason=" << u.reason << "\n";
  for (const auto& w : r.warnings) out << "warning: " << w << "\n";
  if (!r.swapped_keys.empty()) out << "error: " << r.swapped_keys << "\n";
  out << (r.locked_out == 0 ? "pre-flight: nobody would be locked out\n"
                            : "pre-flight: deploying this config would lock users out\n");
  return out.str();
}

std::string preflight_json(const PreflightReport& r) {
  nlohmann::json locked = nlohmann::json::array(), admins = nlohmann::json::array();
  for (const auto& u : r.locked_out_users) locked.push_back(user_ref_json(u));
  for (const auto& u : r.sysadmins_at_risk) admins.push_back(user_ref_json(u));
  nlohmann::json j = {
      {"status", status_json(r.status)}, {"locked_out", r.locked_out},
      {"missing_key", r.missing_key},    {"locked_out_users", locked},
      {"acknowledged", r.acknowledged},  {"swapped_keys", r.swapped_keys},
      {"sysadmins_at_risk", admins},     {"removed_fingerprints", r.removed_fingerprints},
      {"warnings", r.warnings},          {"ok", r.exit_code() == kExitOk}};
  return j.dump();
}

}  // namespace keymig::engine
