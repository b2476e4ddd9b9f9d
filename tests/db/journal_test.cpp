#include "keymig/db/journal.hpp"

#include <catch2/catch.hpp>
#include <chrono>

#include "keymig/db/batch.hpp"
#include "keymig/db/runs.hpp"
#include "keymig/db/schema.hpp"
#include "pg_fixture.hpp"

using namespace keymig::testing;
using keymig::SecretString;
using keymig::db::TargetSpec;

TEST_CASE("the journal keeps a canonical token as its bytes and any other text as it was",
          "[db][journal]") {
  KEYMIG_REQUIRE_DB();
  // The Fernet specification's token: canonical, 100 characters for 73 bytes.
  const std::string spec =
      "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmp"
      "U4IwqDA==";
  const std::vector<std::pair<std::string, std::string>> olds = {
      {"1", spec},
      {"2", spec.substr(0, spec.size() - 2)},  // unpadded: does not spell itself back
      {"3", "AAAA"},                           // canonical, but not a Fernet token's bytes
      {"4", "gAAA+AAA"},                       // the standard alphabet
      {"5", " " + spec},                       // whitespace
      {"6", "g\xc3\xbcn"},                     // UTF-8 beyond ASCII
      {"7", ""},
  };
  sql("DROP SCHEMA IF EXISTS h5_journal CASCADE; CREATE SCHEMA h5_journal;"
      "CREATE TABLE h5_journal.users (id int PRIMARY KEY, tok text);"
      "CREATE TABLE h5_journal.bin (id int PRIMARY KEY, tok bytea);");
  for (const auto& [id, tok] : olds) {
    pqxx::connection c(test_dsn());
    pqxx::nontransaction tx(c);
    tx.exec_params("INSERT INTO h5_journal.users VALUES ($1::int, $2)", id, tok);
    tx.exec_params("INSERT INTO h5_journal.bin VALUES ($1::int, convert_to($2, 'UTF8'))", id, tok);
  }
  keymig::db::Connection conn(test_options());
  keymig::db::ensure_schema(conn);

  for (const char* table : {"h5_journal.users", "h5_journal.bin"}) {
    auto t = keymig::db::check_target(conn, TargetSpec{table, "id", "tok", "", "", "", true});
    const std::string run_id =
        "h5-" + std::string(table) + "-" +
        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    keymig::db::Run run;
    run.run_id = run_id;
    run.target = t.label();
    run.journal = true;
    REQUIRE(keymig::db::create_run(conn, run, {std::nullopt}));
    std::vector<keymig::db::Change> changes;
    for (const auto& [id, tok] : olds) {
      keymig::db::Change c;
      c.id = id;
      c.old_token = SecretString(std::string_view(tok));
      c.new_token = SecretString(std::string_view(spec));
      changes.push_back(std::move(c));
    }
    keymig::db::BatchContext ctx;
    ctx.run_id = run_id;
    ctx.journal = true;
    ctx.chunk = keymig::db::ChunkStep{0, std::nullopt, "7", false};
    ctx.counts.rows_scanned = static_cast<std::int64_t>(olds.size());
    auto res = keymig::db::write_batch(conn, t, changes, ctx);
    CHECK(res.missed.empty());
    CHECK(res.rotated == static_cast<std::int64_t>(olds.size()) - 1);  // row 1 already held it

    const std::string where = " FROM keymig.journal WHERE run_id = '" + run_id + "'";
    // Only the canonical Fernet token is kept as its bytes (the version byte first); the
    // rest carry the 0x00 tag and their text.
    CHECK(sql_value("SELECT string_agg(row_id || ':' || get_byte(old_token, 0), ',' ORDER BY "
                    "row_id)" +
                    where) == "1:128,2:0,3:0,4:0,5:0,6:0,7:0");
    CHECK(sql_value("SELECT octet_length(new_token)" + where + " AND row_id = '1'") == "73");
    CHECK(sql_value("SELECT count(*)" + where + " AND keymig.journal_text(new_token) = '" + spec +
                    "'") == "7");
    auto entries = keymig::db::read_journal(conn, run_id, std::nullopt, 100);
    REQUIRE(entries.size() == olds.size());
    for (std::size_t i = 0; i < olds.size(); ++i) {
      INFO("row " << olds[i].first);
      CHECK(entries[i].row_id == olds[i].first);
      CHECK_FALSE(entries[i].old_null);
      CHECK(entries[i].old_token.view() == olds[i].second);
      CHECK(entries[i].new_token.view() == spec);
    }
    // Rollback writes back exactly what each row held.
    auto page = keymig::db::rollback_page(conn, t, run_id, std::nullopt, 100);
    CHECK(page.restored.size() == olds.size());
    const std::string as_text =
        std::string(table) == "h5_journal.bin" ? "convert_from(tok, 'UTF8')" : "tok";
    for (const auto& [id, tok] : olds) {
      pqxx::connection c(test_dsn());
      pqxx::nontransaction tx(c);
      auto r = tx.exec_params("SELECT " + as_text + " FROM " + table + " WHERE id = $1::int", id);
      INFO(table << " row " << id);
      CHECK(r.at(0)[0].as<std::string>() == tok);
    }
  }
}
