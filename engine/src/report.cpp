// The reports as JSON: ids, counts and fingerprints; never a token.

#include <nlohmann/json.hpp>

#include "keymig/engine/engine.hpp"

namespace keymig::engine {

namespace {

nlohmann::json rows_json(const std::vector<UndecryptableRow>& rows) {
  auto out = nlohmann::json::array();
  for (const auto& r : rows)
    out.push_back({{"id", r.id}, {"reason", r.reason}, {"acknowledged", r.acknowledged}});
  return out;
}

nlohmann::json keys_json(const std::vector<KeyRows>& keys) {
  auto out = nlohmann::json::array();
  for (const auto& k : keys)
    out.push_back({{"key", k.key}, {"fingerprint", k.fingerprint}, {"rows", k.rows}});
  return out;
}

nlohmann::json counts_json(const db::RunCounts& c) {
  return {{"rows_scanned", c.rows_scanned},
          {"rotated", c.rotated},
          {"already_active", c.already_active},
          {"flag_fixed", c.flag_fixed},
          {"empty", c.empty},
          {"undecryptable", c.undecryptable},
          {"conflicts", c.conflicts},
          {"rejected", c.rejected},
          {"rewritten", c.rewritten}};
}

nlohmann::json verify_json(const VerifyReport& r) {
  return {{"run_id", r.run_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.run_id)},
          {"target", r.target},
          {"rows_scanned", r.rows_scanned},
          {"ok", r.ok},
          {"needs_rolling", r.needs_rolling},
          {"undecryptable", r.undecryptable},
          {"acknowledged", r.acknowledged},
          {"empty", r.empty},
          {"mismatched", r.mismatched},
          {"journal_checked", r.journal_checked},
          {"journal_failed", r.journal_failed},
          {"journal_cleared", r.journal_cleared},
          {"rotated", 0},
          {"already_active", r.ok},
          {"flag_fixed", 0},
          {"conflicts", 0},
          {"undecryptable_rows", rows_json(r.undecryptable_rows)},
          {"needs_rolling_rows", r.needs_rolling_rows},
          {"journal_failed_rows", r.journal_failed_rows},
          {"double_encrypted", r.double_encrypted},
          {"double_encrypted_rows", r.double_encrypted_rows},
          {"seconds", r.seconds},
          {"recorded_as_baseline", r.recorded},
          {"exit_code", r.exit_code()}};
}

nlohmann::json preflight_json(const PreflightCheck& p) {
  return {{"rows_scanned", p.rows_scanned},
          {"undecryptable", p.undecryptable},
          {"acknowledged", p.acknowledged},
          {"unknown_key", p.unknown_key},
          {"baseline", p.baseline < 0 ? nlohmann::json(nullptr) : nlohmann::json(p.baseline)},
          {"baseline_from", p.baseline_from},
          {"missing_fingerprints", p.missing_fingerprints},
          {"unknown_key_first", p.unknown_key_first},
          {"unknown_key_last", p.unknown_key_last},
          {"forced", p.forced},
          {"warnings", p.warnings}};
}

}  // namespace

std::string ScanReport::to_json() const {
  nlohmann::json reasons = nlohmann::json::object();
  for (const auto& [k, v] : undecryptable_by_reason) reasons[k] = v;
  nlohmann::json j = {{"run_id", nullptr},
                      {"target", target},
                      {"rows_scanned", rows_scanned},
                      {"active", active},
                      {"rolling", rolling},
                      {"by_key", keys_json(by_key)},
                      {"empty", empty},
                      {"undecryptable", undecryptable},
                      {"acknowledged", acknowledged},
                      {"undecryptable_by_reason", reasons},
                      {"flag_wrong", flag_wrong},
                      // The common --json fields: a scan writes nothing.
                      {"rotated", 0},
                      {"already_active", active},
                      {"flag_fixed", 0},
                      {"conflicts", 0},
                      {"undecryptable_rows", rows_json(undecryptable_rows)},
                      {"double_encrypted", double_encrypted},
                      {"double_encrypted_rows", double_encrypted_rows},
                      {"secret_column_chars", secret_column_chars},
                      {"longest_token_chars", longest_token_chars},
                      {"warnings", warnings},
                      {"recorded_as_baseline", recorded},
                      {"seconds", seconds},
                      {"exit_code", exit_code()}};
  return j.dump();
}

int ScanReport::exit_code() const noexcept {
  return undecryptable > acknowledged ? kExitUndecryptable : kExitOk;
}

std::string MigrateReport::to_json() const {
  nlohmann::json j = {
      {"run_id", run_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(run_id)},
      {"target", target},
      {"dry_run", dry_run},
      {"resumed", resumed},
      {"state", state},
      {"stopped", stopped},
      {"stopped_by", stopped_by.empty() ? nlohmann::json(nullptr) : nlohmann::json(stopped_by)},
      {"rows_scanned", rows_scanned},
      {"rotated", rotated},
      {"already_active", already_active},
      {"flag_fixed", flag_fixed},
      {"empty", empty},
      {"undecryptable", undecryptable},
      {"acknowledged", acknowledged},
      {"conflicts", conflicts},
      {"conflicts_resolved", conflicts_resolved},
      {"undecryptable_rows", rows_json(undecryptable_rows)},
      {"not_found", not_found},
      {"by_key", keys_json(by_key)},
      {"run_totals", run_totals ? counts_json(*run_totals) : nlohmann::json(nullptr)},
      {"seconds", seconds},
      {"rejected", rejected},
      {"rejected_rows", rows_json(rejected_rows)},
      {"rewritten", rewritten},
      {"rewritten_rows", rewritten_rows},
      {"preflight", preflight ? preflight_json(*preflight) : nlohmann::json(nullptr)},
      {"succeeded", succeeded()},
      {"journal_purged", {{"runs", journal_purged_runs}, {"journal_rows", journal_purged_rows}}},
      {"exit_code", exit_code()}};
  return j.dump();
}

int MigrateReport::exit_code() const noexcept {
  // A drained run is unfinished whatever its counts say: the process exits 1, and the
  // report must not promise otherwise to whoever reads only its exit_code.
  if (stopped) return kExitRuntime;
  if (rejected > 0 || rewritten > 0) return kExitNeedsRolling;
  return undecryptable > acknowledged ? kExitUndecryptable : kExitOk;
}

bool MigrateReport::succeeded() const noexcept {
  // Rows rejected or rewritten (exit 4) still need the rolling key or an investigation:
  // the run completed, but did not do its job.
  return !dry_run && state == "completed" && exit_code() != kExitNeedsRolling;
}

std::string VerifyReport::to_json() const {
  nlohmann::json j = verify_json(*this);
  j["succeeded"] = succeeded();
  j["rolling_key_retirable"] = rolling_key_retirable;
  j["targets_needing_rolling"] = targets_needing_rolling;
  return j.dump();
}

int VerifyReport::exit_code() const noexcept {
  if (needs_rolling > 0 || mismatched > 0 || journal_failed > 0) return kExitNeedsRolling;
  if (undecryptable > acknowledged) return kExitUndecryptable;
  return kExitOk;
}

bool VerifyReport::succeeded() const noexcept {
  return exit_code() != kExitNeedsRolling;
}

std::string RollbackReport::to_json() const {
  nlohmann::json j = {{"run_id", run_id},     {"target", target},   {"journal_rows", journal_rows},
                      {"restored", restored}, {"left", left},       {"left_rows", left_rows},
                      {"state", state},       {"seconds", seconds}, {"exit_code", 0}};
  return j.dump();
}

std::string FinalizeReport::to_json() const {
  nlohmann::json j = verify_json(verify);
  j["run_id"] = run_id;
  j["finalized"] = finalized;
  j["rolling_key_retirable"] = rolling_key_retirable;
  j["targets_needing_rolling"] = targets_needing_rolling;
  j["journal_deleted"] = journal_deleted;
  j["reason"] = reason;
  j["journal_unreadable"] = journal_unreadable;
  j["journal_unreadable_rows"] = journal_unreadable_rows;
  j["exit_code"] = exit_code();
  return j.dump();
}

int FinalizeReport::exit_code() const noexcept {
  return finalized ? kExitOk : kExitNeedsRolling;
}

std::string PurgeReport::to_json() const {
  nlohmann::json j{{"runs", runs}, {"journal_rows", journal_rows}};
  if (!run_id.empty()) j["run_id"] = run_id;
  return j.dump();
}

}  // namespace keymig::engine
