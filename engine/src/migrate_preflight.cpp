#include "migrate_preflight.hpp"

#include "key_history.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/error.hpp"
#include "keymig/log.hpp"
#include "read_passes.hpp"

namespace keymig::engine::detail {

namespace {

// The count the rule compares with: the unacknowledged undecryptable rows of the last
// whole-target scan or verify; before any, those the last completed whole-target run
// left. -1: nothing to compare with (a first migrate).
void set_baseline(PreflightCheck& check, const KeyHistory& history) {
  if (history.last_scan) {
    const auto& s = *history.last_scan;
    check.baseline = std::max<std::int64_t>(0, s.undecryptable - s.acknowledged);
    check.baseline_from = s.command + " at " + s.scanned_at;
    return;
  }
  for (const auto& run : history.runs)
    if ((run.state == "completed" || run.state == "finalized") && run.selection_json == "null") {
      check.baseline = run.counts.undecryptable;
      check.baseline_from = "run " + run.run_id + " (" + run.started_at + ")";
      return;
    }
}

std::string refusal(const PreflightCheck& c, const std::string& target) {
  const std::int64_t left = c.undecryptable - c.acknowledged;
  std::string out = std::to_string(left) + " rows of " + target +
                    " would stay undecryptable with this config (not counting " +
                    std::to_string(c.acknowledged) + " acknowledged), more than the " +
                    std::to_string(c.baseline) + " of the " + c.baseline_from;
  if (c.unknown_key > 0) {
    out += "; " + std::to_string(c.unknown_key) +
           " of them are well-formed tokens no configured key verifies, made between " +
           c.unknown_key_first + " and " + c.unknown_key_last + " (unverified timestamps)";
    out += c.missing_fingerprints.empty()
               ? ": a key that made them is likely not configured"
               : ": the likely missing key is " + c.missing_fingerprints.front();
  }
  return out;
}

}  // namespace

PreflightCheck migrate_preflight(db::Connection& reader, const db::Table& table,
                                 const crypto::KeyRing& keys, const Options& options,
                                 const AcknowledgedIds& acknowledged) {
  PreflightCheck check;
  const KeyHistory history = read_key_history(reader, table.label(), keys);
  for (const auto& m : history.missing) check.missing_fingerprints.push_back(m.fingerprint);
  if (history.swapped) {
    const std::string why = swapped_message(*history.swapped, keys);
    if (!options.force) throw UsageError("migrate refused: " + why);
    check.forced = true;
    check.warnings.push_back("--force: " + why);
    KEYMIG_LOG(warn, "engine", "preflight_forced", {"target", table.label()},
               {"reason", "swapped keys"}, {"run_id", history.swapped->run_id});
  }

  // A worker joining (or resuming) a run under way: the run's first worker counted the
  // rows, with the same active key (plan_run checks it); N workers of one run must not
  // read the table N more times.
  if (!options.run_id.empty()) {
    const auto run = db::load_run(reader, options.run_id);
    if (run && run->kind == "migrate" && run->state == "running") {
      check.baseline_from = "run " + run->run_id + " under way: its first worker counted";
      return check;
    }
  }

  // Read-only: neither paced like the writes nor shown as the run's progress.
  Options pass = options;
  pass.max_rows_per_second = 0;
  pass.progress = nullptr;
  pass.metrics = nullptr;
  std::vector<UndecryptableRow> rows;
  const Tally sum = read_pass(
      keys, pass, reader, table, Mode::preflight, rows, [](Batch&) {}, &acknowledged);
  check.rows_scanned = sum.rows;
  check.undecryptable = sum.undecryptable;
  check.acknowledged = sum.acknowledged;
  if (auto it = sum.by_reason.find(crypto::reason_name(crypto::Reason::unknown_key));
      it != sum.by_reason.end())
    check.unknown_key = it->second - sum.acknowledged_unknown_key;
  check.unknown_key_first = unix_time_text(sum.unknown_key_first);
  check.unknown_key_last = unix_time_text(sum.unknown_key_last);
  set_baseline(check, history);

  const std::int64_t left = check.undecryptable - check.acknowledged;
  KEYMIG_LOG(info, "engine", "preflight_done", {"target", table.label()},
             {"rows", check.rows_scanned}, {"undecryptable", check.undecryptable},
             {"acknowledged", check.acknowledged}, {"baseline", check.baseline},
             {"baseline_from", check.baseline_from});
  // Only a key can be missing: new malformed rows alone are left to the run, which
  // reports them (exit 3) as it always did.
  if (check.baseline < 0 || left <= check.baseline || check.unknown_key == 0) return check;
  std::string why = refusal(check, table.label());
  const std::string keys_text = missing_keys_text(history.missing);
  if (!keys_text.empty())
    why += ". Keys earlier runs of this target used that are not configured: " + keys_text;
  if (!options.force)
    throw UsageError(
        "migrate refused: " + why +
        ". Put the missing key back (secretStore.rollingKeys) and check with `keymig check-config "
        "--with-db`; if these rows are known orphans, `keymig acknowledge --ids ... --reason "
        "...` them, or run `keymig scan` to take today's count as the baseline; --force "
        "migrates anyway. Nothing was written");
  check.forced = true;
  check.warnings.push_back("--force: " + why);
  KEYMIG_LOG(warn, "engine", "preflight_forced", {"target", table.label()},
             {"reason", "more undecryptable rows than the baseline"}, {"undecryptable", left},
             {"baseline", check.baseline});
  return check;
}

}  // namespace keymig::engine::detail
