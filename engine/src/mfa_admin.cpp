// MFA administration on the engine's one pipeline and row type: `status` and the
// pre-flight stream the target's users through the page source and the status
// transform; reset-mfa resolves its users the same way, then clears them in one
// journaled transaction.

#include "keymig/engine/mfa_admin.hpp"

#include <unistd.h>

#include <chrono>
#include <memory>
#include <set>

#include "command_record.hpp"
#include "connect.hpp"
#include "key_history.hpp"
#include "key_rows.hpp"
#include "keymig/db/acknowledged.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/db/users.hpp"
#include "keymig/error.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "keymig/redact.hpp"
#include "page_source.hpp"
#include "pipeline.hpp"
#include "progress.hpp"
#include "run_plan.hpp"
#include "transform.hpp"

namespace keymig::engine {

using namespace detail;

namespace {

db::UserTable open_user_table(db::Connection& conn, const config::Config& config,
                              db::Access access) {
  const auto& t = config.migration.targets.front();
  db::Table table = db::check_target(conn, target_spec(t));
  db::check_privileges(conn, table, access);
  return db::check_user_table(conn, table, t.sysadmin_columns);
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

// reset-mfa with no keys: who has a secret and the flag, never which key made it.
void unchecked_users(Batch& b) {
  b.users.reserve(b.rows.size());
  for (auto& row : b.rows) {
    UserStatus u;
    u.id = std::move(row.id);
    u.username = std::move(row.username);
    u.sysadmin = row.sysadmin;
    u.stored_flag = row.flag;
    u.mfa = !row.is_null && !row.token.empty();
    u.key_checked = false;
    row.token.wipe();
    b.users.push_back(std::move(u));
  }
}

// Reads the selected users (empty: all) by keyset pages (serial: one connection),
// classifies them in parallel (HMAC only; the ring is immutable), and hands each status
// to `emit` in id order from one thread while the next page is read. No ring: not
// classified (unchecked_users).
void walk_users(db::Connection& conn, const db::UserTable& users, const crypto::KeyRing* keys,
                const db::Selection& selection, std::int64_t page_size, int threads,
                const std::function<void(UserStatus&)>& emit) {
  Options options;
  options.batch_size = std::max<std::int64_t>(1, page_size);
  options.threads = threads;
  options.selection = selection;
  PageSource source(conn, users.table, options);
  source.read_users(users);
  const bool has_flag = users.table.has_flag();
  run_pipeline(
      threads, [&] { return source.next(); },
      [&](Batch& b) {
        if (keys)
          transform(b, *keys, Mode::status, has_flag);
        else
          unchecked_users(b);
      },
      [&](std::unique_ptr<Batch> b) {
        for (auto& u : b->users) emit(u);
      });
}

}  // namespace

std::vector<std::string> selected_not_found(db::Connection& conn, const db::Table& table,
                                            const db::Selection& selection) {
  auto missing = db::missing_selection(conn, table, selection);
  if (selection.empty() || missing.size() < selection.ids.size() + selection.usernames.size())
    return missing;
  std::string list;
  for (std::size_t i = 0; i < missing.size() && i < 10; ++i)
    list += (list.empty() ? "" : ", ") + escape_control(missing[i]);
  if (missing.size() > 10) list += ", ...";
  throw UsageError("no user " + list + " in " + table.label() +
                   ": the selection names nobody there (check the names, or the target table); "
                   "nothing done");
}

StatusReport mfa_status(db::Connection& conn, const config::Config& config,
                        const crypto::KeyRing& keys, const StatusOptions& options,
                        const std::function<void(const UserStatus&)>& on_user) {
  validate_selection(options.selection, true);
  const auto started = std::chrono::steady_clock::now();
  const db::UserTable users = open_user_table(conn, config, db::Access::read);
  StatusReport report = empty_report(users, keys);
  report.not_found = selected_not_found(conn, users.table, options.selection);
  walk_users(conn, users, &keys, options.selection, options.page_size, options.threads,
             [&](const UserStatus& u) {
               report.add(u);
               if (on_user) on_user(u);
             });
  report.seconds = seconds_since(started);
  KEYMIG_LOG(info, "mfa", "status", {"target", report.target}, {"users", report.users},
             {"with_mfa", report.with_mfa}, {"undecryptable", report.undecryptable_total},
             {"wrong_flag", report.wrong_flag}, {"seconds", report.seconds});
  return report;
}

ResetPlan plan_reset_mfa(db::Connection& conn, const config::Config& config,
                         const crypto::KeyRing* keys, const db::Selection& selection,
                         metrics::Metrics* metrics) {
  // Only a refusal is recorded here: the reset itself records its success.
  CommandRecord record(metrics, "reset_mfa", config.migration.targets.front());
  validate_selection(selection, false);
  // write: a role that may not clear the secret hears it before the confirmation.
  const db::UserTable users = open_user_table(conn, config, db::Access::write);
  record.on_target(users.table.label());
  auto missing = db::missing_selection(conn, users.table, selection);
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    throw UsageError("reset-mfa: no user " + list + " in " + users.table.label() +
                     "; nothing changed");
  }
  ResetPlan plan;
  plan.target = users.table.label();
  plan.selection = selection;
  walk_users(conn, users, keys, selection, StatusOptions{}.page_size, 1,
             [&](UserStatus& u) { plan.users.push_back(std::move(u)); });
  record.unfinished();
  return plan;
}

ResetResult reset_mfa(db::Connection& conn, const config::Config& config,
                      const crypto::KeyRing* keys, const ResetPlan& plan,
                      metrics::Metrics* metrics) {
  CommandRecord recorded(metrics, "reset_mfa", config.migration.targets.front());
  if (plan.users.empty()) throw UsageError("reset-mfa: no users selected");
  const db::UserTable users = open_user_table(conn, config, db::Access::write);
  recorded.on_target(users.table.label());
  if (users.table.label() != plan.target)
    throw UsageError("reset-mfa: the target changed since the plan was made");
  db::ensure_schema(conn);

  db::ResetRecord record;
  record.run_id = new_run_id("reset-", 6);
  // Only to tell the run's keys later; a reset without keys records none.
  if (keys) {
    record.active_fingerprint = keys->fingerprint(0);
    record.rolling_fingerprints = rolling_fingerprints(*keys);
  }
  record.selection_json = selection_json(plan.selection);
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
  recorded.succeeded();
  return result;
}

PreflightReport lockout_preflight(db::Connection& conn, const config::Config& config,
                                  const crypto::KeyRing& keys, std::size_t max_listed) {
  PreflightReport report;
  const auto& mfa = config.mfa;
  const bool admins_must = mfa.enabled && (mfa.mandatory || mfa.mandatory_for_sysadmins);
  StatusOptions options;
  options.page_size = config.migration.batch_size > 0 ? config.migration.batch_size * 2 : 5000;
  options.threads = config.migration.threads;
  const std::string target =
      db::check_target(conn, target_spec(config.migration.targets.front())).label();
  const auto acknowledged = db::acknowledged_ids(conn, target);
  report.status = mfa_status(conn, config, keys, options, [&](const UserStatus& u) {
    if (u.unreadable() && acknowledged.count(u.id)) {
      ++report.acknowledged;
    } else if (u.unreadable()) {
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

  // Keys the last migration and scan knew about that this config no longer has: the
  // usual way a values.yaml edit locks users out is a rolling key removed too early.
  const KeyHistory history = read_key_history(conn, report.status.target, keys);
  if (history.swapped) report.swapped_keys = swapped_message(*history.swapped, keys);

  if (report.missing_key > 0)
    report.warnings.push_back(
        std::to_string(report.missing_key) +
        " user(s) have a well-formed secret that no configured key verifies: a key that made "
        "them is missing (was a rolling key removed before `keymig migrate` finished?)");
  if (report.locked_out > report.missing_key)
    report.warnings.push_back(std::to_string(report.locked_out - report.missing_key) +
                              " user(s) have a malformed secret that no key can read");
  for (const auto& m : history.missing) {
    report.removed_fingerprints.push_back(m.fingerprint);
    report.warnings.push_back("key " + m.fingerprint + " is not configured (" + m.seen + ")");
  }
  if (report.acknowledged > 0)
    report.warnings.push_back(std::to_string(report.acknowledged) +
                              " user(s) with an unreadable secret are acknowledged "
                              "(`keymig acknowledge --list`): not counted as locked out");
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

}  // namespace keymig::engine
