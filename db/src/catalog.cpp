#include "catalog.hpp"

namespace keymig::db {

std::optional<Column> find_column(pqxx::transaction_base& tx, unsigned rel,
                                  const std::string& name) {
  auto r = tx.exec_params(
      "SELECT a.atttypid::int8, coalesce(nullif(t.typbasetype, 0), a.atttypid)::int8,"
      "       format_type(a.atttypid, NULL), a.attnotnull,"
      "       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique"
      "               AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum"
      "               AND i.indpred IS NULL AND i.indexprs IS NULL),"
      "       CASE WHEN coalesce(nullif(t.typbasetype, 0), a.atttypid) = 1043"
      "            THEN greatest(coalesce(nullif(a.atttypmod, -1), nullif(t.typtypmod, -1), -1)"
      "                          - 4, -1) ELSE -1 END"
      "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
      " WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
      rel, name);
  if (r.empty()) return std::nullopt;
  Column c;
  c.type_oid = r[0][0].as<unsigned>();
  c.base_oid = r[0][1].as<unsigned>();
  c.type_name = r[0][2].as<std::string>();
  c.not_null = r[0][3].as<bool>();
  c.unique = r[0][4].as<bool>();
  c.max_chars = r[0][5].as<int>();
  return c;
}

}  // namespace keymig::db
