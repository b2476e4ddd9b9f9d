// The rotation commands over several targets (keymig/engine/targets.hpp).

#include "keymig/engine/targets.hpp"

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>

#include "command_record.hpp"
#include "connect.hpp"
#include "journal_runs.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "lanes.hpp"
#include "migrate_steps.hpp"
#include "read_passes.hpp"
#include "run_plan.hpp"

namespace keymig::engine {

using namespace detail;

namespace {

template <class T>
void append_listed(std::vector<T>& into, const std::vector<T>& from) {
  for (const auto& x : from)
    if (into.size() < kMaxListedRows) into.push_back(x);
}

void add_keys(std::vector<KeyRows>& into, const std::vector<KeyRows>& from) {
  for (const auto& k : from) {
    auto it = std::find_if(into.begin(), into.end(),
                           [&](const KeyRows& x) { return x.fingerprint == k.fingerprint; });
    if (it == into.end())
      into.push_back(k);
    else
      it->rows += k.rows;
  }
}

void add_counts(db::RunCounts& a, const db::RunCounts& b) {
  a.rows_scanned += b.rows_scanned;
  a.rotated += b.rotated;
  a.already_active += b.already_active;
  a.flag_fixed += b.flag_fixed;
  a.empty += b.empty;
  a.undecryptable += b.undecryptable;
  a.conflicts += b.conflicts;
  a.rejected += b.rejected;
  a.rewritten += b.rewritten;
}

std::string joined_labels(const std::string& so_far, const std::string& label) {
  return so_far.empty() ? label : so_far + ", " + label;
}

void add(ScanReport& t, const ScanReport& r) {
  t.target = joined_labels(t.target, r.target);
  t.rows_scanned += r.rows_scanned;
  t.active += r.active;
  t.rolling += r.rolling;
  add_keys(t.by_key, r.by_key);
  t.empty += r.empty;
  t.undecryptable += r.undecryptable;
  t.acknowledged += r.acknowledged;
  for (const auto& [reason, n] : r.undecryptable_by_reason) t.undecryptable_by_reason[reason] += n;
  t.flag_wrong += r.flag_wrong;
  append_listed(t.undecryptable_rows, r.undecryptable_rows);
  t.double_encrypted += r.double_encrypted;
  append_listed(t.double_encrypted_rows, r.double_encrypted_rows);
  if (r.secret_column_chars >= 0 &&
      (t.secret_column_chars < 0 || r.secret_column_chars < t.secret_column_chars))
    t.secret_column_chars = r.secret_column_chars;
  t.longest_token_chars = std::max(t.longest_token_chars, r.longest_token_chars);
  for (const auto& w : r.warnings) t.warnings.push_back(r.target + ": " + w);
  t.seconds += r.seconds;
  t.recorded = t.recorded || r.recorded;
}

void add(MigrateReport& t, const MigrateReport& r) {
  t.target = joined_labels(t.target, r.target);
  t.dry_run = r.dry_run;
  t.resumed = t.resumed || r.resumed;
  // The run's state: completed only when every target's part is.
  if (t.state.empty() || t.state == "completed" || t.state == "dry_run") t.state = r.state;
  if (r.stopped && !t.stopped) t.stopped_by = r.stopped_by;
  t.stopped = t.stopped || r.stopped;
  t.rows_scanned += r.rows_scanned;
  t.rotated += r.rotated;
  t.already_active += r.already_active;
  t.flag_fixed += r.flag_fixed;
  t.empty += r.empty;
  t.undecryptable += r.undecryptable;
  t.acknowledged += r.acknowledged;
  t.conflicts += r.conflicts;
  t.conflicts_resolved += r.conflicts_resolved;
  append_listed(t.undecryptable_rows, r.undecryptable_rows);
  for (const auto& v : r.not_found) t.not_found.push_back(v);
  add_keys(t.by_key, r.by_key);
  if (r.run_totals) {
    if (!t.run_totals) t.run_totals = db::RunCounts{};
    add_counts(*t.run_totals, *r.run_totals);
  }
  t.seconds += r.seconds;
  t.rejected += r.rejected;
  append_listed(t.rejected_rows, r.rejected_rows);
  t.rewritten += r.rewritten;
  append_listed(t.rewritten_rows, r.rewritten_rows);
  if (r.preflight) {
    if (!t.preflight) t.preflight = PreflightCheck{};
    PreflightCheck& p = *t.preflight;
    p.rows_scanned += r.preflight->rows_scanned;
    p.undecryptable += r.preflight->undecryptable;
    p.acknowledged += r.preflight->acknowledged;
    p.unknown_key += r.preflight->unknown_key;
    if (r.preflight->baseline >= 0)
      p.baseline = std::max<std::int64_t>(p.baseline, 0) + r.preflight->baseline;
    p.forced = p.forced || r.preflight->forced;
    for (const auto& f : r.preflight->missing_fingerprints)
      if (std::find(p.missing_fingerprints.begin(), p.missing_fingerprints.end(), f) ==
          p.missing_fingerprints.end())
        p.missing_fingerprints.push_back(f);
    for (const auto& w : r.preflight->warnings) p.warnings.push_back(r.target + ": " + w);
  }
  t.journal_purged_runs += r.journal_purged_runs;
  t.journal_purged_rows += r.journal_purged_rows;
}

void add(VerifyReport& t, const VerifyReport& r) {
  t.target = joined_labels(t.target, r.target);
  t.rows_scanned += r.rows_scanned;
  t.ok += r.ok;
  t.needs_rolling += r.needs_rolling;
  t.undecryptable += r.undecryptable;
  t.acknowledged += r.acknowledged;
  t.empty += r.empty;
  t.mismatched += r.mismatched;
  t.journal_checked += r.journal_checked;
  t.journal_failed += r.journal_failed;
  t.journal_cleared += r.journal_cleared;
  append_listed(t.undecryptable_rows, r.undecryptable_rows);
  append_listed(t.needs_rolling_rows, r.needs_rolling_rows);
  append_listed(t.journal_failed_rows, r.journal_failed_rows);
  t.double_encrypted += r.double_encrypted;
  append_listed(t.double_encrypted_rows, r.double_encrypted_rows);
  t.seconds += r.seconds;
  t.recorded = t.recorded || r.recorded;
}

void add(RollbackReport& t, const RollbackReport& r) {
  t.target = joined_labels(t.target, r.target);
  t.journal_rows += r.journal_rows;
  t.restored += r.restored;
  t.left += r.left;
  append_listed(t.left_rows, r.left_rows);
  if (t.state.empty() || t.state == "rolled_back") t.state = r.state;
  t.seconds += r.seconds;
}

template <class Report>
nlohmann::json parsed(const Report& r) {
  return nlohmann::json::parse(r.to_json());
}

// A config with several targets runs them as one grouped run, whatever --target selects.
bool grouped(const Options& options) {
  return options.targets.size() + options.unselected_targets.size() > 1;
}

std::vector<config::Target> selected(const Options& options) {
  if (!options.targets.empty()) return options.targets;
  return {options.target};
}

Options for_target(const Options& options, const config::Target& target) {
  Options o = options;
  o.target = target;
  return o;
}

// Each target's part of run `run_id`: "RUN/name" names one; "RUN" names the parts of a
// run over several targets, or a run of one. Matched by the label the target resolves
// to. Targets without a part map to "".
std::vector<std::string> parts_of(db::Connection& conn, const Options& options,
                                  const std::vector<config::Target>& targets,
                                  const std::vector<std::string>& labels,
                                  const std::string& run_id) {
  std::vector<std::string> parts(targets.size());
  db::ensure_schema(conn);
  std::vector<db::Run> runs;
  const auto slash = run_id.find('/');
  if (slash == std::string::npos) runs = db::group_runs(conn, run_id);
  if (runs.empty()) {
    auto run = db::load_run(conn, run_id);
    if (!run) throw UsageError("no run " + run_id + " in keymig.runs");
    runs.push_back(std::move(*run));
  }
  for (const auto& run : runs) {
    bool matched = false;
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (labels[i] == run.target) {
        parts[i] = run.run_id;
        matched = true;
      }
    // A part on a target this config does not name would be left half done.
    if (!matched && options.unselected_targets.empty())
      throw UsageError("run " + run_id + " covers " + run.target + " (run " + run.run_id +
                       "), which no configured target names: configure it too, or name the "
                       "targets with --target");
  }
  return parts;
}

// A target's error among several says which target it is.
[[noreturn]] void throw_naming(const config::Target& t, const db::TargetError& e) {
  throw db::TargetError("target " + t.name + ": " + e.what());
}

// Resolves every target before any command does anything: a typo in one stops all.
std::vector<std::string> check_all(db::Connection& conn, const std::vector<config::Target>& targets,
                                   db::Access access) {
  std::vector<std::string> labels;
  for (const auto& t : targets) {
    try {
      const db::Table table = db::check_target(conn, target_spec(t));
      db::check_privileges(conn, table, access);
      labels.push_back(table.label());
    } catch (const db::TargetError& e) {
      if (targets.size() == 1) throw;
      throw_naming(t, e);
    }
  }
  return labels;
}

// The checks of every target before the per-target calls: a failure there (no database,
// a typo, no such run) is recorded as the command's failure on every target, as one
// target's call records its own. Once they pass, the calls record their results.
class Prechecks {
 public:
  Prechecks(metrics::Metrics* metrics, const char* command,
            const std::vector<config::Target>& targets) {
    for (const auto& t : targets)
      records_.push_back(std::make_unique<CommandRecord>(metrics, command, t));
  }
  void passed() noexcept {
    for (auto& r : records_) r->unfinished();
  }

 private:
  std::vector<std::unique_ptr<CommandRecord>> records_;
};

// One target's total is its report, every field kept (run id, warnings as they are);
// several are summed from nothing, each one's warnings under its label.
template <class Report>
void put(Across<Report>& out, const std::string& name, Report r) {
  out.names.push_back(name);
  out.each.push_back(std::move(r));
  if (out.each.size() == 1) {
    out.total = out.each.front();
    return;
  }
  if (out.each.size() == 2) {
    out.total = Report{};
    add(out.total, out.each.front());
  }
  add(out.total, out.each.back());
}

}  // namespace

template <class Report>
std::string Across<Report>::to_json() const {
  nlohmann::json j = parsed(total);
  auto list = nlohmann::json::array();
  for (std::size_t i = 0; i < each.size(); ++i) {
    nlohmann::json one = parsed(each[i]);
    one["name"] = names[i];
    list.push_back(std::move(one));
  }
  j["targets"] = std::move(list);
  j["exit_code"] = exit_code();
  return j.dump();
}

template struct Across<ScanReport>;
template struct Across<MigrateReport>;
template struct Across<VerifyReport>;
template struct Across<RollbackReport>;
template struct Across<FinalizeReport>;

void select_targets(Options& options, const std::vector<std::string>& names) {
  const std::vector<config::Target> all = options.targets;
  options.targets = config::select_targets(all, names);
  options.target = options.targets.front();
  options.unselected_targets.clear();
  for (const auto& t : all)
    if (std::none_of(options.targets.begin(), options.targets.end(),
                     [&](const config::Target& s) { return s.name == t.name; }))
      options.unselected_targets.push_back(t.name);
}

std::string member_run_id(const std::string& run, const std::string& name) {
  return run + "/" + name;
}

ScanAcross scan_targets(const crypto::KeyRing& keys, const Options& options) {
  const auto targets = selected(options);
  // With one configured target, scan checks it itself: nothing to check ahead.
  if (grouped(options)) {
    Prechecks prechecks(options.metrics, "scan", targets);
    db::Connection conn = open_connection(options.connect, options.metrics);
    (void)check_all(conn, targets, db::Access::read);
    prechecks.passed();
  }
  ScanAcross out;
  for (const auto& t : targets) put(out, t.name, scan(keys, for_target(options, t)));
  return out;
}

MigrateAcross migrate_targets(const crypto::KeyRing& keys, const Options& options) {
  auto targets = selected(options);
  if (!grouped(options)) {
    MigrateAcross out;
    put(out, targets.front().name, migrate(keys, for_target(options, targets.front())));
    return out;
  }
  if (!options.selection.empty() && targets.size() > 1)
    throw UsageError(
        "--ids and --usernames select rows of one target: name it with --target (configured "
        "targets each have their own ids)");

  std::vector<std::unique_ptr<CommandRecord>> records;
  for (const auto& t : targets)
    records.push_back(std::make_unique<CommandRecord>(options.metrics, "migrate", t));
  db::Connection reader = open_connection(options.connect, options.metrics);

  // Every target checked, then the schema, then every pre-flight: a typo or a lockout in
  // any target stops the command before it writes in one.
  std::vector<MigratePrep> preps;
  for (const auto& t : targets) {
    try {
      preps.push_back(check_migrate(reader, for_target(options, t)));
    } catch (const db::TargetError& e) {
      throw_naming(t, e);
    }
  }
  for (std::size_t i = 0; i < targets.size(); ++i) records[i]->on_target(preps[i].table.label());

  // The run: the named one ("RUN", or "RUN/name" for one target's part), the newest
  // unfinished one over these targets, or a new one.
  std::string group = options.run_id;
  if (const auto slash = group.find('/'); slash != std::string::npos) {
    const std::string name = group.substr(slash + 1);
    group = group.substr(0, slash);
    std::size_t keep = targets.size();
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i].name == name) keep = i;
    if (keep == targets.size())
      throw UsageError("run " + options.run_id + " is the part of run " + group + " on target '" +
                       name + "', which is not a selected target");
    targets = {targets[keep]};
    preps = {std::move(preps[keep])};
    records = [&] {
      std::vector<std::unique_ptr<CommandRecord>> one;
      one.push_back(std::move(records[keep]));
      return one;
    }();
  }
  if (!options.dry_run) {
    db::ensure_schema(reader);
    if (group.empty() && options.resume) {
      std::vector<std::string> names;
      for (const auto& t : options.targets) names.push_back(t.name);
      if (auto found = db::find_unfinished_group(reader, names, selection_json(options.selection),
                                                 keys.fingerprint(0)))
        group = *found;
    }
    if (group.empty()) group = new_run_id("m", 8);
  }
  for (std::size_t i = 0; i < targets.size(); ++i)
    preflight_migrate(reader, keys, for_target(options, targets[i]), preps[i]);

  MigrateAcross out;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    Options o = for_target(options, targets[i]);
    if (!o.dry_run) {
      o.run_id = member_run_id(group, targets[i].name);
      // A part that completed is not walked again: resuming the run goes on where it stopped.
      if (auto done = db::load_run(reader, o.run_id); done && done->state == "completed") {
        MigrateReport r;
        r.run_id = o.run_id;
        r.target = done->target;
        r.state = done->state;
        r.resumed = true;
        r.run_totals = done->counts;
        r.preflight = std::move(preps[i].preflight);
        records[i]->unfinished();
        put(out, targets[i].name, std::move(r));
        continue;
      }
    }
    LaneSessions sessions(o);
    MigrateReport r;
    try {
      r = run_migrate(keys, o, reader, sessions, std::move(preps[i]), *records[i]);
    } catch (const std::exception& e) {
      // The error is the database's or the engine's; which target it hit is said here.
      KEYMIG_LOG(error, "engine", "target_failed", {"target", targets[i].name},
                 {"run_id", o.run_id}, {"error", e.what()});
      throw;
    }
    const bool stopped = r.stopped;
    put(out, targets[i].name, std::move(r));
    if (stopped) {
      // The later targets wait for the resume; their records are neither.
      for (std::size_t j = i + 1; j < targets.size(); ++j) records[j]->unfinished();
      break;
    }
  }
  out.total.run_id = options.dry_run ? std::string() : group;
  KEYMIG_LOG(info, "engine", "targets_done", {"run_id", out.total.run_id},
             {"targets", static_cast<std::int64_t>(out.each.size())}, {"state", out.total.state},
             {"rotated", out.total.rotated});
  return out;
}

VerifyAcross verify_targets(const crypto::KeyRing& keys, const Options& options,
                            const std::string& run_id) {
  const auto targets = selected(options);
  std::vector<std::string> parts(targets.size(), run_id);
  if (grouped(options)) {
    Prechecks prechecks(options.metrics, "verify", targets);
    db::Connection conn = open_connection(options.connect, options.metrics);
    const auto labels = check_all(conn, targets, db::Access::read);
    if (!run_id.empty()) parts = parts_of(conn, options, targets, labels, run_id);
    prechecks.passed();
  }
  VerifyAcross out;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    VerifyReport r = verify(keys, for_target(options, targets[i]), parts[i]);
    if (r.needs_rolling > 0) r.targets_needing_rolling.push_back(targets[i].name);
    put(out, targets[i].name, std::move(r));
  }
  VerifyReport& total = out.total;
  total.run_id = run_id;
  total.targets_needing_rolling.clear();
  for (const auto& r : out.each)
    for (const auto& n : r.targets_needing_rolling) total.targets_needing_rolling.push_back(n);
  const bool stopped = options.stop && options.stop->load();
  total.rolling_key_retirable = total.targets_needing_rolling.empty() && !stopped &&
                                options.unselected_targets.empty() && options.selection.empty();
  for (auto& r : out.each) r.rolling_key_retirable = total.rolling_key_retirable;
  return out;
}

RollbackAcross rollback_targets(const Options& options, const std::string& run_id) {
  if (run_id.empty()) throw UsageError("rollback needs --run ID");
  const auto targets = selected(options);
  std::vector<std::string> parts(targets.size(), run_id);
  if (grouped(options)) {
    Prechecks prechecks(options.metrics, "rollback", targets);
    db::Connection conn = open_connection(options.connect, options.metrics);
    const auto labels = check_all(conn, targets, db::Access::write);
    parts = parts_of(conn, options, targets, labels, run_id);
    prechecks.passed();
  }
  RollbackAcross out;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (parts[i].empty()) continue;
    put(out, targets[i].name, rollback(for_target(options, targets[i]), parts[i]));
    if (options.stop && options.stop->load()) break;
  }
  if (out.each.empty()) throw UsageError("run " + run_id + " has no part on the selected targets");
  out.total.run_id = run_id;
  return out;
}

FinalizeAcross finalize_targets(const crypto::KeyRing& keys, const Options& options,
                                const std::string& run_id) {
  const auto targets = selected(options);
  if (!grouped(options)) {
    FinalizeAcross out;
    FinalizeReport r = finalize(keys, for_target(options, targets.front()), run_id);
    out.total = r;
    out.names.push_back(targets.front().name);
    out.each.push_back(std::move(r));
    return out;
  }
  if (run_id.empty()) throw UsageError("finalize needs --run ID");
  // Created first: a failed check is recorded as finalize's failure on every target.
  std::vector<std::unique_ptr<CommandRecord>> records;
  for (const auto& t : targets)
    records.push_back(std::make_unique<CommandRecord>(options.metrics, "finalize", t));
  std::vector<std::string> parts;
  {
    db::Connection conn = open_connection(options.connect, options.metrics);
    const auto labels = check_all(conn, targets, db::Access::read);
    parts = parts_of(conn, options, targets, labels, run_id);
  }
  FinalizeAcross out;
  bool ready = true;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Options o = for_target(options, targets[i]);
    FinalizeReport r;
    if (parts[i].empty()) {
      // A target the run did not touch still has to need no rolling key.
      r.verify = verify_pass(keys, o, {}, records[i].get());
      if (r.verify.needs_rolling > 0) {
        r.targets_needing_rolling.push_back(targets[i].name);
        r.reason = std::to_string(r.verify.needs_rolling) +
                   " rows still need a rolling key and run " + run_id +
                   " has no part on this target: run `keymig migrate`, then finalize again";
      }
    } else {
      r = check_finalize(keys, o, parts[i], records[i].get());
    }
    r.run_id = parts[i];
    ready = ready && r.reason.empty();
    out.names.push_back(targets[i].name);
    out.each.push_back(std::move(r));
  }
  FinalizeReport& total = out.total;
  total.run_id = run_id;
  std::string blocking;
  for (std::size_t i = 0; i < out.each.size(); ++i) {
    const FinalizeReport& r = out.each[i];
    add(total.verify, r.verify);
    total.journal_unreadable += r.journal_unreadable;
    append_listed(total.journal_unreadable_rows, r.journal_unreadable_rows);
    for (const auto& n : r.targets_needing_rolling) total.targets_needing_rolling.push_back(n);
    if (!r.reason.empty())
      blocking += (blocking.empty() ? "" : "; ") + out.names[i] + ": " + r.reason;
  }
  total.verify.run_id = run_id;
  if (!ready) {
    total.reason = "nothing deleted in any target: " + blocking;
    for (auto& r : out.each)
      if (r.reason.empty()) r.reason = "waits for the other targets of run " + run_id;
    return out;
  }
  for (std::size_t i = 0; i < out.each.size(); ++i) {
    FinalizeReport& r = out.each[i];
    if (parts[i].empty()) {
      records[i]->succeeded();
      continue;
    }
    commit_finalize(for_target(options, targets[i]), r, *records[i]);
    total.journal_deleted += r.journal_deleted;
  }
  total.finalized = true;
  // A key is retirable when nothing anywhere needs it: the targets --target left out
  // were not checked.
  total.rolling_key_retirable = options.unselected_targets.empty();
  std::string unchecked;
  for (const auto& n : options.unselected_targets) unchecked += (unchecked.empty() ? "" : ", ") + n;
  total.reason =
      total.rolling_key_retirable
          ? "no row of any target needs a rolling key; the rolling key can be retired"
          : "no row of the selected targets needs a rolling key; not checked: " + unchecked +
                " (finalize without --target before retiring the key)";
  for (auto& r : out.each) r.rolling_key_retirable = total.rolling_key_retirable;
  return out;
}

PurgeReport purge_run_journals(const Options& options, const std::string& run_id) {
  if (run_id.empty() || run_id.find('/') != std::string::npos)
    return purge_run_journal(options, run_id);
  std::vector<db::Run> runs;
  {
    db::Connection conn = open_connection(options.connect, options.metrics);
    db::ensure_schema(conn);
    runs = db::group_runs(conn, run_id);
  }
  if (runs.empty()) return purge_run_journal(options, run_id);
  // Every part is purgeable, or none is purged: a run half purged could not be rolled back.
  for (const auto& run : runs)
    if (run.state != "rolled_back" && run.state != "finalized")
      throw UsageError("run " + run_id + ": its part " + run.run_id + " is " + run.state +
                       (run.state == "completed" ? ": `keymig finalize --run " + run_id +
                                                       "` verifies the run and "
                                                       "deletes its journal"
                                                 : ": roll the run back (`keymig rollback --run " +
                                                       run_id + "`) or let it complete first") +
                       "; nothing was deleted");
  PurgeReport total;
  total.run_id = run_id;
  for (const auto& run : runs) {
    const PurgeReport r = purge_run_journal(options, run.run_id);
    total.runs += r.runs;
    total.journal_rows += r.journal_rows;
  }
  return total;
}

}  // namespace keymig::engine
