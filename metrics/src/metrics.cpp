#include "keymig/metrics/metrics.hpp"

#include <curl/curl.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "keymig/log.hpp"
#include "push_url.hpp"

#ifndef KEYMIG_VERSION
#define KEYMIG_VERSION "unknown"
#endif

namespace keymig::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

constexpr std::array<std::string_view, 8> kOutcomes = {"rotated",  "already_active", "flag_fixed",
                                                       "empty",    "undecryptable",  "conflict",
                                                       "rejected", "rewritten"};
// The statuses a batch ends in; created at 0 with the target.
constexpr std::array<std::string_view, 2> kStatuses = {"ok", "failed"};
constexpr std::array<std::string_view, 4> kOps = {"classify", "decrypt", "encrypt", "verify"};
constexpr std::array<std::string_view, 6> kCommands = {"migrate",  "verify",   "scan",
                                                       "rollback", "finalize", "reset_mfa"};
// Why migrate waits before a batch (engine/src/throttle.cpp).
// paused: an operator's POST /control/pause; adaptive: the batch latency rose above its median.
constexpr std::array<std::string_view, 5> kThrottleReasons = {
    "flag_file", "replica_lag", "active_sessions", "paused", "adaptive"};
constexpr std::string_view kOther = "other";
constexpr std::size_t kMaxWarnings = 64;

// A batch is one short transaction of up to a few thousand rows: from a millisecond on an
// idle local database to a minute when the server is saturated or a lock waits.
const Histogram::BucketBoundaries kBatchBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

template <std::size_t N>
bool contains(const std::array<std::string_view, N>& set, std::string_view value) {
  return std::find(set.begin(), set.end(), value) != set.end();
}

// rolling_0 .. rolling_999: one per configured rolling key, so bounded by the config.
bool is_key_label(std::string_view key) {
  if (key == "active" || key == "undecryptable" || key == "acknowledged" || key == "empty")
    return true;
  constexpr std::string_view kRolling = "rolling_";
  if (key.substr(0, kRolling.size()) != kRolling) return false;
  const auto digits = key.substr(kRolling.size());
  return !digits.empty() && digits.size() <= 3 &&
         std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Keeps only the series that agree with the grouping key (their target, their command,
// and the ones without those labels): the Pushgateway rejects a push whose series carry
// a grouping label with another value as inconsistent.
class GroupFilter : public prometheus::Collectable {
 public:
  GroupFilter(std::shared_ptr<prometheus::Registry> registry,
              std::map<std::string, std::string> group)
      : registry_(std::move(registry)), group_(std::move(group)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    auto families = registry_->Collect();
    for (auto& family : families) {
      auto& metrics = family.metric;
      metrics.erase(std::remove_if(metrics.begin(), metrics.end(),
                                   [&](const prometheus::ClientMetric& m) {
                                     for (const auto& label : m.label) {
                                       const auto it = group_.find(label.name);
                                       if (it != group_.end() && it->second != label.value) {
                                         return true;
                                       }
                                     }
                                     return false;
                                   }),
                    metrics.end());
    }
    return families;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::map<std::string, std::string> group_;  // label name -> value, not URL-encoded
};

std::string curl_cause(int code) {
  switch (code) {
    case 6:
      return "could not resolve the host";
    case 7:
      return "could not connect";
    case 28:
      return "timed out";
    case 35:
    case 60:
      return "TLS handshake or certificate failed";
    case 52:
      return "the server sent no reply";
    case 56:
      return "the connection was reset";
    default:
      return "transfer failed";
  }
}

}  // namespace

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  int runs_in_progress = 0;  // under mutex: commands between start and end

  Family<Counter>& rows_total = prometheus::BuildCounter()
                                    .Name("keymig_rows_total")
                                    .Help("Rows processed, by target and outcome.")
                                    .Register(*registry);
  Family<Gauge>& rows_by_key =
      prometheus::BuildGauge()
          .Name("keymig_rows_by_key")
          .Help("Rows by the key that encrypts them, from the last scan, migrate or verify.")
          .Register(*registry);
  Family<Counter>& batches_total = prometheus::BuildCounter()
                                       .Name("keymig_batches_total")
                                       .Help("Batches written, by target and status.")
                                       .Register(*registry);
  Histogram& batch_duration = prometheus::BuildHistogram()
                                  .Name("keymig_batch_duration_seconds")
                                  .Help("Wall time of one batch transaction.")
                                  .Register(*registry)
                                  .Add({}, kBatchBuckets);
  Family<Gauge>& progress = prometheus::BuildGauge()
                                .Name("keymig_run_progress_ratio")
                                .Help("Share of the current run's rows done, 0 to 1.")
                                .Register(*registry);
  Family<Gauge>& remaining = prometheus::BuildGauge()
                                 .Name("keymig_rows_remaining")
                                 .Help("Rows the current run has still to read.")
                                 .Register(*registry);
  Family<Gauge>& progress_updated =
      prometheus::BuildGauge()
          .Name("keymig_run_progress_updated_timestamp_seconds")
          .Help(
              "Unix time keymig_run_progress_ratio was last set: a value kept by a "
              "Pushgateway since its run ended is old.")
          .Register(*registry);
  Family<Gauge>& journal_rows =
      prometheus::BuildGauge()
          .Name("keymig_journal_rows")
          .Help("Rows in keymig.journal (old-key ciphertext kept for rollback), by target.")
          .Register(*registry);
  Family<Gauge>& journal_oldest =
      prometheus::BuildGauge()
          .Name("keymig_journal_oldest_seconds")
          .Help(
              "Seconds since the last activity of the longest-idle run that still has "
              "journal rows, by target; 0 when there is none.")
          .Register(*registry);
  Family<Counter>& crypto_ops = prometheus::BuildCounter()
                                    .Name("keymig_crypto_operations_total")
                                    .Help("Fernet operations, by op.")
                                    .Register(*registry);
  Counter& db_retries = prometheus::BuildCounter()
                            .Name("keymig_db_retries_total")
                            .Help("Database transactions retried after a transient error.")
                            .Register(*registry)
                            .Add({});
  Family<Gauge>& last_success = prometheus::BuildGauge()
                                    .Name("keymig_last_success_timestamp_seconds")
                                    .Help("Unix time of the last successful run, by command.")
                                    .Register(*registry);
  Family<Gauge>& last_run_success =
      prometheus::BuildGauge()
          .Name("keymig_last_run_success")
          .Help("1 if the latest run of the command succeeded, 0 if it failed.")
          .Register(*registry);
  Gauge& run_in_progress = prometheus::BuildGauge()
                               .Name("keymig_run_in_progress")
                               .Help("1 while a run is going on.")
                               .Register(*registry)
                               .Add({});
  Family<Gauge>& throttled =
      prometheus::BuildGauge()
          .Name("keymig_throttled")
          .Help("1 while migrate waits before its next batch for this reason, else 0.")
          .Register(*registry);
  Family<Counter>& throttled_seconds =
      prometheus::BuildCounter()
          .Name("keymig_throttled_seconds_total")
          .Help("Seconds migrate waited before batches, by reason.")
          .Register(*registry);

  std::mutex mutex;                          // guards the sets below
  std::set<std::string> targets;             // targets whose series exist
  std::set<std::string> warned;              // label values already reported as unknown
  std::set<std::string> commands;            // commands whose result was recorded
  std::string target;                        // set_target's last label
  std::vector<std::string> command_targets;  // every label set_target recorded
  std::string database;                      // set_database's last name

  Impl() {
    prometheus::BuildGauge()
        .Name("keymig_build_info")
        .Help("Always 1; the version label names the keymig build.")
        .Register(*registry)
        .Add({{"version", KEYMIG_VERSION}})
        .Set(1);
    for (auto op : kOps) crypto_ops.Add({{"op", std::string(op)}});
    for (auto reason : kThrottleReasons) {
      throttled.Add({{"reason", std::string(reason)}});
      throttled_seconds.Add({{"reason", std::string(reason)}});
    }
  }

  // Creates every outcome and status of a new target at 0, so that the first increment is
  // a visible change for rate() and increase() instead of a series appearing from nothing.
  void ensure_target(const std::string& target) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!targets.insert(target).second) return;
    }
    for (auto outcome : kOutcomes) {
      rows_total.Add({{"target", target}, {"outcome", std::string(outcome)}});
    }
    for (auto status : kStatuses) {
      batches_total.Add({{"target", target}, {"status", std::string(status)}});
    }
  }

  std::string record_command(std::string_view command) {
    auto c = bounded("command", command, contains(kCommands, command));
    std::lock_guard<std::mutex> lock(mutex);
    commands.insert(c);
    return c;
  }

  std::string bounded(std::string_view label, std::string_view value, bool known) {
    if (known) return std::string(value);
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      // A caller looping over unbounded values must not grow memory or flood the log.
      if (warned.size() < kMaxWarnings) {
        first = warned.insert(std::string(label) + '=' + std::string(value)).second;
      }
    }
    if (first) {
      // Only a short, plain value is repeated: a wrong argument could be anything, and a
      // log line must never carry a key or a token.
      const bool plain =
          value.size() <= 32 && std::all_of(value.begin(), value.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
          });
      KEYMIG_LOG(warn, "metrics", "unknown_label_value", {"label", label},
                 {"value", plain ? value : std::string_view("(not shown)")},
                 {"value_length", value.size()}, {"counted_as", kOther});
    }
    return std::string(kOther);
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::add_rows(std::string_view target, std::string_view outcome, std::uint64_t n) {
  const std::string t(target);
  impl_->ensure_target(t);
  impl_->rows_total
      .Add({{"target", t},
            {"outcome", impl_->bounded("outcome", outcome, contains(kOutcomes, outcome))}})
      .Increment(static_cast<double>(n));
}

void Metrics::set_rows_by_key(std::string_view target, std::string_view key, double rows) {
  impl_->rows_by_key
      .Add(
          {{"target", std::string(target)}, {"key", impl_->bounded("key", key, is_key_label(key))}})
      .Set(rows);
}

void Metrics::observe_batch(std::string_view target, std::string_view status, double seconds) {
  const std::string t(target);
  impl_->ensure_target(t);
  impl_->batches_total
      .Add({{"target", t},
            {"status", impl_->bounded("status", status, contains(kStatuses, status))}})
      .Increment();
  impl_->batch_duration.Observe(seconds);
}

void Metrics::set_progress(double ratio, double rows_remaining) {
  const std::string t = target();
  const std::map<std::string, std::string> labels =
      t.empty() ? std::map<std::string, std::string>{}
                : std::map<std::string, std::string>{{"target", t}};
  impl_->progress.Add(labels).Set(std::clamp(ratio, 0.0, 1.0));
  impl_->remaining.Add(labels).Set(std::max(rows_remaining, 0.0));
  impl_->progress_updated.Add(labels).Set(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void Metrics::set_journal(std::string_view target, double rows, double oldest_seconds) {
  const std::string t(target);
  impl_->journal_rows.Add({{"target", t}}).Set(std::max(rows, 0.0));
  impl_->journal_oldest.Add({{"target", t}}).Set(std::max(oldest_seconds, 0.0));
}

void Metrics::add_crypto_operations(std::string_view op, std::uint64_t n) {
  impl_->crypto_ops.Add({{"op", impl_->bounded("op", op, contains(kOps, op))}})
      .Increment(static_cast<double>(n));
}

void Metrics::add_db_retry() {
  impl_->db_retries.Increment();
}

void Metrics::set_last_success(std::string_view command, double unix_seconds) {
  const auto c = impl_->record_command(command);
  impl_->last_success.Add({{"command", c}}).Set(unix_seconds);
  impl_->last_run_success.Add({{"command", c}}).Set(1);
}

void Metrics::set_last_failure(std::string_view command) {
  const auto c = impl_->record_command(command);
  impl_->last_run_success.Add({{"command", c}}).Set(0);
}

void Metrics::set_run_in_progress(bool running) {
  // serve runs a selected-user request beside a whole-table run: the gauge stays 1 until
  // the last of them ends.
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->runs_in_progress = std::max(0, impl_->runs_in_progress + (running ? 1 : -1));
  impl_->run_in_progress.Set(impl_->runs_in_progress > 0 ? 1 : 0);
}

void Metrics::set_throttled(std::string_view reason, bool on) {
  impl_->throttled
      .Add({{"reason", impl_->bounded("reason", reason, contains(kThrottleReasons, reason))}})
      .Set(on ? 1 : 0);
}

void Metrics::add_throttled_seconds(std::string_view reason, double seconds) {
  if (seconds <= 0) return;
  impl_->throttled_seconds
      .Add({{"reason", impl_->bounded("reason", reason, contains(kThrottleReasons, reason))}})
      .Increment(seconds);
}

void Metrics::set_target(std::string_view target, std::string_view replaces) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->target = std::string(target);
  auto& all = impl_->command_targets;
  all.erase(std::remove(all.begin(), all.end(), target), all.end());
  if (auto it = std::find(all.begin(), all.end(), replaces); !replaces.empty() && it != all.end())
    *it = impl_->target;
  else
    all.push_back(impl_->target);
}

std::vector<std::string> Metrics::targets() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->command_targets;
}

std::string Metrics::target() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->target;
}

void Metrics::set_database(std::string_view database) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->database = std::string(database);
}

std::string Metrics::serialize() const {
  return prometheus::TextSerializer{}.Serialize(impl_->registry->Collect());
}

void Metrics::write_textfile(const std::string& path) const {
  const std::string body = serialize();
  // The temp name does not end in .prom, so node_exporter never reads it half-written;
  // it sits in the same directory, so rename() replaces the file atomically.
  std::string temp = path + ".XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    throw MetricsError("cannot write metrics textfile " + path + ": " + std::strerror(errno));
  }
  auto fail = [&](const char* step) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    throw MetricsError("cannot write metrics textfile " + path + " (" + step +
                       "): " + std::strerror(err));
  };
  // mkstemp makes it 0600; node_exporter usually runs as another user.
  if (::fchmod(fd, 0644) != 0) fail("chmod");
  std::size_t done = 0;
  while (done < body.size()) {
    const ssize_t n = ::write(fd, body.data() + done, body.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    throw MetricsError("cannot write metrics textfile " + path + " (close): " + std::strerror(err));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    throw MetricsError("cannot write metrics textfile " + path +
                       " (rename): " + std::strerror(err));
  }
}

void Metrics::push(const std::string& gateway_url, std::string_view target) const {
  std::map<std::string, std::string> group{{"target", std::string(target)}};
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->commands.size() == 1) group.emplace("command", *impl_->commands.begin());
    if (!impl_->database.empty()) group.emplace("database", impl_->database);
  }
  push_grouped(gateway_url, group);
}

void Metrics::push(const std::string& gateway_url) const {
  const std::string recorded = target();
  if (recorded.empty())
    throw MetricsError("push to Pushgateway: no command recorded a target to group by");
  push(gateway_url, recorded);
}

void Metrics::push(const std::string& gateway_url, std::string_view target,
                   std::string_view command) const {
  std::map<std::string, std::string> group{
      {"target", std::string(target)},
      {"command", impl_->bounded("command", command, contains(kCommands, command))}};
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!impl_->database.empty()) group.emplace("database", impl_->database);
  }
  push_grouped(gateway_url, group);
}

void Metrics::push_grouped(const std::string& gateway_url,
                           const std::map<std::string, std::string>& group) const {
  const PushUrl url = parse_push_url(gateway_url);  // throws UsageError
  std::string uri = url.scheme_host + ":" + url.port + "/metrics/job/keymig";
  for (const auto& [name, value] : group) {
    const auto [key, encoded] = grouping_label(name, value);
    uri += "/" + key + "/" + encoded;
  }
  const std::string body =
      prometheus::TextSerializer().Serialize(GroupFilter(impl_->registry, group).Collect());

  // Our own request rather than prometheus::Gateway: 1.0 sets no timeout (a gateway that
  // accepts and never answers hung a one-shot run) and no write callback (curl printed
  // the gateway's reply on stdout, where `--json` promises one object). Here curl gives
  // up after the deadline itself, so no thread outlives the call.
  const std::string where = "push to Pushgateway " + url.display;
  static std::once_flag curl_ready;
  std::call_once(curl_ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  const std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(),
                                                                 &curl_easy_cleanup);
  if (!curl) throw MetricsError(where + " failed: cannot start an HTTP request");
  const std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(
      curl_slist_append(nullptr, "Content-Type: text/plain; version=0.0.4; charset=utf-8"),
      &curl_slist_free_all);
  CURL* const h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, uri.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for timeouts in a threaded process
  curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(kPushTimeoutSeconds));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  // POST: replaces the families it sends within the group, as Gateway::Push did.
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  if (!url.username.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(h, CURLOPT_USERNAME, url.username.c_str());
    // view() of the SecretString is its std::string, NUL-terminated.
    curl_easy_setopt(h, CURLOPT_PASSWORD, url.password.view().data());
  }
  using Discard = std::size_t (*)(char*, std::size_t, std::size_t, void*);
  const Discard discard = [](char*, std::size_t size, std::size_t n, void*) { return size * n; };
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);

  const CURLcode code = curl_easy_perform(h);
  if (code == CURLE_OPERATION_TIMEDOUT) {
    throw MetricsError(where + " failed: no answer within " + std::to_string(kPushTimeoutSeconds) +
                       " s");
  }
  if (code != CURLE_OK) {
    throw MetricsError(where + " failed: " + curl_cause(static_cast<int>(code)) + " (curl error " +
                       std::to_string(static_cast<int>(code)) + ")");
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status < 100 || status >= 400) {
    throw MetricsError(where + " failed: HTTP status " + std::to_string(status));
  }
  KEYMIG_LOG(info, "metrics", "pushed", {"gateway", url.display}, {"target", group.at("target")});
}

}  // namespace keymig::metrics
