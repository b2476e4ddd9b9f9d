#include "keymig/engine/mfa_admin.hpp"

#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "keymig/db/retry.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/db/users.hpp"
#include "keymig/error.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"

namespace keymig::engine {

namespace {

db::UserTable open_user_table(db::Connection& conn, const config::Config& config) {
  const auto& t = config.migration.target;
  db::TargetSpec spec{t.table, t.id_column, t.secret_column, t.flag_column, t.username_column};
  db::Table table = db::check_target(conn, spec);
  return db::check_user_table(conn, table, t.sysadmin_columns);
}

UserStatus to_status(const crypto::KeyRing& keys, const db::UserRow& row, bool has_flag) {
  return classify_user(keys, row.id, row.username, row.token.view(), row.is_null, row.flag,
                       has_flag, row.sysadmin);
}

StatusReport empty_report(const db::UserTable& users, const crypto::KeyRing& keys) {
  StatusReport report;
  report.target = users.table.label();
  report.has_flag_column = users.table.has_flag();
  report.has_username_column = !users.table.q_username.empty();
  report.sysadmin_columns = users.sysadmin_columns;
  report.missing_sysadmin_columns = users.missing_sysadmin_columns;
  for (int i = 0; i <= static_cast<int>(keys.rolling_count()); ++i)
    report.by_key.push_back({i, crypto::KeyRing::key_label(i), keys.fingerprint(i), 0});
  return report;
}

int effective_threads(int configured) {
  if (configured > 0) return configured;
  return std::max(1, tbb::info::default_concurrency());
}

// The selected values no user matched (ids compared in their text form as the database
// prints them, usernames exactly).
std::vector<std::string> unmatched(const db::Selection& selection,
                                   const std::vector<db::UserRow>& rows) {
  std::set<std::string> ids, names;
  for (const auto& r : rows) {
    ids.insert(r.id);
    names.insert(r.username);
  }
  std::vector<std::string> out;
  for (const auto& id : selection.ids)
    if (!ids.count(id)) out.push_back(id);
  for (const auto& name : selection.usernames)
    if (!names.count(name)) out.push_back(name);
  return out;
}

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

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto comma = text.find(',', start);
    std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto first = item.find_first_not_of(" \t");
    auto last = item.find_last_not_of(" \t");
    out.push_back(first == std::string::npos ? std::string()
                                             : item.substr(first, last - first + 1));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
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
        throw UsageError("\"" + item + "\" looks like a pattern (% * ?): name users exactly");
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
    auto c = keys.classify(token);
    u.key_index = c.reason == crypto::Reason::ok ? c.key_index : -1;
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
  if (u.key_index >= 0 && u.key_index < static_cast<int>(by_key.size())) {
    ++by_key[u.key_index].users;
    return;
  }
  ++undecryptable_total;
  ++undecryptable[crypto::reason_name(u.reason)];
  if (u.sysadmin) ++sysadmins_unreadable;
}

StatusReport mfa_status(db::Connection& conn, const config::Config& config,
                        const crypto::KeyRing& keys, const StatusOptions& options,
                        const std::function<void(const UserStatus&)>& on_user) {
  validate_selection(options.selection, true);
  const auto started = std::chrono::steady_clock::now();
  const db::UserTable users = open_user_table(conn, config);
  StatusReport report = empty_report(users, keys);
  const bool has_flag = users.table.has_flag();
  auto emit = [&](const UserStatus& u) {
    report.add(u);
    if (on_user) on_user(u);
  };

  if (!options.selection.empty()) {
    // A handful of named users: one query, no paging.
    auto rows =
        db::read_selected_users(conn, users, options.selection.ids, options.selection.usernames);
    report.not_found = unmatched(options.selection, rows);
    for (const auto& row : rows) emit(to_status(keys, row, has_flag));
  } else {
    // Read a page (serial: one connection), classify it in parallel (HMAC only; the
    // ring is immutable), then count and print in id order while the next page is read.
    struct Page {
      std::vector<db::UserRow> rows;
      std::vector<UserStatus> out;
    };
    const int threads = effective_threads(options.threads);
    const std::int64_t page_size = std::max<std::int64_t>(1, options.page_size);
    std::optional<std::string> after;
    bool done = false;
    tbb::task_arena arena(threads);
    arena.execute([&] {
      tbb::parallel_pipeline(
          static_cast<std::size_t>(threads) * 2 + 1,
          tbb::make_filter<void, std::shared_ptr<Page>>(
              tbb::filter_mode::serial_in_order,
              [&](tbb::flow_control& fc) -> std::shared_ptr<Page> {
                if (done) {
                  fc.stop();
                  return nullptr;
                }
                auto page = std::make_shared<Page>();
                page->rows = db::with_retry(
                    conn, [&] { return db::read_user_page(conn, users, after, page_size); });
                if (static_cast<std::int64_t>(page->rows.size()) < page_size) done = true;
                if (!page->rows.empty()) after = page->rows.back().id;
                return page;
              }) &
              tbb::make_filter<std::shared_ptr<Page>, std::shared_ptr<Page>>(
                  tbb::filter_mode::parallel,
                  [&](std::shared_ptr<Page> page) {
                    page->out.reserve(page->rows.size());
                    for (auto& row : page->rows) {
                      page->out.push_back(to_status(keys, row, has_flag));
                      row.token.wipe();
                    }
                    return page;
                  }) &
              tbb::make_filter<std::shared_ptr<Page>, void>(tbb::filter_mode::serial_in_order,
                                                            [&](std::shared_ptr<Page> page) {
                                                              for (const auto& u : page->out)
                                                                emit(u);
                                                            }));
    });
  }
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  KEYMIG_LOG(info, "mfa", "status", {"target", report.target}, {"users", report.users},
             {"with_mfa", report.with_mfa}, {"undecryptable", report.undecryptable_total},
             {"wrong_flag", report.wrong_flag}, {"seconds", report.seconds});
  return report;
}

ResetPlan plan_reset_mfa(db::Connection& conn, const config::Config& config,
                         const crypto::KeyRing& keys, const db::Selection& selection) {
  validate_selection(selection, false);
  const db::UserTable users = open_user_table(conn, config);
  auto rows = db::read_selected_users(conn, users, selection.ids, selection.usernames);
  auto missing = unmatched(selection, rows);
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    throw UsageError("reset-mfa: no user " + list + " in " + users.table.label() +
                     "; nothing changed");
  }
  ResetPlan plan;
  plan.target = users.table.label();
  plan.selection = selection;
  for (const auto& row : rows) plan.users.push_back(to_status(keys, row, users.table.has_flag()));
  return plan;
}

ResetResult reset_mfa(db::Connection& conn, const config::Config& config,
                      const crypto::KeyRing& keys, const ResetPlan& plan) {
  if (plan.users.empty()) throw UsageError("reset-mfa: no users selected");
  const db::UserTable users = open_user_table(conn, config);
  if (users.table.label() != plan.target)
    throw UsageError("reset-mfa: the target changed since the plan was made");
  db::ensure_schema(conn);

  db::ResetRecord record;
  record.run_id = new_run_id("reset-", 6);
  record.active_fingerprint = keys.fingerprint(0);
  for (int i = 1; i <= static_cast<int>(keys.rolling_count()); ++i)
    record.rolling_fingerprints.push_back(keys.fingerprint(i));
  nlohmann::json sel;
  if (!plan.selection.ids.empty()) sel["ids"] = plan.selection.ids;
  if (!plan.selection.usernames.empty()) sel["usernames"] = plan.selection.usernames;
  record.selection_json = sel.dump();
  record.host = host_name();
  record.pid = static_cast<int>(getpid());

  std::vector<std::string> ids;
  for (const auto& u : plan.users) ids.push_back(u.id);
  // Not retried: a lost commit would be ambiguous, and the operator sees the error and
  // can check `status --list` before running it again.
  auto cleared = db::clear_mfa(conn, users, ids, record);
  ResetResult result;
  result.run_id = record.run_id;
  result.target = plan.target;
  result.users = plan.users;
  KEYMIG_LOG(warn, "mfa", "reset_mfa", {"run_id", result.run_id}, {"target", result.target},
             {"users", static_cast<std::int64_t>(cleared.size())});
  return result;
}

int PreflightReport::exit_code() const noexcept {
  return locked_out > 0 ? kExitNeedsRolling : kExitOk;
}

PreflightReport lockout_preflight(db::Connection& conn, const config::Config& config,
                                  const crypto::KeyRing& keys, std::size_t max_listed) {
  PreflightReport report;
  const auto& mfa = config.mfa;
  const bool admins_must = mfa.enabled && (mfa.mandatory || mfa.mandatory_for_sysadmins);
  StatusOptions options;
  options.page_size = config.migration.batch_size > 0 ? config.migration.batch_size * 2 : 5000;
  options.threads = config.migration.threads;
  report.status = mfa_status(conn, config, keys, options, [&](const UserStatus& u) {
    if (u.unreadable()) {
      ++report.locked_out;
      if (u.reason == crypto::Reason::unknown_key) ++report.missing_key;
      if (report.locked_out_users.size() < max_listed)
        report.locked_out_users.push_back(
            {u.id, u.username, crypto::reason_name(u.reason), u.sysadmin});
    }
    if (admins_must && u.sysadmin && (!u.mfa || u.unreadable()) &&
        report.sysadmins_at_risk.size() < max_listed)
      report.sysadmins_at_risk.push_back(
          {u.id, u.username, u.mfa ? crypto::reason_name(u.reason) : "no_mfa", true});
  });

  // Keys the last migration knew about that this config no longer has: the usual way a
  // values.yaml edit locks users out is a rolling key removed too early.
  std::set<std::string> configured;
  for (int i = 0; i <= static_cast<int>(keys.rolling_count()); ++i)
    configured.insert(keys.fingerprint(i));
  try {
    for (const auto& run : db::list_runs(conn, 50)) {
      if (run.kind != "migrate" || run.target != report.status.target) continue;
      std::vector<std::string> fps = run.rolling_fingerprints;
      fps.push_back(run.active_fingerprint);
      for (const auto& fp : fps)
        if (!fp.empty() && !configured.count(fp)) report.removed_fingerprints.push_back(fp);
      break;
    }
  } catch (const db::DbError& e) {
    // No keymig schema yet (never migrated): nothing to compare with.
    if (e.sqlstate() != "42P01" && e.sqlstate() != "3F000") throw;
  }

  if (report.missing_key > 0)
    report.warnings.push_back(
        std::to_string(report.missing_key) +
        " user(s) have a well-formed secret that no configured key verifies: a key that made "
        "them is missing (was a rolling key removed before `keymig migrate` finished?)");
  if (report.locked_out > report.missing_key)
    report.warnings.push_back(std::to_string(report.locked_out - report.missing_key) +
                              " user(s) have a malformed secret that no key can read");
  for (const auto& fp : report.removed_fingerprints)
    report.warnings.push_back("key " + fp +
                              " used by the last migration of this target is not configured");
  if (admins_must) {
    const char* rule =
        mfa.mandatory ? "userLogin.mfa.mandatory" : "userLogin.mfa.mandatoryForSysAdmins";
    if (report.status.sysadmins_without_mfa > 0)
      report.warnings.push_back(std::string(rule) + " is on and " +
                                std::to_string(report.status.sysadmins_without_mfa) +
                                " sysadmin(s) have no MFA set up");
    if (report.status.sysadmins_unreadable > 0)
      report.warnings.push_back(std::string(rule) + " is on and " +
                                std::to_string(report.status.sysadmins_unreadable) +
                                " sysadmin(s) have an MFA secret no configured key reads");
  }
  for (const auto& col : report.status.missing_sysadmin_columns)
    report.warnings.push_back("sysAdminColumns: column \"" + col + "\" is not in the table");
  return report;
}

std::string format_preflight(const PreflightReport& r) {
  std::ostringstream out;
  const auto& s = r.status;
  out << "database pre-flight (" << s.target << "): " << s.users << " users, " << s.with_mfa
      << " with MFA, " << r.locked_out << " would be locked out\n";
  for (const auto& k : s.by_key)
    out << "  " << k.label << " (" << k.fingerprint << "): " << k.users << " users\n";
  for (const auto& [reason, n] : s.undecryptable)
    out << "  undecryptable (" << reason << "): " << n << " users\n";
  for (const auto& u : r.locked_out_users)
    out << "  locked out: id=" << u.id << (u.username.empty() ? "" : " username=" + u.username)
        << " reason=" << u.reason << (u.sysadmin ? " sysadmin" : "") << "\n";
  if (static_cast<std::int64_t>(r.locked_out_users.size()) < r.locked_out)
    out << "  ... and " << r.locked_out - static_cast<std::int64_t>(r.locked_out_users.size())
        << " more\n";
  for (const auto& u : r.sysadmins_at_risk)
    out << "  sysadmin at risk: id=" << u.id
        << (u.username.empty() ? "" : " username=" + u.username) << " reason=" << u.reason << "\n";
  for (const auto& w : r.warnings) out << "warning: " << w << "\n";
  out << (r.exit_code() == kExitOk ? "pre-flight: nobody would be locked out\n"
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
      {"sysadmins_at_risk", admins},     {"removed_fingerprints", r.removed_fingerprints},
      {"warnings", r.warnings},          {"ok", r.exit_code() == kExitOk}};
  return j.dump();
}

}  // namespace keymig::engine
