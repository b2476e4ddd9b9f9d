"""The journal's lifecycle (issue 19): keyMigration.journalRetention, applied by every
completed migrate and by serve, deletes the journals of the target's completed and
rolled-back runs idle for longer (never a running or failed run, never under 1h);
`journal purge --run-id` drops a rolled-back run's journal; keymig_journal_rows and
keymig_journal_oldest_seconds say what the journal holds.
"""

import os
import unittest

from keymig_testlib import (EXIT_OK, EXIT_USAGE, DbTestCase, Keymig, KeySet, UserFixture,
                            drop_db, http_get, journal_count, metric_sample as sample, new_db,
                            psql, scalar, start_serve, wait_until, write_config)

COUNTS = {"active": 30, "rolling0": 400}
TARGET = "public.users.mfa_secret"


class JournalRetentionTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=19)
        cls.rolling = len(cls.fx.by_kind("rolling"))
        cls.plain = write_config(cls.tmp, cls.keys.active, cls.keys.rolling, name="plain.yaml")
        cls.kept = write_config(cls.tmp, cls.keys.active, cls.keys.rolling, name="kept.yaml",
                                migration={"journalRetention": "1h"})

    def setUp(self):
        self.dbname = "kmt_journal_retention"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.plain, self.dsn, self.fx.secrets)
        self.km_kept = Keymig(self, self.kept, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    # -- helpers ---------------------------------------------------------------------

    def age(self, run_id, seconds):
        """Makes the run's last activity `seconds` old."""
        psql(self.dsn, "UPDATE keymig.runs SET started_at = now() - make_interval(secs => %d),"
             " updated_at = now() - make_interval(secs => %d), finished_at = CASE WHEN"
             " finished_at IS NULL THEN NULL ELSE now() - make_interval(secs => %d) END"
             " WHERE run_id = '%s'" % (seconds + 60, seconds, seconds, run_id))

    def clone(self, run_id, new_id, state, seconds, target=None):
        """A copy of a run and its journal, in `state`, idle for `seconds` (another
        selection, so that no migrate resumes it)."""
        psql(self.dsn,
             "CREATE TEMP TABLE r AS SELECT * FROM keymig.runs WHERE run_id = '%(src)s';"
             " UPDATE r SET run_id = '%(dst)s', state = '%(state)s',"
             "   selection = '{\"ids\": [\"999999\"]}', target = coalesce(%(target)s, target),"
             "   finished_at = CASE WHEN '%(state)s' = 'running' THEN NULL ELSE finished_at END;"
             " INSERT INTO keymig.runs SELECT * FROM r;"
             " CREATE TEMP TABLE j AS SELECT * FROM keymig.journal WHERE run_id = '%(src)s';"
             " UPDATE j SET run_id = '%(dst)s';"
             " INSERT INTO keymig.journal SELECT * FROM j"
             % {"src": run_id, "dst": new_id, "state": state,
                "target": "NULL" if target is None else "'%s'" % target})
        self.age(new_id, seconds)

    def purged_at_set(self, run_id):
        return scalar(self.dsn, "SELECT journal_purged_at IS NOT NULL FROM keymig.runs"
                      " WHERE run_id = '%s'" % run_id) == "t"

    # -- tests -----------------------------------------------------------------------

    def test_a_completed_migrate_applies_the_retention_to_its_targets_finished_runs(self):
        first = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.assertEqual(journal_count(self.dsn, first), self.rolling)
        day = 24 * 3600
        self.clone(first, "rolled-back-old", "rolled_back", 3 * day)
        self.clone(first, "failed-old", "failed", 3 * day)
        self.clone(first, "running-old", "running", 3 * day)
        self.clone(first, "other-target-old", "completed", 3 * day,
                   target="public.admins.mfa_secret")
        self.clone(first, "completed-young", "completed", 1800)
        self.age(first, 3 * day)

        second = self.km_kept.run("migrate", "--json", expect=EXIT_OK).json
        self.assertNotEqual(second["run_id"], first)
        self.assertEqual(second["journal_purged"], {"runs": 2, "journal_rows": 2 * self.rolling})
        for gone in (first, "rolled-back-old"):
            self.assertEqual(journal_count(self.dsn, gone), 0, gone)
            self.assertTrue(self.purged_at_set(gone), gone)
        # A failed run is resumed by the next migrate, a running one may be under way, a
        # young one may still be rolled back, another target has its own retention.
        for kept in ("failed-old", "running-old", "other-target-old", "completed-young"):
            self.assertEqual(journal_count(self.dsn, kept), self.rolling, kept)
            self.assertFalse(self.purged_at_set(kept), kept)
        # The purged run refuses a rollback rather than restoring nothing.
        r = self.km.run("rollback", "--run", first, expect=EXIT_USAGE)
        self.assertIn("journal purge", r.stderr)

    def test_without_a_retention_migrate_keeps_every_journal(self):
        first = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.age(first, 40 * 24 * 3600)
        second = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(second["journal_purged"], {"runs": 0, "journal_rows": 0})
        self.assertEqual(journal_count(self.dsn, first), self.rolling)

    def test_check_config_shows_the_retention(self):
        r = self.km_kept.run("check-config", "--json", expect=EXIT_OK).json
        self.assertEqual(r["journal_retention_seconds"], 3600)
        self.assertIsNone(self.km.run("check-config", "--json", expect=EXIT_OK)
                          .json["journal_retention_seconds"])
        self.assertIn("kept 3600 s after its run", self.km_kept.run("check-config").stdout)

    def test_a_retention_under_an_hour_is_a_config_error(self):
        for value in ("30m", "59m", "10s"):
            config = write_config(self.tmp, self.keys.active, self.keys.rolling,
                                  name="short.yaml", migration={"journalRetention": value})
            km = Keymig(self, config, self.dsn, self.fx.secrets)
            r = km.run("migrate", expect=EXIT_USAGE)
            self.assertIn("keyMigration.journalRetention: must be at least 1h", r.stderr)
        self.assertEqual(scalar(self.dsn, "SELECT to_regclass('keymig.runs') IS NULL"), "t")

    def test_journal_purge_run_id_drops_a_rolled_back_runs_journal_and_nothing_else(self):
        run = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.clone(run, "completed-copy", "completed", 60)
        # A completed run goes through finalize, which checks the rows first.
        r = self.km.run("journal purge", "--run-id", "completed-copy", expect=EXIT_USAGE)
        self.assertIn("finalize", r.stderr)
        self.assertEqual(journal_count(self.dsn, "completed-copy"), self.rolling)
        r = self.km.run("journal purge", "--run-id", "no-such-run", expect=EXIT_USAGE)
        self.assertIn("no run no-such-run", r.stderr)
        self.km.run("journal purge", expect=EXIT_USAGE)
        self.km.run("journal purge", "--run-id", run, "--older-than", "1d", expect=EXIT_USAGE)

        self.km.run("rollback", "--run", run, expect=EXIT_OK)
        r = self.km.run("finalize", "--run", run, expect=EXIT_USAGE)
        self.assertIn("journal purge --run-id " + run, r.stderr)
        self.assertEqual(journal_count(self.dsn, run), self.rolling)

        r = self.km.run("journal purge", "--run-id", run, "--json", expect=EXIT_OK).json
        self.assertEqual(r, {"run_id": run, "runs": 1, "journal_rows": self.rolling})
        self.assertEqual(journal_count(self.dsn, run), 0)
        self.assertTrue(self.purged_at_set(run))
        self.assertEqual(journal_count(self.dsn, "completed-copy"), self.rolling)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'"
                                % run), "rolled_back")

    def test_the_journal_gauges_say_what_it_holds(self):
        textfile = os.path.join(self.tmp, "keymig.prom")
        first = self.km.run("migrate", "--json", "--metrics-textfile", textfile,
                            expect=EXIT_OK).json["run_id"]
        with open(textfile) as f:
            text = f.read()
        self.assertEqual(sample(text, "keymig_journal_rows", target=TARGET), self.rolling)
        self.assertLess(sample(text, "keymig_journal_oldest_seconds", target=TARGET), 600)

        self.age(first, 3 * 24 * 3600)
        self.km.run("migrate", "--metrics-textfile", textfile, expect=EXIT_OK)
        with open(textfile) as f:
            text = f.read()
        self.assertEqual(sample(text, "keymig_journal_rows", target=TARGET), self.rolling)
        self.assertGreaterEqual(sample(text, "keymig_journal_oldest_seconds", target=TARGET),
                                3 * 24 * 3600)

        self.km.run("finalize", "--run", first, "--metrics-textfile", textfile, expect=EXIT_OK)
        with open(textfile) as f:
            text = f.read()
        self.assertEqual(sample(text, "keymig_journal_rows", target=TARGET), 0)
        self.assertEqual(sample(text, "keymig_journal_oldest_seconds", target=TARGET), 0)

    def test_serve_applies_the_retention_and_exports_the_gauges(self):
        first = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.clone(first, "young", "completed", 600)
        self.age(first, 2 * 24 * 3600)
        serve = start_serve(self, self.kept, self.dsn, self.fx.secrets)
        # No schedule: serve's own journal round does it, at start and then periodically.
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, first) == 0, 30),
                        "serve did not purge the old journal:\n" + serve.stderr()[-3000:])
        self.assertTrue(self.purged_at_set(first))
        self.assertEqual(journal_count(self.dsn, "young"), self.rolling)

        def exported():
            status, body, _ = http_get(serve.port, "/metrics")
            return status == 200 and sample(body, "keymig_journal_rows", target=TARGET) == \
                self.rolling and body
        body = wait_until(exported, 30)
        self.assertTrue(body, "serve does not export keymig_journal_rows")
        self.assertGreaterEqual(sample(body, "keymig_journal_oldest_seconds", target=TARGET), 600)
        self.assertTrue(serve.events("journal_retention_purged"))


if __name__ == "__main__":
    unittest.main()
