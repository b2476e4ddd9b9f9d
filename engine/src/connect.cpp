#include "connect.hpp"

#include "keymig/log.hpp"

namespace keymig::engine::detail {

db::RetryHook retry_hook(metrics::Metrics* metrics, const char* what) {
  return [metrics, what](const db::DbError& e, int attempt) {
    if (metrics) metrics->add_db_retry();
    KEYMIG_LOG(warn, "engine", "db_retry", {"during", what}, {"attempt", attempt},
               {"sqlstate", e.sqlstate()}, {"error", e.what()});
  };
}

db::Connection open_connection(const db::ConnectOptions& options, metrics::Metrics* metrics) {
  // The database grouping label: a run that never reaches the server pushes into the
  // same group as those that do.
  if (metrics) metrics->set_database(db::configured_database(options.dsn));
  db::Connection conn =
      db::connect_with_retry(options, [metrics](const db::DbError& e, int attempt) {
        if (metrics) metrics->add_db_retry();
        KEYMIG_LOG(warn, "engine", "connect_retry", {"attempt", attempt},
                   {"sqlstate", e.sqlstate()}, {"error", e.what()});
      });
  if (metrics) metrics->set_database(db::database_name(conn));
  return conn;
}

db::TargetSpec target_spec(const config::Target& t) {
  return db::TargetSpec{t.table,           t.id_column,         t.secret_column,    t.flag_column,
                        t.username_column, t.only_where.column, t.only_where.equals};
}

}  // namespace keymig::engine::detail
