#include "keymig/db/connection.hpp"

#include <libpq-fe.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#include "keymig/log.hpp"
#include "keymig/redact.hpp"
#include "keymig/text.hpp"
#include "pq.hpp"

namespace keymig::db {

namespace {

// "%41" -> "A": a URI's password as libpq decoded it, to be found in a message too.
std::string percent_decoded(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The password as written in a URI ("scheme://user:PASSWORD@host"), found by hand: a URI
// libpq cannot parse has no password libpq could hand back.
std::string uri_password(std::string_view dsn) {
  const auto scheme = dsn.find("://");
  if (scheme == std::string_view::npos) return {};
  std::string_view rest = dsn.substr(scheme + 3);
  const auto at = rest.rfind('@');
  if (at == std::string_view::npos) return {};
  rest = rest.substr(0, at);
  const auto colon = rest.find(':');
  return colon == std::string_view::npos ? std::string() : std::string(rest.substr(colon + 1));
}

// Every word after "password=" in a key=value DSN, however it is quoted: "password=SEC
// RET" is what makes libpq fail, and its message quotes "RET".
std::vector<std::string> keyword_password_words(std::string_view dsn) {
  std::vector<std::string> words;
  auto at = dsn.find("password");
  while (at != std::string_view::npos) {
    std::size_t i = at + 8;
    while (i < dsn.size() && dsn[i] == ' ') ++i;
    if (i < dsn.size() && dsn[i] == '=') {
      // To the next "keyword=" or the end: all of it may be the password.
      std::string_view value = dsn.substr(i + 1);
      std::size_t start = 0;
      while (start < value.size()) {
        const auto delimiter = [](char c) { return c == ' ' || c == '\'' || c == '&'; };
        while (start < value.size() && delimiter(value[start])) ++start;
        std::size_t end = start;
        while (end < value.size() && !delimiter(value[end])) ++end;
        const std::string_view word = value.substr(start, end - start);
        if (word.find('=') != std::string_view::npos) break;
        if (!word.empty()) words.emplace_back(word);
        start = end;
      }
    }
    at = dsn.find("password", at + 8);
  }
  return words;
}

}  // namespace

std::string redact_connection_message(std::string message, const std::string& dsn) {
  std::vector<std::string> secrets;
  if (!dsn.empty()) secrets.push_back(dsn);
  char* error = nullptr;
  if (PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error)) {
    for (auto* o = options; o->keyword; ++o)
      if (o->val && std::string_view(o->keyword) == "password") secrets.emplace_back(o->val);
    PQconninfoFree(options);
  }
  if (error) PQfreemem(error);
  const std::string raw = uri_password(dsn);
  if (!raw.empty()) {
    secrets.push_back(raw);
    secrets.push_back(percent_decoded(raw));
  }
  for (auto& w : keyword_password_words(dsn)) secrets.push_back(std::move(w));
  if (const char* env = std::getenv("PGPASSWORD"); env && *env) secrets.emplace_back(env);
  // Longest first, so that a password's part never leaves the rest of it behind.
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& secret : secrets) message = remove_secret(std::move(message), secret);
  return scrub_tokens(message);
}

std::string configured_database(const std::string& dsn) {
  std::string dbname;
  std::string user;
  char* error = nullptr;
  if (PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error)) {
    for (auto* o = options; o->keyword; ++o) {
      if (!o->val) continue;
      const std::string_view keyword(o->keyword);
      if (keyword == "dbname") dbname = o->val;
      if (keyword == "user") user = o->val;
    }
    PQconninfoFree(options);
  }
  if (error) PQfreemem(error);
  const auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  if (dbname.empty()) dbname = env("PGDATABASE");
  if (dbname.empty()) dbname = user.empty() ? env("PGUSER") : user;
  if (dbname.empty()) {
    if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_name) dbname = pw->pw_name;
  }
  // A dbname that is itself a connection string would carry its password into a label.
  if (dbname.find('=') != std::string::npos || dbname.find("://") != std::string::npos) return {};
  return dbname;
}

std::string database_name(Connection& conn) {
  return guarded(conn, "reading the database name",
                 [](pqxx::connection& c) { return std::string(c.dbname()); });
}

bool dsn_configured(const std::string& dsn) {
  if (!dsn.empty()) return true;
  for (const char* name : {"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"})
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') return true;
  return false;
}

void check_dsn(const std::string& dsn) {
  if (!dsn_configured(dsn))
    throw DsnError(
        "no database configured: pass --dsn, set keyMigration.database.dsn in values.yaml, or "
        "set libpq's PGHOST / PGPORT / PGDATABASE / PGUSER (or PGSERVICE) environment "
        "variables");
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (options) {
    PQconninfoFree(options);
    if (error) PQfreemem(error);
    return;
  }
  // libpq quotes the part it choked on, which may be the password: every quoted part
  // goes, then anything of the DSN that is left.
  std::string why = error ? one_line(error) : std::string("out of memory");
  if (error) PQfreemem(error);
  why = redact_connection_message(strip_quoted(why), dsn);
  throw DsnError(
      "the DSN (--dsn, keyMigration.database.dsn) is not a libpq connection string "
      "or URI libpq can parse: " +
      why +
      " (write key=value pairs, quoting values with spaces in single quotes, or "
      "postgresql://user@host/db with the password in PGPASSWORD or ~/.pgpass)");
}

pqxx::connection& Connection::Impl::get() {
  if (!conn || !conn->is_open()) throw DbError("not connected to PostgreSQL", "08003", true);
  return *conn;
}

void Connection::Impl::open() {
  conn.reset();
  prepared.clear();
  check_dsn(options.dsn);
  try {
    auto c = std::make_unique<pqxx::connection>(options.dsn);
    // Timeouts as session settings so every statement of this session is bounded: a
    // lock held by the application makes keymig wait at most lock_timeout, then retry.
    pqxx::nontransaction tx(*c);
    tx.exec("SET application_name = 'keymig'; SET lock_timeout = " +
            tx.quote(std::to_string(options.lock_timeout.count()) + "ms") +
            "; SET statement_timeout = " +
            tx.quote(std::to_string(options.statement_timeout.count()) + "ms"));
    tx.commit();
    conn = std::move(c);
  } catch (...) {
    try {
      rethrow_translated("connecting to PostgreSQL", /*connecting=*/true);
    } catch (const DbError& e) {
      throw DbError(redact_connection_message(e.what(), options.dsn), e.sqlstate(), e.retryable());
    }
  }
}

std::string prepared(Connection::Impl& impl, const std::string& sql) {
  std::string name = "keymig_" + std::to_string(std::hash<std::string>{}(sql));
  if (impl.prepared.count(name) == 0) {
    // Recorded once the server has it: a failed PREPARE must be retried, not assumed.
    impl.get().prepare(name, sql);
    impl.prepared.insert(name);
  }
  return name;
}

Connection::Connection(ConnectOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->open();
}
Connection::~Connection() = default;
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;

void Connection::reconnect() {
  KEYMIG_LOG(info, "db", "reconnect");
  impl_->open();
}

int Connection::backend_pid() const {
  return impl_->get().backendpid();
}

const ConnectOptions& Connection::options() const noexcept {
  return impl_->options;
}

}  // namespace keymig::db
