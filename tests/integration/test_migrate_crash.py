"""kill -9 in the middle of a 200k-row run, then a re-run of the same run.

The run is throttled (--max-rows-per-second) so that it is surely in the middle when the
test kills it, however fast the machine. Afterwards every row is right and every rotated
row is journaled exactly once over both processes, with its original token.
"""

import time
import unittest

from keymig_testlib import (_brief, EXIT_OK, DbTestCase, Keymig, KeySet, UserFixture, check_all_rotated,
                            check_consistent, drop_db, journal_count, kill_hard, new_db,
                            running_run_id, scalar, wait_until, write_config)

ROWS = 200_000


class KillNineTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": ROWS - 300, "active": 100, "empty": 200},
                             seed=21)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.dsn = new_db("kmt_crash")
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db("kmt_crash")
        super().tearDownClass()

    def test_a_killed_run_resumes_and_journals_each_row_once(self):
        km = Keymig(self, self.config, self.dsn, self.fx.secrets)
        proc = km.start("migrate", "--json", "--batch-size", "1000", "--threads", "2",
                        "--max-rows-per-second", "25000")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id, "no running run appeared in keymig.runs")
        journaled = wait_until(lambda: journal_count(self.dsn, run_id) >= 30_000, 120)
        self.assertTrue(journaled, "the run did not progress")
        self.assertIsNone(proc.poll(), "keymig finished before the test could kill it")
        kill_hard(proc)
        killed = km.finish(proc)
        self.assertEqual(killed.returncode, -9)

        at_kill = journal_count(self.dsn, run_id)
        self.assertLess(at_kill, len(self.fx.by_kind("rolling")), "killed after the end")
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = "
                                "'%s'" % run_id), "running")
        # What the killed process left: whole batches only.
        moved = check_consistent(self, self.dsn, self.fx, run_id)
        self.assertEqual(moved, at_kill)

        started = time.monotonic()
        again = km.run("migrate", "--json", "--run-id", run_id, "--batch-size", "1000",
                       expect=EXIT_OK).json
        self.assertEqual(again["run_id"], run_id, "the re-run did not resume the same run")
        self.assertEqual(again["undecryptable"], 0)
        self.assertEqual(again["conflicts"], 0)
        print("\nkill -9 after %d rows; resume took %.1fs, summary %s" % (
            at_kill, time.monotonic() - started,
            {k: again[k] for k in ("rows_scanned", "rotated", "already_active")}))

        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = "
                                "'%s'" % run_id), "completed")
        v = km.run("verify", "--json", "--run", run_id, expect=EXIT_OK).json
        self.assertEqual(v["needs_rolling"], 0, _brief(v))
        self.assertEqual(v["mismatched"], 0, _brief(v))
        self.assertEqual(v["ok"], len(self.fx.by_kind("rolling")) + len(self.fx.by_kind("active")))


if __name__ == "__main__":
    unittest.main()
