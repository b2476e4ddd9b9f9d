// `keymig acknowledge`: record, list and forget undecryptable rows the operator accepts
// (orphans whose key is gone), so that they stop failing runs while new ones still do.

#include <pwd.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"
#include "keymig/engine/acknowledge.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/targets.hpp"
#include "keymig/error.hpp"
#include "keymig/redact.hpp"

namespace keymig::app {
namespace {

struct AcknowledgeFlags {
  std::vector<std::string> ids;
  std::string reason;
  std::string by;
  std::string target;  // --target: required when keyMigration.targets has several
  bool list = false;
  bool remove = false;
};

// Who acknowledged, when --by is not given: the operating system's name for this user.
std::string login_name() {
  if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_name && *pw->pw_name)
    return pw->pw_name;
  return "uid " + std::to_string(::geteuid());
}

std::string rows_text(const engine::AcknowledgeReport& r) {
  std::ostringstream out;
  for (const auto& row : r.rows)
    out << "\n  id " << escape_control(row.row_id) << ": " << escape_control(row.reason) << " (by "
        << escape_control(row.acknowledged_by) << ", " << row.acknowledged_at << ")";
  return out.str();
}

int run_acknowledge(const Common& common, const AcknowledgeFlags& f) {
  if (f.list + f.remove > 1)
    throw UsageError("acknowledge: --list and --remove exclude each other");
  if (f.list && !f.ids.empty()) throw UsageError("acknowledge --list takes no --ids");
  if (!f.remove && !f.list && f.ids.empty())
    throw UsageError("acknowledge: give --ids (with --reason), or --list, or --remove --ids");
  const config::Config config = load_config(common);
  engine::Options options = engine::options_from_config(config);
  // Row ids are a target's own: with several targets, the operator names the one.
  if (f.target.empty() && config.migration.targets.size() > 1) {
    std::string names;
    for (const auto& t : config.migration.targets) names += (names.empty() ? "" : ", ") + t.name;
    throw UsageError("acknowledge: several targets are configured: name one with --target (" +
                     names + ")");
  }
  if (!f.target.empty()) engine::select_targets(options, {f.target});
  options.connect.dsn = effective_dsn(common, config);
  engine::AcknowledgeReport r;
  std::ostringstream text;
  if (f.list) {
    r = engine::list_acknowledged_rows(options);
    text << r.rows.size() << " acknowledged rows on " << r.target << rows_text(r);
  } else if (f.remove) {
    r = engine::remove_acknowledged_rows(options, f.ids);
    text << "no longer acknowledged on " << r.target << ": " << r.removed.size() << " rows";
    for (const auto& id : r.removed) text << " " << escape_control(id);
    if (!r.not_acknowledged.empty()) {
      text << "\nnot acknowledged before:";
      for (const auto& id : r.not_acknowledged) text << " " << escape_control(id);
    }
  } else {
    const crypto::KeyRing keys = load_keyring(config);
    r = engine::acknowledge_rows(keys, options, f.ids, f.reason,
                                 f.by.empty() ? login_name() : f.by);
    text << "acknowledged on " << r.target << ": " << r.rows.size()
         << " rows (reported, but no longer failing a run)" << rows_text(r);
  }
  std::cout << (common.json ? r.to_json() : text.str()) << std::endl;
  return kExitOk;
}

const Registrar kAcknowledge{CommandSpec{
    "acknowledge",
    "record undecryptable rows as known (by id, with a reason) so that they stop failing runs; "
    "--list, --remove",
    215,
    [](CLI::App& sub, Common& common) -> std::function<int()> {
      auto flags = std::make_shared<AcknowledgeFlags>();
      add_config_flags(sub, common);
      add_db_flags(sub, common);
      add_output_flags(sub, common);
      add_list_option(sub, "--ids", flags->ids,
                      "the rows: each must be undecryptable now (all or nothing)", "ID,...");
      sub.add_option("--reason", flags->reason,
                     "why they may stay unreadable (kept in keymig.acknowledged)")
          ->type_name("TEXT");
      sub.add_option("--by", flags->by, "who acknowledges; default: your login name")
          ->type_name("NAME");
      sub.add_option("--target", flags->target,
                     "the configured target the ids are rows of (needed with several targets)")
          ->type_name("NAME");
      sub.add_flag("--list", flags->list, "list the target's acknowledged rows");
      sub.add_flag("--remove", flags->remove,
                   "forget the --ids: they fail runs again while undecryptable");
      return [&common, flags] { return run_acknowledge(common, *flags); };
    },
    {},
    "  keymig acknowledge --config values.yaml --ids 17,42 --reason \"orphans of the 2023 "
    "import\"\n"
    "  keymig acknowledge --config values.yaml --list           what is acknowledged, by whom\n"
    "  keymig acknowledge --config values.yaml --remove --ids 17  fail runs on row 17 again"}};

}  // namespace
}  // namespace keymig::app
