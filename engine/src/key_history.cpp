#include "key_history.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace keymig::engine::detail {

namespace {

// Enough history to find the run a swap reverses: keymig.runs holds a few runs per
// rotation (scheduled ones, selections, resets).
constexpr int kRunsRead = 500;

bool finished_migration(const db::Run& run) {
  return run.kind == "migrate" && (run.state == "completed" || run.state == "finalized");
}

std::set<std::string> configured(const crypto::KeyRing& keys) {
  std::set<std::string> out;
  for (int i = 0; i <= static_cast<int>(keys.rolling_count()); ++i) out.insert(keys.fingerprint(i));
  return out;
}

void add_missing(std::vector<MissingKey>& out, const std::set<std::string>& have,
                 const std::string& fp, std::string seen) {
  if (fp.empty() || have.count(fp)) return;
  for (auto& m : out)
    if (m.fingerprint == fp) {
      m.seen += ", " + seen;
      return;
    }
  out.push_back({fp, std::move(seen)});
}

}  // namespace

KeyHistory read_key_history(db::Connection& conn, const std::string& target,
                            const crypto::KeyRing& keys) {
  KeyHistory h;
  try {
    for (auto& run : db::list_runs(conn, kRunsRead))
      if (run.kind == "migrate" && run.target == target) h.runs.push_back(std::move(run));
  } catch (const db::DbError& e) {
    // No schema keymig yet (never migrated): no history.
    if (e.sqlstate() != "42P01" && e.sqlstate() != "3F000") throw;
  }
  h.last_scan = db::last_scan(conn, target);

  const std::string active = keys.fingerprint(0);
  std::set<std::string> rolling;
  for (int i = 1; i <= static_cast<int>(keys.rolling_count()); ++i)
    rolling.insert(keys.fingerprint(i));
  for (const auto& run : h.runs) {
    if (!finished_migration(run) || run.active_fingerprint == active) continue;
    const auto& old = run.rolling_fingerprints;
    if (std::find(old.begin(), old.end(), active) != old.end() &&
        rolling.count(run.active_fingerprint)) {
      h.swapped = run;
      break;
    }
  }

  const auto have = configured(keys);
  if (h.last_scan) {
    // Only keys that held rows: a key the last scan found nothing under locks nobody out.
    auto counts = nlohmann::json::parse(h.last_scan->counts_json, nullptr, false);
    if (counts.is_object() && counts.contains("by_key") && counts["by_key"].is_array())
      for (const auto& k : counts["by_key"]) {
        if (!k.is_object() || !k.contains("rows") || !k["rows"].is_number_integer()) continue;
        const auto rows = k["rows"].get<std::int64_t>();
        if (rows <= 0) continue;
        add_missing(h.missing, have, k.value("fingerprint", std::string()),
                    k.value("key", std::string("a key")) + " of the last " + h.last_scan->command +
                        " (" + h.last_scan->scanned_at + ", " + std::to_string(rows) + " rows)");
      }
  }
  if (!h.runs.empty()) {
    const auto& last = h.runs.front();
    add_missing(h.missing, have, last.active_fingerprint,
                "active key of run " + last.run_id + " (" + last.started_at + ")");
    for (const auto& fp : last.rolling_fingerprints)
      add_missing(h.missing, have, fp,
                  "rolling key of run " + last.run_id + " (" + last.started_at + ")");
  }
  return h;
}

std::string swapped_message(const db::Run& run, const crypto::KeyRing& keys) {
  return "the configured active key " + keys.fingerprint(0) + " is the key run " + run.run_id +
         " (" + run.state + ", started " + run.started_at +
         ") rotated rows away from, and that run's active key " + run.active_fingerprint +
         " is configured as a rolling key: secretStore.activeKey and the rolling key look "
         "swapped, and a migrate would move every row back under the old key. Swap them "
         "back, or pass --force if " +
         keys.fingerprint(0) + " is meant to be the active key again; nothing was written";
}

std::string missing_keys_text(const std::vector<MissingKey>& missing) {
  std::string out;
  for (const auto& m : missing)
    out += (out.empty() ? "" : "; ") + std::string("key ") + m.fingerprint + " (" + m.seen + ")";
  return out;
}

}  // namespace keymig::engine::detail
