#pragma once

// MFA administration: the per-user status an admin page shows, the journaled break-glass
// that clears some users' MFA, and the lockout pre-flight of a config before deployment.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keymig/config/config.hpp"
#include "keymig/crypto/fernet.hpp"
#include "keymig/db/connection.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::engine {

/// Refuses what could select more users than the operator named: an empty selection
/// (unless allow_empty), empty items, and pattern characters (% * ?). Throws UsageError.
void validate_selection(const db::Selection& selection, bool allow_empty);

/// The selected ids and usernames that match no row of `table`, in the order given. Throws
/// UsageError (exit 2) when none matches: a selection of only unknown users selects
/// nobody, which is a wrong name or a wrong table, not a run over zero rows. An empty
/// selection (the whole table) returns nothing. Throws db::DbError.
[[nodiscard]] std::vector<std::string> selected_not_found(db::Connection& conn,
                                                          const db::Table& table,
                                                          const db::Selection& selection);

/// One user as the admin page shows it. Carries no secret.
struct UserStatus {
  std::string id;
  std::string username;
  bool mfa = false;                            // a secret is stored (not NULL, not '')
  int key_index = -1;                          // 0 active, i + 1 rolling[i], -1 none
  crypto::Reason reason = crypto::Reason::ok;  // why no key reads it (key_index -1, mfa)
  bool fernet_active = false;                  // the secret is under the active key
  std::optional<bool> stored_flag;             // the "MFA fernet active" column; nullopt: none/NULL
  bool flag_wrong = false;                     // a flag column exists and disagrees
  bool sysadmin = false;                       // any sysAdminColumns true
  bool double_encrypted = false;               // readable, and the plaintext is itself a token
  bool key_checked = true;  // false: no keys were given (reset-mfa without them), key unknown
  [[nodiscard]] bool unreadable() const noexcept { return mfa && key_checked && key_index < 0; }
};

/// Classifies one row's token (HMAC, and one AES block for double encryption) into a status.
/// `has_flag`: whether the target has a flag column (a NULL flag then counts as false).
/// Thread-safe.
[[nodiscard]] UserStatus classify_user(const crypto::KeyRing& keys, std::string id,
                                       std::string username, std::string_view token, bool is_null,
                                       std::optional<bool> stored_flag, bool has_flag,
                                       bool sysadmin);

/// Users under one configured key.
struct KeyCount {
  int key_index = 0;
  std::string label;        // "active", "rolling_0", ...
  std::string fingerprint;  // safe to print
  std::int64_t users = 0;
};

/// At most this many ids are listed per class in a StatusReport (all are counted).
inline constexpr std::size_t kMaxListedUsers = 100000;

/// What `keymig status` reports. Counts only: no secret, no token.
struct StatusReport {
  std::string target;  // schema.table.column
  std::int64_t users = 0;
  std::int64_t with_mfa = 0;
  std::int64_t without_mfa = 0;
  std::vector<KeyCount> by_key;                       // every configured key, in ring order
  std::map<std::string, std::int64_t> undecryptable;  // reason name -> users
  std::int64_t undecryptable_total = 0;
  std::int64_t wrong_flag = 0;
  std::int64_t sysadmins = 0;
  std::int64_t sysadmins_without_mfa = 0;
  std::int64_t sysadmins_unreadable = 0;
  std::int64_t double_encrypted = 0;              // readable users whose plaintext is a token
  std::vector<std::string> double_encrypted_ids;  // the first kMaxListedUsers
  bool has_flag_column = false;
  bool has_username_column = false;
  std::vector<std::string> sysadmin_columns;          // used
  std::vector<std::string> missing_sysadmin_columns;  // configured, not in the table
  std::vector<std::string> not_found;                 // selected ids/usernames without a row
  double seconds = 0;
  /// One JSON object: `status --json` and the pre-flight's "status" share it.
  [[nodiscard]] std::string to_json() const;
  /// Adds one user to the counts.
  void add(const UserStatus& user);
};

struct StatusOptions {
  db::Selection selection;  // empty: every user
  std::int64_t page_size = 5000;
  int threads = 0;  // 0: all cores
};

/// Streams the target by keyset pages, classifies every token in parallel (HMAC only),
/// and calls `on_user` (may be empty) for each user in id order from one thread.
/// Throws db::DbError, db::TargetError (exit 2), UsageError for a bad selection.
[[nodiscard]] StatusReport mfa_status(db::Connection& conn, const config::Config& config,
                                      const crypto::KeyRing& keys, const StatusOptions& options,
                                      const std::function<void(const UserStatus&)>& on_user = {});

/// The users a reset would clear, resolved and checked, for the confirmation prompt.
struct ResetPlan {
  std::string target;
  db::Selection selection;
  std::vector<UserStatus> users;  // in id order
};

/// Resolves the selection. `keys` may be null: clearing a secret needs no key, so a
/// break-glass with no active key configured (or none at all) still works; the plan then
/// says who has a secret, not which key made it (UserStatus::key_checked false).
/// Throws UsageError (exit 2) for an empty selection, a pattern,
/// or any id/username that matches no user (all or nothing), db::DbError.
/// With `metrics`, a refusal is recorded as a failed reset_mfa
/// (metrics::Metrics::set_last_success has the rule).
[[nodiscard]] ResetPlan plan_reset_mfa(db::Connection& conn, const config::Config& config,
                                       const crypto::KeyRing* keys, const db::Selection& selection,
                                       metrics::Metrics* metrics = nullptr);

struct ResetResult {
  std::string run_id;
  std::string target;
  std::vector<UserStatus> users;  // as they were before the reset
};

/// Clears secret and flag of exactly the plan's users in one transaction, journaled as a
/// run of kind reset_mfa that `keymig rollback --run ID` undoes; `keys` (may be null) only
/// names the configured keys' fingerprints in keymig.runs. Throws UsageError when a
/// planned user vanished meanwhile (nothing changed), db::DbError. With `metrics`, records
/// the reset_mfa run's success or failure.
[[nodiscard]] ResetResult reset_mfa(db::Connection& conn, const config::Config& config,
                                    const crypto::KeyRing* keys, const ResetPlan& plan,
                                    metrics::Metrics* metrics = nullptr);

/// A user the pre-flight found (no secret in it).
struct UserRef {
  std::string id;
  std::string username;
  std::string reason;  // reason name, or "no_mfa"
  bool sysadmin = false;
};

/// The lockout pre-flight of a config against the live table (`check-config --with-db`).
struct PreflightReport {
  StatusReport status;
  std::int64_t locked_out = 0;    // users with a secret no configured key reads, not acknowledged
  std::int64_t missing_key = 0;   // of those: well-formed, so a key that made them is missing
  std::int64_t acknowledged = 0;  // unreadable users whose rows are in keymig.acknowledged
  std::vector<UserRef> locked_out_users;          // the first max_listed, in id order
  std::vector<UserRef> sysadmins_at_risk;         // MFA mandatory for them: no MFA, or unreadable
  std::vector<std::string> removed_fingerprints;  // keys of the last run no longer configured
  // Not empty: the active key is one an earlier run rotated away from (the refusal).
  std::string swapped_keys;
  std::vector<std::string> warnings;
  /// kExitUsage (2) for swapped keys; else kExitNeedsRolling (4) when deploying the config
  /// would lock anyone out whose row is not acknowledged; else kExitOk.
  [[nodiscard]] int exit_code() const noexcept;
};

/// Reads every user (as mfa_status) and finds who this config would lock out (users whose
/// rows are acknowledged are counted apart), and whether an earlier run rotated away
/// from the configured active key. Throws db::DbError, db::TargetError.
[[nodiscard]] PreflightReport lockout_preflight(db::Connection& conn, const config::Config& config,
                                                const crypto::KeyRing& keys,
                                                std::size_t max_listed = 1000);

/// Human-readable lines of a pre-flight, for check-config. No secrets in them.
[[nodiscard]] std::string format_preflight(const PreflightReport& report);
/// The pre-flight as one JSON object (text), for check-config --json.
[[nodiscard]] std::string preflight_json(const PreflightReport& report);

}  // namespace keymig::engine
