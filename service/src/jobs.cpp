#include "keymig/service/jobs.hpp"

#include <cctype>
#include <nlohmann/json.hpp>
#include <utility>

#include "keymig/config/config.hpp"

namespace keymig::service {

const char* job_kind_name(JobKind kind) noexcept {
  switch (kind) {
    case JobKind::migrate:
      return "migrate";
    case JobKind::verify:
      return "verify";
    case JobKind::reset_mfa:
      return "reset_mfa";
    case JobKind::rollback:
      return "rollback";
    case JobKind::finalize:
      return "finalize";
    case JobKind::status:
      return "status";
  }
  return "unknown";
}

bool is_selected_job(const Job& job) noexcept {
  if (job.kind == JobKind::rollback) return true;
  if (job.kind == JobKind::finalize) return false;
  if (job.kind == JobKind::verify && !job.run_id.empty()) return false;  // the run's journal
  const std::size_t n = job.selection.ids.size() + job.selection.usernames.size();
  return n > 0 && n <= kMaxSelectedUsers;
}

namespace {

// Pulls a list of ids or usernames; numbers become their decimal text.
bool read_list(const nlohmann::json& params, const char* field, bool numbers_ok,
               std::vector<std::string>& out, std::string& error) {
  auto it = params.find(field);
  if (it == params.end() || it->is_null()) return true;
  if (!it->is_array()) {
    error = std::string("params.") + field + " must be an array";
    return false;
  }
  for (const auto& item : *it) {
    if (item.is_string() && !item.get<std::string>().empty()) {
      out.push_back(item.get<std::string>());
    } else if (numbers_ok && item.is_number_integer()) {
      out.push_back(item.dump());
    } else {
      error = std::string("params.") + field + " must hold " +
              (numbers_ok ? "integers or non-empty strings" : "non-empty strings");
      return false;
    }
  }
  return true;
}

// A run id as keymig makes them ("m20261202T150405Z-1a2b3c4d", a Job's name, "RUN/target"
// for one target's part of a run over several): it is quoted
// back in errors and logs, so nothing else is taken.
bool plain_run_id(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != ':' && c != '/')
      return false;
  return true;
}

}  // namespace

ParsedRequest parse_request(std::string_view kind, std::string_view params_json) {
  ParsedRequest out;
  Job job;
  job.source = "request";
  static constexpr std::pair<std::string_view, JobKind> kKinds[] = {
      {"migrate", JobKind::migrate},     {"verify", JobKind::verify},
      {"reset_mfa", JobKind::reset_mfa}, {"rollback", JobKind::rollback},
      {"finalize", JobKind::finalize},   {"status", JobKind::status}};
  bool known = false;
  for (const auto& [name, value] : kKinds)
    if (kind == name) {
      job.kind = value;
      known = true;
    }
  if (!known) {
    // The kind is the application's text: quote it back only if it is short and plain.
    std::string shown(kind.substr(0, 32));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    out.error =
        "unknown kind '" + shown + "' (migrate, verify, reset_mfa, rollback, finalize, status)";
    return out;
  }
  // What each kind reads from params: a selection, a run, or both (verify).
  const bool takes_selection = job.kind != JobKind::rollback && job.kind != JobKind::finalize;
  const bool takes_run =
      job.kind == JobKind::verify || job.kind == JobKind::rollback || job.kind == JobKind::finalize;
  // Which targets: the whole-table kinds; reset_mfa and status work on the first target.
  const bool takes_targets =
      job.kind == JobKind::migrate || job.kind == JobKind::verify || job.kind == JobKind::finalize;
  std::string fields = takes_selection && takes_run ? "ids, usernames, run_id"
                       : takes_run                  ? "run_id"
                                                    : "ids, usernames";
  if (takes_targets) fields += ", targets";
  if (!params_json.empty()) {
    nlohmann::json params = nlohmann::json::parse(params_json, nullptr, false);
    if (params.is_discarded()) {
      out.error = "params is not valid JSON";
      return out;
    }
    if (!params.is_null()) {
      if (!params.is_object()) {
        out.error = "params must be a JSON object";
        return out;
      }
      for (const auto& item : params.items()) {
        const bool selection_field = item.key() == "ids" || item.key() == "usernames";
        if (!(selection_field && takes_selection) && !(item.key() == "run_id" && takes_run) &&
            !(item.key() == "targets" && takes_targets)) {
          out.error = "unknown params field for " + std::string(kind) + " (" + fields + ")";
          return out;
        }
      }
      if (!read_list(params, "ids", true, job.selection.ids, out.error) ||
          !read_list(params, "usernames", false, job.selection.usernames, out.error) ||
          !read_list(params, "targets", false, job.targets, out.error))
        return out;
      for (const auto& name : job.targets)
        if (!config::valid_target_name(name)) {
          out.error = "params.targets must hold target names (letters, digits, - _ .)";
          return out;
        }
      if (auto it = params.find("run_id"); it != params.end() && !it->is_null()) {
        if (!it->is_string() || !plain_run_id(it->get<std::string>())) {
          out.error = "params.run_id must be a run id (letters, digits, - _ . :)";
          return out;
        }
        job.run_id = it->get<std::string>();
      }
    }
  }
  if (job.kind == JobKind::reset_mfa && job.selection.empty()) {
    out.error = "reset_mfa needs params.ids or params.usernames: it never resets everyone";
    return out;
  }
  if ((job.kind == JobKind::rollback || job.kind == JobKind::finalize) && job.run_id.empty()) {
    out.error = std::string(kind) + " needs params.run_id: the run to " +
                (job.kind == JobKind::rollback ? "undo" : "finalize") + " (as `keymig " +
                std::string(kind) + " --run ID`)";
    return out;
  }
  out.job = std::move(job);
  return out;
}

std::chrono::system_clock::time_point next_daily_run(std::chrono::system_clock::time_point now,
                                                     int minute_of_day) {
  using namespace std::chrono;
  // system_clock counts UTC seconds without leap seconds, so days are exactly 86400 s.
  auto since_epoch = duration_cast<seconds>(now.time_since_epoch());
  auto day_start = since_epoch - since_epoch % hours(24);
  if (since_epoch.count() < 0 && since_epoch % hours(24) != seconds(0)) day_start -= hours(24);
  auto candidate = system_clock::time_point(day_start + minutes(minute_of_day));
  while (candidate <= now) candidate += hours(24);
  return candidate;
}

}  // namespace keymig::service
