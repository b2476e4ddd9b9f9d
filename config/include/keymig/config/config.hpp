#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "keymig/error.hpp"
#include "keymig/locked.hpp"
#include "keymig/secure.hpp"

namespace keymig::config {

/// A YAML, type or validation error. what() reads "FILE:LINE: KEY: problem"; never a key:
/// a message that quotes a value ("'X' is not a duration") has every key- or token-shaped
/// word of it redacted (keymig::scrub_tokens), since a key pasted into the wrong setting is
/// just what such a message would repeat.
class ConfigError : public keymig::UsageError {
 public:
  explicit ConfigError(const std::string& what);
};

/// Where a setting came from, for errors and `check-config`.
struct Origin {
  std::string file;  // config file, or "env" for environment variables
  int line = 0;      // 1-based; 0 when unknown (env, defaults)
  std::string key;   // dotted path, e.g. "secretStore.activeKey", or the variable name
  [[nodiscard]] std::string describe() const;  // "values.yaml:12 secretStore.activeKey"
};

/// A key as configured: its text (secret, kept in locked memory for the config's life)
/// and where it came from.
struct KeySetting {
  LockedSecret text;
  Origin origin;
  std::string key_file;  // set when it came from activeKeyFile, rollingKeyFile(s)
};

struct MfaPolicy {
  bool enabled = false;
  bool mandatory = false;
  bool mandatory_for_sysadmins = false;
  bool remember_me_enabled = false;
  int remember_me_days = 30;
  bool remember_me_disabled_for_sysadmins = false;
};

/// `onlyWhere: {column: is_encrypted, equals: true}`: the rows a target holds Fernet data
/// in. Rows whose column is anything else (NULL included) are not read, counted or written.
struct RowFilter {
  std::string column;  // empty: every row
  bool equals = true;
  [[nodiscard]] bool empty() const noexcept { return column.empty(); }
};

/// One encrypted column of one table (keyMigration.targets[], or the single
/// keyMigration.target).
struct Target {
  // [A-Za-z0-9_.-]{1,63}, unique in the config; default: the table's name, or
  // "table.secretColumn" when another target names the same table.
  std::string name;
  std::string table = "users";  // may be schema-qualified: "public.users"
  std::string id_column = "id";
  std::string secret_column = "mfa_secret";
  std::string flag_column = "mfa_fernet_active";  // empty: no flag column
  std::string username_column = "username";       // empty: none
  std::vector<std::string> sysadmin_columns = {"is_staff", "is_superuser"};
  RowFilter only_where;
};

/// Target names: what `--target`, run ids ("RUN/name") and reports use.
inline constexpr std::size_t kMaxTargetNameLength = 63;
/// 1 to kMaxTargetNameLength of letters, digits, '_', '.' and '-'.
[[nodiscard]] bool valid_target_name(const std::string& name);

struct MetricsSettings {
  std::string listen = "127.0.0.1:9464";
  std::string push_gateway;  // URL; empty: no push
  std::string textfile;      // path; empty: none
};

/// keyMigration.throttle: what makes migrate wait before a batch (docs/DESIGN.md section 2).
struct ThrottleSettings {
  std::chrono::milliseconds max_replica_lag{0};  // 0: standbys not watched
  std::string flag_file;                         // empty: none; while it exists, wait
  int max_active_sessions = 0;                   // other active backends; 0: not watched
  int critical_active_sessions = 0;              // stop the run (resumable) at this many; 0: never
  // With no rate and no server limit: back off when a batch's commit takes far longer
  // than its running median (engine::AdaptiveBackoff), or the canary's commits far
  // longer than before the run (engine::CommitCanary).
  bool adaptive = true;
};

/// keyMigration.control: serve's POST /control/* routes, off unless token_file is set.
struct ControlSettings {
  std::string token_file;  // as resolved (relative to the config file naming it); empty: off
  // The bearer token, read at load (and on SIGHUP); shared so that Migration stays copyable.
  std::shared_ptr<const SecretString> token;
};

struct Schedule {
  std::optional<std::chrono::seconds> every;  // "6h", "30m", "1d"
  std::optional<int> at_minute_of_day;        // "02:00" UTC -> 120
};

/// The bounds of the numeric settings, for values.yaml and the command line alike.
inline constexpr int kMaxThreads = 1024;
inline constexpr std::int64_t kMaxBatchSize = 1'000'000;
/// Far above what one process can write; a throttle beyond it is no throttle.
inline constexpr std::int64_t kMaxRowsPerSecond = 1'000'000'000;

/// The `keyMigration:` section, with defaults.
struct Migration {
  std::string dsn;  // empty: libpq's PG* environment variables
  // keyMigration.targets in order, or the single keyMigration.target: never empty. The
  // first is the one MFA administration (mfa status, reset-mfa) works on.
  std::vector<Target> targets{Target{}};
  std::int64_t batch_size = 2000;
  int threads = 0;                       // 0: all cores
  std::int64_t max_rows_per_second = 0;  // 0: unthrottled
  bool journal = true;
  // Journals of finished runs idle for longer are deleted by migrate and serve; nullopt:
  // kept until finalize or `journal purge`.
  std::optional<std::chrono::seconds> journal_retention;
  std::chrono::milliseconds lock_timeout{2000};
  std::chrono::milliseconds statement_timeout{60000};
  MetricsSettings metrics;
  ThrottleSettings throttle;
  ControlSettings control;
  Schedule schedule;
};

struct Config {
  std::vector<std::string> files;
  MfaPolicy mfa;
  std::optional<KeySetting> active_key;
  // In order: rollingKey, rollingKeyFile, rollingKeys, rollingKeyFiles (an optional key
  // file that does not exist adds none, and a warning).
  std::vector<KeySetting> rolling_keys;
  Migration migration;
  /// Non-fatal findings: a key file, or a values file holding keys, readable by group or
  /// others; an optional key file that is absent.
  std::vector<std::string> warnings;
};

/// Looks up an environment variable; injectable for tests.
using Getenv = std::function<std::optional<std::string>(const char* name)>;
[[nodiscard]] Getenv process_env();

/// Loads and merges the files in order (later wins), then applies KEYMIG_ACTIVE_KEY and
/// KEYMIG_ROLLING_KEYS. Checks types, ranges, unknown keys and duplicate keys in the
/// sections keymig reads (`keyMigration`, `secretStore`, `userLogin.mfa`; the rest of a
/// Helm values file is the chart's), and the shape of metrics.listen and pushGateway.
/// Does not parse keys as Fernet keys (engine does, with crypto). Throws ConfigError.
/// Checks of settings whose one parser lives in another module: the listen address in
/// http, the Pushgateway URL in metrics (app passes them, see app/command.cpp). Each
/// returns "" for a good value, else what is wrong without quoting the value (a URL may
/// hold a password); the loader adds the file, line and key. An unset check accepts.
struct SettingChecks {
  std::function<std::string(const std::string&)> listen_address;
  std::function<std::string(const std::string&)> push_gateway;
};

/// The targets named (config order kept); all of them when `names` is empty. Throws
/// ConfigError naming the configured targets for a name that is not one of them.
[[nodiscard]] std::vector<Target> select_targets(const std::vector<Target>& targets,
                                                 const std::vector<std::string>& names);

[[nodiscard]] Config load(const std::vector<std::string>& paths, const Getenv& env = process_env(),
                          const SettingChecks& checks = {});

/// "6h" -> 21600 s. Units s, m, h, d. Throws ConfigError (origin in the message).
[[nodiscard]] std::chrono::seconds parse_duration(const std::string& text, const Origin& origin);
/// "2s" -> 2000 ms, "500ms", "1m30s"; "0" is zero. Throws ConfigError.
[[nodiscard]] std::chrono::milliseconds parse_duration_ms(const std::string& text,
                                                          const Origin& origin);
/// "02:00" -> 120 (minute of the day, UTC). Throws ConfigError.
[[nodiscard]] int parse_time_of_day(const std::string& text, const Origin& origin);

}  // namespace keymig::config
