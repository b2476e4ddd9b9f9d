"""rollback never exits 0 having restored nothing or part (issue 20, item 4).

journal purge refuses an age under 1h, keeps the journals of runs still running and marks
what it purged; rollback refuses a purged run and a migrate of the same run racing it; a run a killed
migrate left `running` rolls back in full, and is not resumed after.
"""

import subprocess
import time
import unittest

from keymig_testlib import (EXIT_OK, EXIT_USAGE, DbTestCase, Keymig, KeySet, UserFixture,
                            current_secrets, drop_db, journal_count, journal_of, kill_hard,
                            new_db, psql, running_run_id, scalar, snapshot, wait_until,
                            write_config)

COUNTS = {"active": 50, "rolling0": 1500}


class JournalGuardsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=44)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def setUp(self):
        self.dbname = "kmt_journal_guards"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def state(self, run_id):
        return scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'" % run_id)

    def age(self, run_id, days):
        psql(self.dsn, "UPDATE keymig.runs SET started_at = now() - interval '%d days', "
             "updated_at = now() - interval '%d days', finished_at = CASE WHEN finished_at IS "
             "NULL THEN NULL ELSE now() - interval '%d days' END WHERE run_id = '%s'"
             % (days + 1, days, days, run_id))

    def test_purge_refuses_a_short_age_and_keeps_running_runs(self):
        run = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        journaled = journal_count(self.dsn, run)
        for age in ("0", "0s", "30m", "59m"):
            r = self.km.run("journal purge", "--older-than", age, expect=EXIT_USAGE)
            self.assertIn("at least 1h", r.stderr)
        self.assertEqual(journal_count(self.dsn, run), journaled)

        # A run still `running` (here: one that crashed two days ago) keeps its journal.
        psql(self.dsn, "UPDATE keymig.runs SET state = 'running', finished_at = NULL "
             "WHERE run_id = '%s'" % run)
        self.age(run, 2)
        self.km.run("journal purge", "--older-than", "1d", expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn, run), journaled)
        self.assertEqual(scalar(self.dsn, "SELECT journal_purged_at IS NULL FROM keymig.runs "
                                "WHERE run_id = '%s'" % run), "t")

    def test_rollback_refuses_a_purged_run(self):
        run = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.age(run, 40)
        self.km.run("journal purge", "--older-than", "30d", expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn, run), 0)
        self.assertEqual(scalar(self.dsn, "SELECT journal_purged_at IS NOT NULL FROM keymig.runs"
                                " WHERE run_id = '%s'" % run), "t")
        before = snapshot(self.dsn)
        r = self.km.run("rollback", "--json", "--run", run, expect=EXIT_USAGE)
        self.assertIn("purge", r.stderr)
        self.assertTrue(snapshot(self.dsn) == before, "rows changed")
        self.assertEqual(self.state(run), "completed")

    def test_a_killed_run_rolls_back_in_full_and_is_not_resumed_after(self):
        slow = self.km.start("migrate", "--json", "--max-rows-per-second", "300",
                             "--batch-size", "50")
        run = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run, "migrate did not start a run")
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run) >= 200, 60))
        kill_hard(slow)
        self.km.finish(slow)
        self.assertEqual(self.state(run), "running")
        moved = journal_count(self.dsn, run)
        self.assertLess(moved, len(self.fx.by_kind("rolling")), "the run finished before the kill")
        # Every batch it committed journaled its rows: all of them go back.
        r = self.km.run("rollback", "--json", "--run", run, expect=EXIT_OK).json
        self.assertEqual(r["restored"], moved)
        now = current_secrets(self.dsn)
        for row in self.fx.rows:
            self.assertTrue(now[row.id][0] == row.token, "row %d not restored" % row.id)
        self.assertEqual(self.state(run), "rolled_back")
        # A rolled-back run is not resumed: its rows would move again under a dead run.
        r = self.km.run("migrate", "--json", "--run-id", run, expect=EXIT_USAGE)
        self.assertIn("rolled_back", r.stderr)
        self.assertTrue(current_secrets(self.dsn) == now, "rows moved")

    def test_rollback_racing_a_live_migrate_is_refused_and_restores_nothing(self):
        slow = self.km.start("migrate", "--json", "--max-rows-per-second", "150",
                             "--batch-size", "50")
        try:
            run = wait_until(lambda: running_run_id(self.dsn), 60)
            self.assertIsNotNone(run, "migrate did not start a run")
            self.assertTrue(wait_until(lambda: journal_count(self.dsn, run) >= 100, 60))
            attempts = 0
            while attempts < 200:
                r = self.km.run("rollback", "--json", "--run", run)
                if slow.poll() is not None:
                    break  # the migrate may have ended before this rollback: proves nothing
                attempts += 1
                self.assertEqual(r.returncode, EXIT_USAGE, r.describe())
                # Nothing restored: every journaled row still holds what migrate wrote
                # (the journal read first: a row journaled since is not yet in it).
                journal = journal_of(self.dsn, run)
                now = current_secrets(self.dsn)
                for rid, entries in journal.items():
                    self.assertTrue(now[int(rid)][0] == entries[-1][1],
                                    "rollback restored row %s under a live migrate" % rid)
            self.assertGreater(attempts, 5)
        finally:
            result = self.km.finish(slow)
        self.assertEqual(result.returncode, EXIT_OK, result.describe())
        # (rolled_back: the last attempt above came after the migrate had ended)
        self.assertIn(self.state(run), ("completed", "rolled_back"))
        self.km.run("rollback", "--json", "--run", run, expect=EXIT_OK)
        now = current_secrets(self.dsn)
        for row in self.fx.rows:
            self.assertTrue(now[row.id][0] == row.token, "row %d not restored" % row.id)

    def test_migrate_of_a_run_being_rolled_back_is_refused(self):
        slow = self.km.start("migrate", "--json", "--max-rows-per-second", "400",
                             "--batch-size", "50")
        run = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run) >= 300, 60))
        kill_hard(slow)
        self.km.finish(slow)
        # As a migrate that failed leaves it: resumable, and its journal complete.
        psql(self.dsn, "UPDATE keymig.runs SET state = 'failed' WHERE run_id = '%s'" % run)
        # The application holds one journaled row: the rollback waits for it, retrying.
        held = max(int(rid) for rid in journal_of(self.dsn, run))
        app = subprocess.Popen(["psql", "-X", "-q", "-d", self.dsn], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        app.stdin.write("BEGIN; SELECT 1 FROM public.users WHERE id = %d FOR UPDATE;\n" % held)
        app.stdin.flush()
        time.sleep(0.5)
        rollback = self.km.start("rollback", "--json", "--run", run)
        try:
            time.sleep(1.0)
            resumed = self.km.run("migrate", "--json", "--run-id", run)
            self.assertEqual(resumed.returncode, EXIT_USAGE, resumed.describe())
            self.assertIn("rolled back", resumed.stderr)
        finally:
            app.stdin.write("COMMIT;\n")
            app.stdin.close()
            app.wait(timeout=60)
            done = self.km.finish(rollback)
        self.assertEqual(done.returncode, EXIT_OK, done.describe())
        now = current_secrets(self.dsn)
        for row in self.fx.rows:
            self.assertTrue(now[row.id][0] == row.token, "row %d not restored" % row.id)
        self.assertEqual(self.state(run), "rolled_back")


if __name__ == "__main__":
    unittest.main()
