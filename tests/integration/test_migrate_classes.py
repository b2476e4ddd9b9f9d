"""keymig scan / migrate / verify on every row class of docs/DESIGN.md section 2.

One fixture (made by Python's cryptography) per module, loaded into a fresh database per
test: NULL and empty secrets, rows under the active key with a true and a false flag, rows
under two rolling keys, corrupted tokens of several kinds and tokens from a key that is
not configured.
"""

import os
import time
import unittest

from keymig_testlib import (_brief, EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_RUNTIME,
                            EXIT_UNDECRYPTABLE, EXIT_USAGE, DbTestCase, Keymig, KeySet,
                            UserFixture, current_secrets, drop_db, new_db, psql, query, scalar,
                            snapshot, write_config)

COUNTS = {"empty": 150, "active": 250, "active_flag_false": 180, "rolling0": 1400,
          "rolling1": 700, "unknown_key": 20, "corrupt": 27}


class MigrateClassesTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=11)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.n_rolling = len(cls.fx.by_kind("rolling"))
        cls.n_active = len([r for r in cls.fx.rows if r.kind == "active"])
        cls.n_flag_false = len(cls.fx.by_kind("active_flag_false"))
        cls.n_empty = len(cls.fx.by_kind("empty"))
        cls.n_bad = len(cls.fx.by_kind("bad:"))
        cls.db_counter = 0

    def setUp(self):
        type(self).db_counter += 1
        self.dbname = "kmt_classes_%d" % self.db_counter
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def journal_rows(self, run_id=None):
        if not scalar(self.dsn, "SELECT to_regclass('keymig.journal') IS NOT NULL") == "t":
            return 0
        where = " WHERE run_id::text = '%s'" % run_id if run_id else ""
        return int(scalar(self.dsn, "SELECT count(*) FROM keymig.journal" + where))

    # -----------------------------------------------------------------------------------

    def test_scan_counts_every_class_and_writes_nothing(self):
        before = snapshot(self.dsn)
        s = self.km.run("scan", "--json", expect=EXIT_UNDECRYPTABLE).json
        # scan writes nothing: rotated and flag_fixed stay 0; the rows a migrate would move
        # are counted as `rolling` (the contract lists no name for that class count).
        self.assert_summary(s, rows_scanned=len(self.fx.rows), empty=self.n_empty,
                            undecryptable=self.n_bad, rotated=0, flag_fixed=0,
                            already_active=self.n_active + self.n_flag_false, conflicts=0)
        self.assertEqual(s.get("rolling"), self.n_rolling, "scan must count the rolling rows")
        self.assertEqual(snapshot(self.dsn), before, "scan changed the table")
        self.assertEqual(self.journal_rows(), 0)

    def test_dry_run_reports_what_migrate_would_do_and_writes_nothing(self):
        before = snapshot(self.dsn)
        s = self.km.run("migrate", "--json", "--dry-run", expect=EXIT_UNDECRYPTABLE).json
        self.assert_summary(s, rows_scanned=len(self.fx.rows), rotated=self.n_rolling,
                            undecryptable=self.n_bad, empty=self.n_empty)
        self.assertEqual(snapshot(self.dsn), before, "--dry-run changed the table")
        self.assertEqual(self.journal_rows(), 0, "--dry-run journaled rows")

    def test_verify_before_migrate_says_rows_need_the_rolling_key(self):
        r = self.km.run("verify", "--json", expect=EXIT_NEEDS_ROLLING)
        v = r.json
        self.assertEqual((v["ok"], v["needs_rolling"], v["undecryptable"]),
                         (self.n_active + self.n_flag_false, self.n_rolling, self.n_bad))

    def test_migrate_rotates_rolling_rows_and_leaves_the_rest_alone(self):
        before = snapshot(self.dsn)
        r = self.km.run("migrate", "--json", "--batch-size", "256", "--threads", "2",
                        expect=EXIT_UNDECRYPTABLE)
        s = r.json
        self.assert_summary(s, rows_scanned=len(self.fx.rows), rotated=self.n_rolling,
                            already_active=self.n_active + self.n_flag_false,
                            flag_fixed=self.n_flag_false, empty=self.n_empty,
                            undecryptable=self.n_bad, conflicts=0)
        self.assertTrue(s["run_id"], _brief(s))

        # The report names every undecryptable row by id with a reason, never its token.
        bad_ids = {str(row.id) for row in self.fx.by_kind("bad:")}
        listed = s.get("undecryptable_rows")
        self.assertIsInstance(listed, list, "summary lacks undecryptable_rows: %s" % s)
        self.assertEqual({str(e["id"]) for e in listed}, bad_ids)
        for e in listed:
            self.assertTrue(e.get("reason"), e)

        after = current_secrets(self.dsn)
        after_rows = snapshot(self.dsn)
        for row in self.fx.rows:
            token, flag = after[row.id]
            if row.kind.startswith("rolling"):
                self.assertNotEqual(token, row.token)
                self.assert_rotated(self.keys, row, token)
                self.assertTrue(flag, "row %d: flag not set after rotation" % row.id)
                # Nothing but the secret and the flag moved.
                self.assertEqual(after_rows[str(row.id)][:2], before[str(row.id)][:2])
                self.assertEqual(after_rows[str(row.id)][4:], before[str(row.id)][4:])
            elif row.kind == "active_flag_false":
                self.assertEqual(token, row.token, "row %d: active token rewritten" % row.id)
                self.assertTrue(flag, "row %d: false flag of an active row not fixed" % row.id)
            else:
                self.assertEqual(after_rows[str(row.id)], before[str(row.id)],
                                 "row %d (%s) is not byte-identical" % (row.id, row.kind))

        # Each rotated row is journaled once with its exact old and new token.
        journal = {int(j[0]): j[1:] for j in self.query_journal(s["run_id"])}
        rolling = {row.id: row for row in self.fx.by_kind("rolling")}
        self.assertTrue(set(rolling) <= set(journal), "rotated rows missing from the journal")
        for rid, row in rolling.items():
            self.assertEqual(journal[rid][0], row.token, "journal old_token of row %d" % rid)
            self.assertEqual(journal[rid][1], after[rid][0], "journal new_token of row %d" % rid)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = '%s'"
                                % s["run_id"]), "completed")

        # Idempotence: a second run moves nothing and rewrites nothing.
        again = self.km.run("migrate", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assert_summary(again, rows_scanned=len(self.fx.rows), rotated=0, flag_fixed=0,
                            already_active=self.n_rolling + self.n_active + self.n_flag_false,
                            empty=self.n_empty, undecryptable=self.n_bad, conflicts=0)
        self.assertEqual(snapshot(self.dsn), after_rows, "a second migrate changed rows")

        # verify: only undecryptable rows are left (exit 3), with and without the run.
        v = self.km.run("verify", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(v["ok"], self.n_rolling + self.n_active + self.n_flag_false, _brief(v))
        self.assertEqual(v["needs_rolling"], 0, _brief(v))
        self.assertEqual(v["undecryptable"], self.n_bad, _brief(v))
        v = self.km.run("verify", "--json", "--run", s["run_id"], expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(v["mismatched"], 0, _brief(v))
        self.assertEqual(v["needs_rolling"], 0, _brief(v))

    def query_journal(self, run_id):
        return query(self.dsn, "SELECT row_id::text, keymig.journal_text(old_token),"
                     " keymig.journal_text(new_token) FROM keymig.journal "
                     "WHERE run_id::text = '%s'" % run_id)

    def test_keys_from_the_environment_and_a_missing_rolling_key(self):
        # Keys only in env; the second rolling key is not given, so its rows are
        # undecryptable for this run and must stay untouched.
        bare = write_config(self.tmp, None, None, name="bare.yaml")
        km = Keymig(self, bare, self.dsn, self.fx.secrets)
        before = snapshot(self.dsn)
        env = {"KEYMIG_ACTIVE_KEY": self.keys.active, "KEYMIG_ROLLING_KEYS": self.keys.rolling[0]}
        s = km.run("migrate", "--json", env=env, expect=EXIT_UNDECRYPTABLE).json
        n_r0 = len(self.fx.by_kind("rolling0"))
        n_r1 = len(self.fx.by_kind("rolling1"))
        self.assert_summary(s, rotated=n_r0, undecryptable=self.n_bad + n_r1)
        after = snapshot(self.dsn)
        for row in self.fx.by_kind("rolling1"):
            self.assertEqual(after[str(row.id)], before[str(row.id)])
        for row in self.fx.by_kind("rolling0"):
            self.assert_rotated(self.keys, row, after[str(row.id)][2])

    def test_only_the_selected_users_move(self):
        rolling = self.fx.by_kind("rolling")
        by_id = rolling[:5] + self.fx.by_kind("active_flag_false")[:2]
        by_name = rolling[5:9]
        before = current_secrets(self.dsn)
        s = self.km.run("migrate", "--json", "--ids", ",".join(str(r.id) for r in by_id),
                        expect=(EXIT_OK, EXIT_UNDECRYPTABLE)).json
        self.assert_summary(s, rotated=5, flag_fixed=2, rows_scanned=7, undecryptable=0)
        s = self.km.run("migrate", "--json", "--usernames",
                        ",".join(r.username for r in by_name), expect=EXIT_OK).json
        self.assert_summary(s, rotated=4, rows_scanned=4)
        after = current_secrets(self.dsn)
        chosen = {r.id for r in by_id + by_name}
        for row in self.fx.rows:
            if row.id in chosen and row.kind.startswith("rolling"):
                self.assert_rotated(self.keys, row, after[row.id][0])
            elif row.id in chosen:
                self.assertEqual(after[row.id], (row.token, True))
            else:
                self.assertEqual(after[row.id], before[row.id], "unselected row %d moved" % row.id)

    def test_max_rows_per_second_throttles(self):
        started = time.monotonic()
        s = self.km.run("migrate", "--json", "--max-rows-per-second", "1000", "--batch-size", "100",
                        expect=EXIT_UNDECRYPTABLE).json
        elapsed = time.monotonic() - started
        self.assertEqual(s["rotated"], self.n_rolling)
        # ~2700 rows at 1000 rows/s: well over 2 s unless the limit is ignored.
        self.assertGreater(elapsed, 2.0, "throttle ignored: %.2fs" % elapsed)

    def test_a_bad_target_or_missing_key_is_a_usage_error_and_touches_nothing(self):
        before = snapshot(self.dsn)
        cases = {
            "no_table.yaml": (self.keys.active, self.keys.rolling, {"table": "no_such_table"}),
            "no_column.yaml": (self.keys.active, self.keys.rolling,
                               {"table": "users", "secretColumn": "no_such_column"}),
            "no_active.yaml": (None, self.keys.rolling, None),
        }
        for name, (active, rolling, target) in cases.items():
            with self.subTest(config=name):
                path = write_config(self.tmp, active, rolling, target=target, name=name)
                km = Keymig(self, path, self.dsn, self.fx.secrets)
                r = km.run("migrate", "--json", expect=EXIT_USAGE)
                self.assertTrue(r.stderr.strip(), "a usage error must say why")
        self.assertEqual(snapshot(self.dsn), before)
        self.assertNotEqual(psql(self.dsn, "SELECT 1"), "")

    def test_a_server_that_refuses_the_session_is_reported_at_once(self):
        # The server answers and says no: the database does not exist. Retrying would
        # only make the operator wait for the same answer.
        base, _, _ = self.dsn.rpartition("/")
        km = Keymig(self, self.config, base + "/keymig_no_such_database", self.fx.secrets)
        started = time.monotonic()
        r = km.run("migrate", "--json", expect=EXIT_RUNTIME)
        self.assertLess(time.monotonic() - started, 5.0, r.describe())
        self.assertNotIn("connect_retry", r.stderr)
        self.assertNotIn("connection lost", r.stderr)
        self.assertIn("the database does not exist", r.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    unittest.main()
