// The HTTP routes and the /status document. Handlers run on the event loop and only read
// state the other threads keep up to date: no database round trip on a scrape.

#include <cstdio>

#include "keymig/ids.hpp"
#include "keymig/metrics/metrics.hpp"
#include "service_impl.hpp"

namespace keymig::service {

HttpResponse Service::Impl::handle(const HttpRequest& request) {
  if (request.path.rfind("/control/", 0) == 0) return handle_control(request);
  // POST reaches the handler for /control alone; everything else is read-only.
  if (request.method == "POST") return {405, "text/plain; charset=utf-8", "only GET and HEAD\n"};
  if (request.path == "/readyz") {
    // Ready means requests can be queued and will be seen: the LISTEN session is up and
    // keymig.requests exists. The config needs no check: a bad one is refused on reload
    // and the previous one stays in use.
    if (!db_up) return {503, "text/plain; charset=utf-8", "not ready: database unreachable\n"};
    return {200, "text/plain; charset=utf-8", "ready\n"};
  }
  if (request.path == "/status") return {200, "application/json", status() + "\n"};
  if (request.path == "/")
    return {200, "text/plain; charset=utf-8", "keymig serve: /metrics /healthz /readyz /status\n"};
  return metrics_handler(metrics)(request);  // /metrics, /healthz, and 404 for the rest
}

namespace {

nlohmann::json target_names(const std::vector<config::Target>& targets) {
  nlohmann::json names = nlohmann::json::array();
  for (const auto& t : targets) names.push_back(t.name);
  return names;
}

}  // namespace

std::string Service::Impl::status() const {
  json doc;
  {
    std::lock_guard<std::mutex> lock(settings_mu);
    const auto& m = settings->config.migration;
    json schedule = json::object();
    if (m.schedule.every) schedule["every_seconds"] = m.schedule.every->count();
    if (m.schedule.at_minute_of_day) {
      char at[16];
      std::snprintf(at, sizeof at, "%02d:%02d", *m.schedule.at_minute_of_day / 60,
                    *m.schedule.at_minute_of_day % 60);
      schedule["at_utc"] = at;
    }
    doc["config"] = {
        {"generation", generation},           {"loaded_at", iso8601_utc(loaded_at)},
        {"files", settings->config.files},    {"target", m.targets.front().table},
        {"targets", target_names(m.targets)}, {"key_fingerprints", settings->fingerprints}};
    if (!last_reload_error.empty()) doc["config"]["last_reload_error"] = last_reload_error;
    doc["schedule"] = schedule;
  }
  std::lock_guard<std::mutex> lock(status_mu);
  doc["instance"] = instance;
  doc["started_at"] = iso8601_utc(started_at);
  doc["ready"] = db_up.load();
  doc["database"] = db_up ? "up" : "down";
  doc["draining"] = stop_flag.load();
  // current_run: the main lane's job, else the selected lane's; current_runs: both.
  doc["current_run"] = main_lane.current.is_null() ? selected_lane.current : main_lane.current;
  doc["current_runs"] = json::array();
  for (const Lane* lane : {&main_lane, &selected_lane})
    if (!lane->current.is_null()) doc["current_runs"].push_back(lane->current);
  doc["last"] = last;
  if (next_scheduled) doc["schedule"]["next_run_at"] = iso8601_utc(*next_scheduled);
  doc["control"] = control_json();
  doc["requests"] = {
      {"done", requests_done}, {"failed", requests_failed}, {"requeued", requests_requeued}};
  return doc.dump();
}

bool Service::Impl::current_is_null() const {
  std::lock_guard<std::mutex> lock(status_mu);
  return main_lane.current.is_null() && selected_lane.current.is_null();
}

// The request's result and the /status record of a run share these fields.
json Service::Impl::result_json(const RunOutcome& out) {
  json result = json::object();
  if (!out.summary_json.empty()) {
    json summary = json::parse(out.summary_json, nullptr, false);
    if (summary.is_object()) result = std::move(summary);
  }
  result["succeeded"] = out.ok;  // not "ok": verify reports an "ok" row count
  result["exit_code"] = out.exit_code;
  if (out.interrupted) result["interrupted"] = true;
  if (!out.error.empty()) result["error"] = out.error;
  return result;
}

}  // namespace keymig::service
