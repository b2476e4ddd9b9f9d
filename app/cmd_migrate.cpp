// scan, migrate, verify, rollback, finalize and `journal purge`: the rotation commands.
// They parse flags, call the engine (keymig/engine/engine.hpp) and print its reports.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/targets.hpp"
#include "keymig/error.hpp"
#include "keymig/http/server.hpp"
#include "keymig/log.hpp"
#include "keymig/metrics/metrics.hpp"

namespace keymig::app {
namespace {

// Where a one-shot run's metrics go: flags win over keyMigration.metrics. The HTTP
// endpoint is opt-in for one-shot commands (the config's `listen` is serve's), so that a
// cron job never fails because the port is taken.
struct MetricsFlags {
  std::string listen;
  std::string push_gateway;
  std::string textfile;
};

// Flags shared by the commands that walk the table. -1: not given (config decides).
struct PassFlags {
  int threads = -1;
  std::int64_t batch_size = -1;
  std::int64_t max_rows_per_second = -1;
  std::vector<std::string> ids;
  std::vector<std::string> usernames;
  std::vector<std::string> targets;  // --target: names; empty: every configured target
  std::string run_id;
  bool dry_run = false;
  bool force = false;
  std::string older_than;
  int progress_interval = 30;  // seconds between progress log lines without a terminal
  MetricsFlags metrics;
};

void add_batch_size_flag(CLI::App& sub, PassFlags& f, const std::string& what) {
  sub.add_option("--batch-size", f.batch_size, what + ", 1-1000000")
      ->check(CLI::Range(std::int64_t{1}, config::kMaxBatchSize));
}

void add_pass_flags(CLI::App& sub, PassFlags& f) {
  // The bounds of values.yaml's threads, batchSize and maxRowsPerSecond: a flag may not
  // ask for what the file may not (2e9 threads is memory until bad_alloc).
  sub.add_option("--threads", f.threads, "pipeline threads, 0-1024 (0: all cores)")
      ->check(CLI::Range(0, config::kMaxThreads));
  add_batch_size_flag(sub, f, "rows per page and per write transaction");
  sub.add_option("--max-rows-per-second", f.max_rows_per_second,
                 "throttle: rows per second for this process, all lanes together, up to 10^9 "
                 "(0: unthrottled)")
      ->check(CLI::Range(std::int64_t{0}, config::kMaxRowsPerSecond));
  sub.add_option("--progress-interval", f.progress_interval,
                 "when stderr is not a terminal, log a progress line this often, in seconds "
                 "(0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400))
      ->type_name("SECONDS");
}

void add_target_flag(CLI::App& sub, PassFlags& f) {
  sub.add_option("--target", f.targets,
                 "only this configured target (its name; repeat for several); default: every "
                 "target in keyMigration.targets")
      ->type_name("NAME");
}

void add_selection_flags(CLI::App& sub, PassFlags& f) {
  add_list_option(sub, "--ids", f.ids, "only these ids", "ID,...");
  add_list_option(sub, "--usernames", f.usernames, "only these users", "NAME,...");
}

engine::Options make_options(const Common& common, const config::Config& config,
                             const PassFlags& f) {
  engine::Options o = engine::options_from_config(config);
  engine::select_targets(o, f.targets);
  o.connect.dsn = effective_dsn(common, config);
  if (f.threads >= 0) o.threads = f.threads;
  if (f.batch_size > 0) o.batch_size = f.batch_size;
  if (f.max_rows_per_second >= 0) o.max_rows_per_second = f.max_rows_per_second;
  o.selection.ids = f.ids;
  o.selection.usernames = f.usernames;
  if (!o.selection.ids.empty() && !o.selection.usernames.empty())
    throw UsageError("--ids and --usernames: give one or the other");
  o.dry_run = f.dry_run;
  o.force = f.force;
  o.run_id = f.run_id;
  return o;
}

// SIGINT/SIGTERM drain the pass: the batches in flight commit, the run stays resumable.
// A second signal kills at once (SA_RESETHAND).
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// On a terminal, a progress line on stderr redrawn in place, ended with its pass so that
// the next log line starts on a line of its own. Elsewhere (a Job's log, a file) a
// redrawn line is noise: a `progress` log line every `interval_seconds` instead.
void attach_progress(engine::Options& o, int interval_seconds) {
  if (::isatty(STDERR_FILENO) != 1) {
    o.progress_log_every = std::chrono::seconds(interval_seconds);
    return;
  }
  o.progress = [](const engine::Progress& p) {
    char eta[32] = "?";
    if (p.eta_seconds >= 0) std::snprintf(eta, sizeof eta, "%.0fs", p.eta_seconds);
    // \033[K clears what a longer status line left behind.
    std::fprintf(stderr, "\r%lld/%lld rows  %.0f rows/s  ETA %s%s%s\033[K%s",
                 static_cast<long long>(p.rows_done), static_cast<long long>(p.rows_total),
                 p.rows_per_second, eta, p.status.empty() ? "" : "  ", p.status.c_str(),
                 p.last ? "\n" : "");
    std::fflush(stderr);
  };
}

void add_metrics_flags(CLI::App& sub, MetricsFlags& f) {
  sub.add_option("--metrics-listen", f.listen,
                 "serve /metrics on this address while the command runs (e.g. 127.0.0.1:9464)")
      ->type_name("HOST:PORT");
  sub.add_option("--push-gateway", f.push_gateway,
                 "push the metrics to this Pushgateway at the end (job keymig, grouped by target "
                 "and command); default keyMigration.metrics.pushGateway")
      ->type_name("URL");
  sub.add_option("--metrics-textfile", f.textfile,
                 "write the metrics for node_exporter's textfile collector at the end (atomic); "
                 "default keyMigration.metrics.textfile")
      ->type_name("PATH");
}

// Exports on every way out, failures included: an alert on "last run failed" needs the
// failed run's push as much as a dashboard needs the successful one. The engine records
// the run's result and its target; this only exposes them (one Pushgateway group per
// target and command, whichever way the run ended).
class OneShotMetrics {
 public:
  OneShotMetrics(const config::Config& config, const MetricsFlags& flags)
      : push_gateway_(flags.push_gateway.empty() ? config.migration.metrics.push_gateway
                                                 : flags.push_gateway),
        textfile_(flags.textfile.empty() ? config.migration.metrics.textfile : flags.textfile) {
    // The config's URL was checked when it loaded; a flag's is checked here, before the
    // run, since at the end a bad URL could only be a warning after the work was done.
    if (!flags.push_gateway.empty()) {
      if (auto problem = metrics::push_gateway_problem(flags.push_gateway); !problem.empty())
        throw UsageError("--push-gateway: " + problem);
    }
    if (flags.listen.empty() && push_gateway_.empty() && textfile_.empty()) return;
    metrics_ = std::make_unique<metrics::Metrics>();
    if (!flags.listen.empty()) {
      http_ =
          std::make_unique<http::HttpServerThread>(flags.listen, http::metrics_handler(*metrics_));
      http_->start();
      const auto addr = http::parse_listen_address(flags.listen);
      std::string host = addr.host.empty() || addr.host == "0.0.0.0" ? "127.0.0.1" : addr.host;
      if (host.find(':') != std::string::npos) host = "[" + host + "]";
      KEYMIG_LOG(info, "app", "metrics_listening",
                 {"url", "http://" + host + ":" + std::to_string(http_->port()) + "/metrics"});
    }
  }
  OneShotMetrics(const OneShotMetrics&) = delete;
  OneShotMetrics& operator=(const OneShotMetrics&) = delete;
  ~OneShotMetrics() {
    if (!published_) publish();
  }

  [[nodiscard]] metrics::Metrics* get() const { return metrics_.get(); }

  /// Writes the textfile and pushes what the engine recorded.
  void publish() noexcept {
    published_ = true;
    if (!metrics_) return;
    try {
      if (!textfile_.empty()) metrics_->write_textfile(textfile_);
      // One group per target the command worked on (several with keyMigration.targets).
      if (!push_gateway_.empty()) {
        const auto targets = metrics_->targets();
        if (targets.empty()) metrics_->push(push_gateway_);  // names why it cannot push
        for (const auto& t : targets) metrics_->push(push_gateway_, t);
      }
    } catch (const std::exception& e) {
      KEYMIG_LOG(warn, "app", "metrics_export_failed", {"error", e.what()});
    }
    if (http_) http_->stop();
  }

 private:
  std::string push_gateway_;
  std::string textfile_;
  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<http::HttpServerThread> http_;
  bool published_ = false;
};

void print(const Common& common, const std::string& json, const std::string& text) {
  std::cout << (common.json ? json : text) << std::endl;
}

// A terminal summary names the first few; --json carries every id the report kept.
std::string list_rows(const std::vector<engine::UndecryptableRow>& rows, std::int64_t total) {
  constexpr std::size_t kShown = 10;
  std::ostringstream out;
  std::size_t shown = 0;
  for (const auto& r : rows) {
    if (shown++ == kShown) break;
    out << "\n  id " << r.id << ": " << r.reason << (r.acknowledged ? " (acknowledged)" : "");
  }
  const auto listed = static_cast<std::int64_t>(std::min(rows.size(), kShown));
  if (listed < total)
    out << "\n  ... (" << total - listed << " more; --json lists up to " << engine::kMaxListedRows
        << ")";
  return out.str();
}

std::string list_ids(const char* title, const std::vector<std::string>& ids, std::int64_t total) {
  if (total == 0) return {};
  std::ostringstream out;
  out << "\n" << title << ":";
  std::size_t shown = 0;
  for (const auto& id : ids) {
    if (++shown > 20) break;
    out << " " << id;
  }
  if (total > 20) out << " ... (" << total << " in all)";
  return out.str();
}

template <class Report>
const std::string& label_of(const Report& r) {
  return r.target;
}
const std::string& label_of(const engine::FinalizeReport& r) {
  return r.verify.target;
}

// With several targets, a line per target after the totals.
template <class Report, class Line>
std::string per_target(const engine::Across<Report>& all, Line line) {
  if (all.each.size() < 2) return {};
  std::ostringstream out;
  out << "\nper target:";
  for (std::size_t i = 0; i < all.each.size(); ++i)
    out << "\n  " << all.names[i] << " (" << label_of(all.each[i]) << "): " << line(all.each[i]);
  return out.str();
}

std::string verify_line(const engine::VerifyReport& t) {
  return std::to_string(t.rows_scanned) + " rows, ok " + std::to_string(t.ok) +
         ", needs a rolling key " + std::to_string(t.needs_rolling) + ", undecryptable " +
         std::to_string(t.undecryptable) +
         (t.run_id.empty() ? std::string()
                           : ", journal " + std::to_string(t.journal_checked) + " checked, " +
                                 std::to_string(t.journal_failed) + " failed");
}

// --- the passes over the table: scan, migrate, verify -------------------------------------

void add_walk_flags(CLI::App& sub, Common& common, PassFlags& f) {
  add_config_flags(sub, common);
  add_db_flags(sub, common);
  add_output_flags(sub, common);
  add_pass_flags(sub, f);
  add_target_flag(sub, f);
  add_metrics_flags(sub, f.metrics);
}

// What a pass needs before it starts: config, keys, engine options with progress and
// metrics attached. Members in construction order.
struct Walk {
  Walk(const Common& common, const PassFlags& f)
      : config(load_config(common)),
        keys(load_keyring(config)),
        options(make_options(common, config, f)),
        metrics(config, f.metrics) {
    options.metrics = metrics.get();
    attach_progress(options, f.progress_interval);
  }
  /// After the engine returned: publishes the metrics.
  void done() { metrics.publish(); }

  config::Config config;
  crypto::KeyRing keys;
  engine::Options options;
  OneShotMetrics metrics;
};

// --- scan -------------------------------------------------------------------------------

std::function<int()> setup_scan(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  add_walk_flags(sub, common, *f);
  add_selection_flags(sub, *f);
  return [f, &common] {
    Walk w(common, *f);
    const auto all = engine::scan_targets(w.keys, w.options);
    const auto& r = all.total;
    w.done();
    std::ostringstream text;
    text << "scan of " << r.target << ": " << r.rows_scanned << " rows in " << r.seconds << " s";
    for (const auto& k : r.by_key)
      text << "\n  " << k.key << " (" << k.fingerprint << "): " << k.rows;
    text << "\n  empty: " << r.empty << "\n  undecryptable: " << r.undecryptable;
    if (r.acknowledged > 0) text << " (" << r.acknowledged << " acknowledged)";
    for (const auto& [reason, n] : r.undecryptable_by_reason)
      text << "\n    " << reason << ": " << n;
    text << "\n  flag not true on active rows: " << r.flag_wrong;
    text << "\n  double-encrypted (the plaintext is itself a token): " << r.double_encrypted;
    text << list_ids("double-encrypted rows", r.double_encrypted_rows, r.double_encrypted);
    if (r.undecryptable > 0)
      text << "\nundecryptable rows:" << list_rows(r.undecryptable_rows, r.undecryptable);
    for (const auto& w : r.warnings) text << "\nwarning: " << w;
    text << per_target(all, [](const engine::ScanReport& t) {
      return std::to_string(t.rows_scanned) + " rows, active " + std::to_string(t.active) +
             ", rolling " + std::to_string(t.rolling) + ", empty " + std::to_string(t.empty) +
             ", undecryptable " + std::to_string(t.undecryptable);
    });
    print(common, all.to_json(), text.str());
    return all.exit_code();
  };
}

// --- migrate ----------------------------------------------------------------------------

std::function<int()> setup_migrate(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  add_walk_flags(sub, common, *f);
  add_selection_flags(sub, *f);
  sub.add_flag("--dry-run", f->dry_run, "count what would change; write nothing");
  sub.add_flag("--force", f->force,
               "write even when the pre-flight refuses (the active key is one an earlier run "
               "rotated away from, or more rows would stay undecryptable than the last scan "
               "found)");
  sub.add_option("--run-id", f->run_id,
                 "resume this run, or join it as another worker (created if new)")
      ->type_name("ID");
  return [f, &common] {
    Walk w(common, *f);
    w.options.stop = &g_stop;
    install_stop_handlers();
    const auto all = engine::migrate_targets(w.keys, w.options);
    const auto& r = all.total;
    w.done();
    std::ostringstream text;
    if (r.dry_run) {
      text << "dry run on " << r.target << " (nothing written)";
    } else {
      text << "run " << r.run_id << (r.resumed ? " (resumed)" : "") << " on " << r.target << ": "
           << r.state
           << (r.stopped ? " (stopped" + (r.stopped_by.empty() ? "" : " by " + r.stopped_by) +
                               "; run `keymig migrate` again to resume)"
                         : std::string());
    }
    text << "\n  rows " << r.rows_scanned << ", " << (r.dry_run ? "would rotate " : "rotated ")
         << r.rotated << ", already active " << r.already_active << " (flag "
         << (r.dry_run ? "to fix " : "fixed ") << r.flag_fixed << "), empty " << r.empty
         << ", undecryptable " << r.undecryptable;
    if (r.acknowledged > 0) text << " (" << r.acknowledged << " acknowledged)";
    text << ", conflicts " << r.conflicts << " in " << r.seconds << " s";
    if (r.preflight)
      for (const auto& w : r.preflight->warnings) text << "\nwarning: " << w;
    if (!r.not_found.empty()) {
      text << "\n  not found:";
      for (const auto& v : r.not_found) text << " " << v;
    }
    if (r.undecryptable > 0)
      text << "\nundecryptable rows (left unchanged):"
           << list_rows(r.undecryptable_rows, r.undecryptable);
    if (r.rejected > 0)
      text << "\nrows the database refused (they keep their old token; fix the cause, then run "
              "keymig migrate again):"
           << list_rows(r.rejected_rows, r.rejected);
    if (r.rewritten > 0) {
      text << "\nrows stored differently than written (a BEFORE UPDATE trigger?): " << r.rewritten
           << "; their journal rows are kept: investigate, or roll back with "
           << "`keymig rollback --run " << r.run_id << "`\n  ids:";
      for (std::size_t i = 0; i < r.rewritten_rows.size() && i < 10; ++i)
        text << " " << r.rewritten_rows[i];
    }
    text << per_target(all, [](const engine::MigrateReport& t) {
      return (t.run_id.empty() ? std::string() : "run " + t.run_id + ", ") + t.state + ": rows " +
             std::to_string(t.rows_scanned) + ", rotated " + std::to_string(t.rotated) +
             ", undecryptable " + std::to_string(t.undecryptable);
    });
    print(common, all.to_json(), text.str());
    return all.exit_code();
  };
}

// --- verify -----------------------------------------------------------------------------

std::string verify_text(const engine::VerifyReport& r) {
  std::ostringstream text;
  text << "verify of " << r.target << ": " << r.rows_scanned << " rows in " << r.seconds << " s"
       << "\n  ok (active key alone): " << r.ok << "\n  needs a rolling key: " << r.needs_rolling
       << "\n  undecryptable: " << r.undecryptable
       << (r.acknowledged > 0 ? " (" + std::to_string(r.acknowledged) + " acknowledged)" : "")
       << "\n  empty: " << r.empty << "\n  flag mismatched: " << r.mismatched
       << "\n  double-encrypted (the plaintext is itself a token): " << r.double_encrypted;
  if (!r.run_id.empty())
    text << "\n  journal of run " << r.run_id << ": " << r.journal_checked << " checked, "
         << r.journal_failed << " failed, " << r.journal_cleared << " cleared";
  text << list_ids("rows needing a rolling key", r.needs_rolling_rows, r.needs_rolling);
  text << list_ids("journal check failed for", r.journal_failed_rows, r.journal_failed);
  text << list_ids("double-encrypted rows", r.double_encrypted_rows, r.double_encrypted);
  if (r.undecryptable > 0)
    text << "\nundecryptable rows:" << list_rows(r.undecryptable_rows, r.undecryptable);
  return text.str();
}

std::function<int()> setup_verify(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  add_walk_flags(sub, common, *f);
  sub.add_option("--run", f->run_id, "also check this run's journal: old and new plaintexts equal")
      ->type_name("ID");
  return [f, &common] {
    Walk w(common, *f);
    const auto all = engine::verify_targets(w.keys, w.options, f->run_id);
    w.done();
    const auto& r = all.total;
    std::string retire;
    if (r.rolling_key_retirable)
      retire = "\nno row of any target needs a rolling key: the rolling key can be retired";
    else if (!r.targets_needing_rolling.empty()) {
      retire = "\nthe rolling key is still needed by:";
      for (const auto& n : r.targets_needing_rolling) retire += " " + n;
    } else if (!w.options.unselected_targets.empty()) {
      retire = "\nnot checked (--target left them out):";
      for (const auto& n : w.options.unselected_targets) retire += " " + n;
    }
    print(common, all.to_json(), verify_text(r) + retire + per_target(all, verify_line));
    return all.exit_code();
  };
}

// --- rollback ---------------------------------------------------------------------------

std::function<int()> setup_rollback(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  add_config_flags(sub, common);
  add_db_flags(sub, common);
  add_output_flags(sub, common);
  add_batch_size_flag(sub, *f, "journal rows per transaction");
  add_target_flag(sub, *f);
  sub.add_option("--run", f->run_id, "the run to undo")->type_name("ID")->required();
  add_metrics_flags(sub, f->metrics);
  return [f, &common] {
    auto config = load_config(common);
    auto options = make_options(common, config, *f);
    options.run_id.clear();
    options.stop = &g_stop;
    OneShotMetrics metrics(config, f->metrics);
    options.metrics = metrics.get();
    install_stop_handlers();
    const auto all = engine::rollback_targets(options, f->run_id);
    const auto& r = all.total;
    metrics.publish();
    std::ostringstream text;
    text << "rollback of run " << r.run_id << " on " << r.target << ": " << r.state
         << "\n  journal rows " << r.journal_rows << ", restored " << r.restored << ", left "
         << r.left << " (changed since the run: not touched)";
    text << list_ids("left", r.left_rows, r.left);
    text << per_target(all, [](const engine::RollbackReport& t) {
      return "run " + t.run_id + " " + t.state + ": restored " + std::to_string(t.restored) +
             ", left " + std::to_string(t.left);
    });
    print(common, all.to_json(), text.str());
    return static_cast<int>(kExitOk);
  };
}

// --- finalize ---------------------------------------------------------------------------

std::function<int()> setup_finalize(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  add_config_flags(sub, common);
  add_db_flags(sub, common);
  add_output_flags(sub, common);
  add_pass_flags(sub, *f);
  add_target_flag(sub, *f);
  sub.add_option("--run", f->run_id, "the run to finalize")->type_name("ID")->required();
  add_metrics_flags(sub, f->metrics);
  return [f, &common] {
    auto config = load_config(common);
    auto keys = load_keyring(config);
    auto options = make_options(common, config, *f);
    options.run_id.clear();
    attach_progress(options, f->progress_interval);
    OneShotMetrics metrics(config, f->metrics);
    options.metrics = metrics.get();
    const auto all = engine::finalize_targets(keys, options, f->run_id);
    const auto& r = all.total;
    metrics.publish();
    std::ostringstream text;
    text << verify_text(r.verify) << "\n";
    if (r.finalized)
      text << "run " << r.run_id << " finalized: journal deleted (" << r.journal_deleted
           << " rows); " << r.reason;
    else
      text << "run " << r.run_id << " not finalized: " << r.reason;
    if (!r.targets_needing_rolling.empty()) {
      text << "\ntargets that still need a rolling key:";
      for (const auto& name : r.targets_needing_rolling) text << " " << name;
    }
    text << per_target(all, [](const engine::FinalizeReport& t) {
      return verify_line(t.verify) + (t.finalized ? "; finalized" : "; not finalized");
    });
    print(common, all.to_json(), text.str());
    return all.exit_code();
  };
}

// --- journal purge ----------------------------------------------------------------------

std::function<int()> setup_journal(CLI::App& sub, Common& common) {
  auto f = std::make_shared<PassFlags>();
  sub.require_subcommand(1);
  CLI::App* purge = sub.add_subcommand(
      "purge",
      "delete the journals of runs idle for longer than --older-than, or of one rolled-back run");
  add_config_flags(*purge, common);
  add_db_flags(*purge, common);
  add_output_flags(*purge, common);
  auto* older = purge
                    ->add_option("--older-than", f->older_than,
                                 "age, at least 1h, e.g. 30d, 12h (never a running run)")
                    ->type_name("DURATION");
  auto* run = purge
                  ->add_option("--run-id", f->run_id,
                               "this rolled-back run's journal (old-key ciphertext only, once "
                               "its rows are back under their old tokens)")
                  ->type_name("ID");
  older->excludes(run);
  run->excludes(older);
  return [f, &common] {
    if (f->older_than.empty() && f->run_id.empty())
      throw UsageError("journal purge: give --older-than DURATION or --run-id ID");
    auto config = load_config(common);
    auto options = make_options(common, config, *f);
    engine::PurgeReport r;
    if (!f->run_id.empty()) {
      r = engine::purge_run_journals(options, f->run_id);
    } else {
      auto age =
          config::parse_duration(f->older_than, config::Origin{"command line", 0, "--older-than"});
      r = engine::purge_journals(options, age);
    }
    std::ostringstream text;
    if (!r.run_id.empty())
      text << "journal purge: deleted " << r.journal_rows << " journal rows of run " << r.run_id;
    else
      text << "journal purge: deleted " << r.journal_rows << " journal rows of " << r.runs
           << " runs";
    print(common, r.to_json(), text.str());
    return static_cast<int>(kExitOk);
  };
}

const Registrar kScan{CommandSpec{
    "scan",
    "count rows per key, empty and undecryptable; write nothing",
    110,
    setup_scan,
    {},
    "  keymig scan --config values.yaml                    rows per key, before anything moves\n"
    "  keymig scan --config values.yaml --json             the same as one JSON object\n"
    "  keymig scan --config values.yaml --usernames alice  one user's row"}};
const Registrar kMigrate{CommandSpec{
    "migrate",
    "re-encrypt rolling-key secrets under the active key (resumable, journaled)",
    120,
    setup_migrate,
    {},
    "  keymig migrate --config values.yaml --json             a run; note its run_id\n"
    "  keymig migrate --config values.yaml --dry-run          count what would change\n"
    "  keymig migrate --config values.yaml --run-id RUN_ID    resume a run, or join it\n"
    "  keymig migrate --config values.yaml --usernames alice  only these users"}};
const Registrar kVerify{CommandSpec{
    "verify",
    "check every secret decrypts under the active key alone (and a run's journal)",
    130,
    setup_verify,
    {},
    "  keymig verify --config values.yaml --run RUN_ID --json   after a migrate: the run too\n"
    "  keymig verify --config values.yaml                       the table alone"}};
const Registrar kRollback{CommandSpec{
    "rollback",
    "put a run's journaled old tokens back (CAS)",
    140,
    setup_rollback,
    {},
    "  keymig rollback --config values.yaml --run RUN_ID   undo a migrate or a reset-mfa"}};
const Registrar kFinalize{CommandSpec{
    "finalize",
    "verify, then delete a run's journal; say whether the rolling key can go",
    150,
    setup_finalize,
    {},
    "  keymig finalize --config values.yaml --run RUN_ID   verify, then delete the old tokens"}};
const Registrar kJournal{CommandSpec{
    "journal",
    "journal maintenance: journal purge --older-than 30d | --run-id ID",
    230,
    setup_journal,
    {},
    "  keymig journal purge --config values.yaml --older-than 30d   journals idle for 30 days\n"
    "  keymig journal purge --config values.yaml --run-id RUN_ID    a rolled-back run's journal"}};

}  // namespace
}  // namespace keymig::app
