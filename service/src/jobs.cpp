#include "keymig/service/jobs.hpp"

#include <nlohmann/json.hpp>

namespace keymig::service {

const char* job_kind_name(JobKind kind) noexcept {
  switch (kind) {
    case JobKind::migrate:
      return "migrate";
    case JobKind::verify:
      return "verify";
    case JobKind::reset_mfa:
      return "reset_mfa";
  }
  return "unknown";
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

}  // namespace

ParsedRequest parse_request(std::string_view kind, std::string_view params_json) {
  ParsedRequest out;
  Job job;
  job.source = "request";
  if (kind == "migrate") {
    job.kind = JobKind::migrate;
  } else if (kind == "verify") {
    job.kind = JobKind::verify;
  } else if (kind == "reset_mfa") {
    job.kind = JobKind::reset_mfa;
  } else {
    // The kind is the application's text: quote it back only if it is short and plain.
    std::string shown(kind.substr(0, 32));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    out.error = "unknown kind '" + shown + "' (migrate, verify, reset_mfa)";
    return out;
  }
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
        if (item.key() != "ids" && item.key() != "usernames") {
          out.error = "unknown params field (ids, usernames)";
          return out;
        }
      }
      if (!read_list(params, "ids", true, job.selection.ids, out.error) ||
          !read_list(params, "usernames", false, job.selection.usernames, out.error))
        return out;
    }
  }
  if (job.kind == JobKind::reset_mfa && job.selection.empty()) {
    out.error = "reset_mfa needs params.ids or params.usernames: it never resets everyone";
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
