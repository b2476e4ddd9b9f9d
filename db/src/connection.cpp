#include "keymig/db/connection.hpp"

#include <functional>
#include <utility>

#include "keymig/log.hpp"
#include "pq.hpp"

namespace keymig::db {

pqxx::connection& Connection::Impl::get() {
  if (!conn || !conn->is_open()) throw DbError("not connected to PostgreSQL", "08003", true);
  return *conn;
}

void Connection::Impl::open() {
  conn.reset();
  prepared.clear();
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
    rethrow_translated("connecting to PostgreSQL");
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
