// serve's run control over HTTP: POST /control/pause, /control/resume, /control/throttle
// (docs/DESIGN.md section 2, "Run control"). They change what every run does, so they are
// off (404) unless keyMigration.control.tokenFile names a bearer token, and each change is
// logged with the client's address. The token itself is never logged nor echoed.

#include <cstdint>

#include "keymig/ids.hpp"
#include "keymig/log.hpp"
#include "service_impl.hpp"

namespace keymig::service {

namespace {

// Constant-time in the token's content: a compare that stops at the first difference
// tells a remote client, by its timing, how much of its guess was right. The length may
// leak (the token file's size is no secret worth a padded compare).
bool same_token(std::string_view given, std::string_view expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  const std::size_t n = expected.size();
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

HttpResponse text(int status, const std::string& body) {
  return {status, "text/plain; charset=utf-8", body + "\n"};
}

// {"max_rows_per_second": N, "batch_size": N}: at least one, each in values.yaml's bounds.
// Returns the problem ("" when fine).
std::string parse_retune(const std::string& body, std::optional<std::int64_t>& rate,
                         std::optional<std::int64_t>& batch) {
  const json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return "expected a JSON object like {\"max_rows_per_second\": 500, \"batch_size\": 1000}";
  for (const auto& [key, value] : doc.items()) {
    std::int64_t min = 0, max = 0;
    std::optional<std::int64_t>* out = nullptr;
    if (key == "max_rows_per_second") {
      min = 0;
      max = config::kMaxRowsPerSecond;
      out = &rate;
    } else if (key == "batch_size") {
      min = 1;
      max = config::kMaxBatchSize;
      out = &batch;
    } else {
      return "unknown key '" + one_line(key).substr(0, 64) +
             "' (known: max_rows_per_second, batch_size)";
    }
    if (!value.is_number_integer())
      return key + ": expected a whole number " + std::to_string(min) + "-" + std::to_string(max);
    const auto v = value.get<std::int64_t>();
    if (v < min || v > max)
      return key + ": " + std::to_string(v) + " is out of range " + std::to_string(min) + "-" +
             std::to_string(max) + (key == "max_rows_per_second" ? " (0: unthrottled)" : "");
    *out = v;
  }
  if (!rate && !batch) return "give max_rows_per_second and/or batch_size";
  return {};
}

}  // namespace

json Service::Impl::control_json() const {
  const auto s = current_settings();
  const auto state = control->state();
  const auto& m = s->config.migration;
  json doc = {{"enabled", m.control.token != nullptr},
              {"paused", state.paused},
              {"max_rows_per_second", control->rows_per_second(m.max_rows_per_second)},
              {"batch_size", control->batch_size(m.batch_size)},
              {"since", nullptr}};
  if (state.since != std::chrono::system_clock::time_point{}) {
    doc["since"] = iso8601_utc(state.since);
    doc["by"] = state.by;
  }
  return doc;
}

HttpResponse Service::Impl::handle_control(const HttpRequest& request) {
  const auto s = current_settings();
  const auto token = s->config.migration.control.token;
  // Off: as if the routes did not exist, so a scan learns nothing of them.
  if (!token) return text(404, "not found");
  if (request.method != "POST") {
    HttpResponse r = text(405, "use POST");
    r.allow = "POST";
    return r;
  }
  constexpr std::string_view kScheme = "Bearer ";
  const std::string& auth = request.authorization;
  if (auth.size() <= kScheme.size() || auth.compare(0, kScheme.size(), kScheme) != 0) {
    KEYMIG_LOG(warn, "service", "control_refused", {"path", request.path}, {"by", request.remote},
               {"status", 401});
    HttpResponse r = text(401, "an Authorization: Bearer <token> header is required");
    r.www_authenticate = "Bearer realm=\"keymig\"";
    return r;
  }
  if (!same_token(std::string_view(auth).substr(kScheme.size()), token->view())) {
    KEYMIG_LOG(warn, "service", "control_refused", {"path", request.path}, {"by", request.remote},
               {"status", 403});
    return text(403, "wrong token");
  }
  const std::string by = request.remote.empty() ? "unknown" : request.remote;
  if (request.path == "/control/pause") {
    control->pause(by);
  } else if (request.path == "/control/resume") {
    control->resume(by);
  } else if (request.path == "/control/throttle") {
    std::optional<std::int64_t> rate, batch;
    if (const std::string problem = parse_retune(request.body, rate, batch); !problem.empty()) {
      KEYMIG_LOG(warn, "service", "control_refused", {"path", request.path}, {"by", by},
                 {"status", 400}, {"error", problem});
      return text(400, problem);
    }
    control->retune(rate, batch, by);
  } else {
    return text(404, "not found (POST /control/pause, /control/resume, /control/throttle)");
  }
  const json state = control_json();
  KEYMIG_LOG(info, "service", "control_changed", {"action", request.path.substr(9)}, {"by", by},
             {"paused", state["paused"].get<bool>()},
             {"max_rows_per_second", state["max_rows_per_second"].get<std::int64_t>()},
             {"batch_size", state["batch_size"].get<std::int64_t>()},
             {"run_in_progress", !current_is_null()});
  return {200, "application/json", state.dump() + "\n"};
}

}  // namespace keymig::service
