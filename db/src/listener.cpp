#include "keymig/db/listener.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "keymig/db/connection.hpp"
#include "keymig/text.hpp"

namespace keymig::db {

namespace {

// libpq's host, hostaddr and port lists: comma-separated, entries may be empty; an unset
// list has no entries.
std::vector<std::string> split_libpq_list(const std::string& list) {
  return list.empty() ? std::vector<std::string>() : split_list(list);
}

ListenStep wait_for(PostgresPollingStatusType status) {
  return status == PGRES_POLLING_READING ? ListenStep::wait_read : ListenStep::wait_write;
}

}  // namespace

// PQconnectPoll applies no connect_timeout, so within one connect a silent first host
// would use up the caller's deadline and the next never be tried; libpq's blocking
// connect gives each host connect_timeout, and one attempt per host does the same.
std::vector<ConnectParams> split_hosts(const std::string& dsn) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (error) PQfreemem(error);
  if (!options) return {};
  ConnectParams common;
  std::string host, hostaddr, port;
  for (auto* o = options; o->keyword; ++o) {
    if (!o->val) continue;
    const std::string_view k = o->keyword;
    if (k == "host")
      host = o->val;
    else if (k == "hostaddr")
      hostaddr = o->val;
    else if (k == "port")
      port = o->val;
    else
      common.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(options);
  auto from_env = [](std::string& value, const char* name) {
    const char* v = std::getenv(name);
    if (value.empty() && v) value = v;
  };
  from_env(host, "PGHOST");
  from_env(hostaddr, "PGHOSTADDR");
  from_env(port, "PGPORT");
  const auto hosts = split_libpq_list(host), addrs = split_libpq_list(hostaddr),
             ports = split_libpq_list(port);
  const std::size_t n = std::max(hosts.size(), addrs.size());
  if (n <= 1) return {};
  std::vector<ConnectParams> attempts;
  for (std::size_t i = 0; i < n; ++i) {
    ConnectParams p = common;
    if (i < hosts.size()) p.emplace_back("host", hosts[i]);
    if (i < addrs.size()) p.emplace_back("hostaddr", addrs[i]);
    if (ports.size() == 1)
      p.emplace_back("port", ports[0]);
    else if (i < ports.size())
      p.emplace_back("port", ports[i]);
    attempts.push_back(std::move(p));
  }
  return attempts;
}

ListenSession::ListenSession(std::string channel, std::string application_name)
    : channel_(std::move(channel)), application_name_(std::move(application_name)) {}

ListenSession::~ListenSession() {
  close();
}

void ListenSession::close() noexcept {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  phase_ = Phase::idle;
}

ListenStep ListenSession::connect(const std::string& dsn) {
  close();
  dsn_ = dsn;
  hosts_ = split_hosts(dsn);
  host_ = 0;
  return start_attempt();
}

bool ListenSession::has_next_host() const noexcept {
  return host_ + 1 < hosts_.size();
}

ListenStep ListenSession::connect_next_host() {
  close();
  if (has_next_host()) ++host_;
  return start_attempt();
}

ListenStep ListenSession::start_attempt() {
  error_.clear();
  if (hosts_.empty()) {
    conn_ = PQconnectStart(dsn_.c_str());
  } else {
    std::vector<const char*> keywords, values;
    for (const auto& [k, v] : hosts_[host_]) {
      keywords.push_back(k.c_str());
      values.push_back(v.c_str());
    }
    keywords.push_back(nullptr);
    values.push_back(nullptr);
    conn_ = PQconnectStartParams(keywords.data(), values.data(), 0);
  }
  if (!conn_) return fail("out of memory");
  if (PQstatus(conn_) == CONNECTION_BAD) return fail(one_line(PQerrorMessage(conn_)));
  phase_ = Phase::connecting;
  // libpq: after PQconnectStart, wait as if PQconnectPoll had returned WRITING.
  return ListenStep::wait_write;
}

ListenStep ListenSession::fail(std::string why) {
  // libpq's messages about the DSN may quote it, password included.
  error_ = redact_connection_message(std::move(why), dsn_);
  close();
  return ListenStep::failed;
}

ListenStep ListenSession::step() {
  switch (phase_) {
    case Phase::connecting:
      switch (const auto status = PQconnectPoll(conn_)) {
        case PGRES_POLLING_OK:
          return send_listen();
        case PGRES_POLLING_READING:
        case PGRES_POLLING_WRITING:
          return wait_for(status);
        default:
          return fail(one_line(PQerrorMessage(conn_)));
      }
    case Phase::awaiting_listen:
      return read_listen_reply();
    case Phase::listening:
      return ListenStep::listening;
    case Phase::idle:
      break;
  }
  return fail(error_.empty() ? "not connecting" : error_);
}

ListenStep ListenSession::send_listen() {
  char* name = PQescapeLiteral(conn_, application_name_.data(), application_name_.size());
  char* channel = PQescapeIdentifier(conn_, channel_.data(), channel_.size());
  std::string sql;
  if (name && channel) sql = std::string("SET application_name = ") + name + "; LISTEN " + channel;
  if (name) PQfreemem(name);
  if (channel) PQfreemem(channel);
  if (sql.empty() || !PQsendQuery(conn_, sql.c_str())) return fail(one_line(PQerrorMessage(conn_)));
  phase_ = Phase::awaiting_listen;
  return ListenStep::wait_read;
}

ListenStep ListenSession::read_listen_reply() {
  if (!PQconsumeInput(conn_)) return fail(one_line(PQerrorMessage(conn_)));
  if (PQisBusy(conn_)) return ListenStep::wait_read;
  bool ok = true;
  std::string why;
  while (PGresult* res = PQgetResult(conn_)) {
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      ok = false;
      why = one_line(PQresultErrorMessage(res));
    }
    PQclear(res);
  }
  if (!ok) return fail(why);
  phase_ = Phase::listening;
  return ListenStep::listening;
}

std::optional<int> ListenSession::consume() {
  if (phase_ != Phase::listening) {
    error_ = "not listening";
    return std::nullopt;
  }
  if (!PQconsumeInput(conn_)) {
    error_ = redact_connection_message(one_line(PQerrorMessage(conn_)), dsn_);
    return std::nullopt;
  }
  int count = 0;
  while (PGnotify* n = PQnotifies(conn_)) {
    ++count;
    PQfreemem(n);
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    error_ = redact_connection_message(one_line(PQerrorMessage(conn_)), dsn_);
    return std::nullopt;
  }
  return count;
}

int ListenSession::socket() const noexcept {
  return conn_ ? PQsocket(conn_) : -1;
}

std::chrono::seconds ListenSession::connect_timeout() const {
  // connect_timeout from the DSN or PGCONNECT_TIMEOUT (serve sets 10 s when unset).
  long seconds = 0;
  if (conn_) {
    if (PQconninfoOption* info = PQconninfo(conn_)) {
      for (auto* o = info; o->keyword; ++o)
        if (std::string_view(o->keyword) == "connect_timeout" && o->val && *o->val)
          seconds = std::strtol(o->val, nullptr, 10);
      PQconninfoFree(info);
    }
  }
  // libpq treats 0 as "wait forever"; a connect that never ends would never be retried.
  return std::chrono::seconds(seconds >= 2 ? seconds : (seconds > 0 ? 2 : 10));
}

std::string ListenSession::host_label() const {
  if (hosts_.empty()) return {};
  std::string label;
  for (const auto& [k, v] : hosts_[host_])
    if (k == "host" || k == "hostaddr" || k == "port")
      label += (label.empty() ? "" : " ") + k + "=" + v;
  return label;
}

}  // namespace keymig::db
