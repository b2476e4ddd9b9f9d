"""Counts stay right when keymig's sessions are cut again and again during a run.

A 60k-row run in small batches over four lanes, throttled so that it is surely in the
middle when the test terminates one of keymig's backends (pg_terminate_backend) a dozen
times. Rows must be right (pyca), and so must every count: the classes of `--json` add up
to the rows read, conflicts are never negative, and the run's totals in keymig.runs say
the same. A lane whose session is being re-opened must keep its chunk: before, a sibling
lane took it over as abandoned, both lanes wrote its pages, and each counted the other's
batches as conflicts that the sweep then "resolved" into a negative count.
"""

import random
import time
import unittest

from keymig_testlib import (EXIT_UNDECRYPTABLE, DbTestCase, Keymig, KeySet, UserFixture, _brief,
                            check_all_rotated, drop_db, journal_count, new_db, psql,
                            running_run_id, scalar, wait_until, write_config)

ROWS = 60_000
CLASSES = ("rotated", "already_active", "empty", "undecryptable", "conflicts", "rejected",
           "rewritten")


class TerminatedSessionsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": ROWS - 1_000, "active": 700, "empty": 250,
                                        "unknown_key": 50},
                             seed=91)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.dsn = new_db("kmt_terminated")
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db("kmt_terminated")
        super().tearDownClass()

    def terminate_one(self, rng):
        """Terminates one of keymig's backends (not this session); returns how many (0 or 1)."""
        pids = psql(self.dsn, "SELECT pid FROM pg_stat_activity WHERE application_name LIKE "
                    "'keymig%' AND datname = current_database() AND pid <> pg_backend_pid()")
        pids = [int(p) for p in pids.split()]
        if not pids:
            return 0
        return int(psql(self.dsn, "SELECT count(*) FILTER (WHERE pg_terminate_backend(%d))"
                        % rng.choice(pids)))

    def test_counts_add_up_after_terminated_sessions(self):
        km = Keymig(self, self.config, self.dsn, self.fx.secrets)
        rng = random.Random(5)
        proc = km.start("migrate", "--json", "--batch-size", "200", "--threads", "4",
                        "--max-rows-per-second", "4000")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id, "no running run appeared in keymig.runs")
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 2_000, 60),
                        "the run did not progress")
        killed = 0
        deadline = time.monotonic() + 60
        while killed < 12 and proc.poll() is None and time.monotonic() < deadline:
            killed += self.terminate_one(rng)
            time.sleep(0.5)
        self.assertGreaterEqual(killed, 5, "too few terminations landed during the run")
        r = km.finish(proc, timeout=300)
        self.assertEqual(r.returncode, EXIT_UNDECRYPTABLE, r.describe())  # the unknown-key rows
        s = r.json
        print("\nterminated %d keymig backends; summary %s" % (
            killed, {k: s.get(k) for k in ("rows_scanned",) + CLASSES + ("conflicts_resolved",)}))

        self.assertEqual(s["rows_scanned"], ROWS, _brief(s))
        self.assertGreaterEqual(s["conflicts"], 0, _brief(s))
        self.assertEqual(sum(s.get(k, 0) for k in CLASSES), ROWS,
                         "the classes must add up to the rows read: %s" % _brief(s))
        self.assertEqual(s["rotated"], len(self.fx.by_kind("rolling")), _brief(s))
        self.assertEqual(s["already_active"], len(self.fx.by_kind("active")), _brief(s))
        self.assertEqual(s["flag_fixed"], 0, _brief(s))
        self.assertEqual(s["empty"], len(self.fx.by_kind("empty")), _brief(s))
        self.assertEqual(s["undecryptable"], len(self.fx.by_kind("bad:")), _brief(s))

        # The run's totals (one invocation, a new run): the same counts, in the JSON and in
        # keymig.runs itself.
        totals = s["run_totals"]
        for k in ("rows_scanned", "rotated", "already_active", "flag_fixed", "empty",
                  "undecryptable", "conflicts"):
            self.assertEqual(totals[k], s[k], "run_totals.%s: %s" % (k, totals))
        row = scalar(self.dsn, "SELECT concat_ws(',', rows_scanned, rotated, already_active,"
                     " flag_fixed, empty, undecryptable, conflicts) FROM keymig.runs"
                     " WHERE run_id::text = '%s'" % run_id)
        self.assertEqual(row, ",".join(str(s[k]) for k in (
            "rows_scanned", "rotated", "already_active", "flag_fixed", "empty", "undecryptable",
            "conflicts")), "keymig.runs")
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = "
                                "'%s'" % run_id), "completed")
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)
        km.run("verify", "--json", "--run", run_id, expect=3)  # the unknown-key rows


if __name__ == "__main__":
    unittest.main()
