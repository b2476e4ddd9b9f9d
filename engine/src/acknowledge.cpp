// `keymig acknowledge`: the operator's list of known undecryptable rows. Adding checks
// each row through the pre-flight's classification (HMAC alone), so that only rows no
// configured key reads can be acknowledged.

#include "keymig/engine/acknowledge.hpp"

#include <nlohmann/json.hpp>
#include <set>

#include "connect.hpp"
#include "keymig/db/privileges.hpp"
#include "keymig/db/schema.hpp"
#include "keymig/db/target.hpp"
#include "keymig/error.hpp"
#include "keymig/log.hpp"
#include "keymig/redact.hpp"
#include "read_passes.hpp"

namespace keymig::engine {

using namespace detail;

namespace {

db::Table open_target(db::Connection& conn, const Options& options) {
  db::Table table = db::check_target(conn, target_spec(options.target));
  db::check_privileges(conn, table, db::Access::read);
  return table;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

}  // namespace

std::string AcknowledgeReport::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& r : rows)
    list.push_back({{"id", r.row_id},
                    {"reason", r.reason},
                    {"acknowledged_by", r.acknowledged_by},
                    {"acknowledged_at", r.acknowledged_at}});
  return nlohmann::json{{"target", target},
                        {"action", action},
                        {"rows", list},
                        {"removed", removed},
                        {"not_acknowledged", not_acknowledged},
                        {"exit_code", 0}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AcknowledgeReport acknowledge_rows(const crypto::KeyRing& keys, const Options& options,
                                   const std::vector<std::string>& ids, const std::string& reason,
                                   const std::string& by) {
  if (ids.empty()) throw UsageError("acknowledge: give the rows with --ids");
  // Operator text outlives the command in keymig.acknowledged: no token or key in it.
  const std::string why = scrub_tokens(reason);
  if (why.find_first_not_of(" \t") == std::string::npos)
    throw UsageError("acknowledge: --reason is required (why these rows may stay unreadable)");
  if (by.empty()) throw UsageError("acknowledge: --by is empty");
  db::Connection conn = open_connection(options.connect, nullptr);
  const db::Table table = open_target(conn, options);

  Options pass = options;
  pass.selection = db::Selection{};
  pass.selection.ids = ids;
  pass.progress = nullptr;
  pass.metrics = nullptr;
  const auto missing = db::missing_selection(conn, table, pass.selection);
  if (!missing.empty())
    throw UsageError("acknowledge: no row " + joined(missing) + " in " + table.label() +
                     "; nothing recorded");
  std::vector<UndecryptableRow> unreadable;
  (void)read_pass(
      keys, pass, conn, table, Mode::preflight, unreadable, [](Batch&) {}, nullptr);
  std::set<std::string> found;
  for (const auto& r : unreadable) found.insert(r.id);
  std::vector<std::string> readable;
  for (const auto& id : ids)
    if (!found.count(id)) readable.push_back(id);
  if (!readable.empty())
    throw UsageError("acknowledge: row " + joined(readable) + " of " + table.label() +
                     " is empty or read by a configured key, not undecryptable; nothing "
                     "recorded");

  db::ensure_schema(conn);
  std::vector<std::string> unique(found.begin(), found.end());
  (void)db::add_acknowledged(conn, table.label(), unique, why, by);
  AcknowledgeReport report;
  report.target = table.label();
  report.action = "add";
  std::set<std::string> wanted(unique.begin(), unique.end());
  for (auto& r : db::list_acknowledged(conn, table.label()))
    if (wanted.count(r.row_id)) report.rows.push_back(std::move(r));
  KEYMIG_LOG(info, "engine", "rows_acknowledged", {"target", report.target},
             {"rows", static_cast<std::int64_t>(report.rows.size())}, {"by", by});
  return report;
}

AcknowledgeReport list_acknowledged_rows(const Options& options) {
  db::Connection conn = open_connection(options.connect, nullptr);
  const db::Table table = open_target(conn, options);
  AcknowledgeReport report;
  report.target = table.label();
  report.action = "list";
  if (!db::acknowledged_ids(conn, table.label()).empty())
    report.rows = db::list_acknowledged(conn, table.label());
  return report;
}

AcknowledgeReport remove_acknowledged_rows(const Options& options,
                                           const std::vector<std::string>& ids) {
  if (ids.empty()) throw UsageError("acknowledge --remove: give the rows with --ids");
  db::Connection conn = open_connection(options.connect, nullptr);
  const db::Table table = open_target(conn, options);
  AcknowledgeReport report;
  report.target = table.label();
  report.action = "remove";
  if (db::acknowledged_ids(conn, table.label()).empty()) {
    report.not_acknowledged = ids;
    return report;
  }
  report.removed = db::remove_acknowledged(conn, table.label(), ids);
  std::set<std::string> gone(report.removed.begin(), report.removed.end());
  for (const auto& id : ids)
    if (!gone.count(id)) report.not_acknowledged.push_back(id);
  KEYMIG_LOG(info, "engine", "acknowledgements_removed", {"target", report.target},
             {"rows", static_cast<std::int64_t>(report.removed.size())});
  return report;
}

}  // namespace keymig::engine
