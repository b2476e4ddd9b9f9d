"""PostgreSQL restarted (pg_ctl restart) in the middle of a run.

This needs a cluster of its own (the shared one must never be restarted): scripts/pg with
KEYMIG_PG_DIR under .keymig/. keymig either reconnects and finishes, or exits 1 and a
re-run of the same run finishes; the data is right either way.
"""

import os
import subprocess
import unittest

from keymig_testlib import (EXIT_OK, EXIT_RUNTIME, PG_SCRIPT, SOURCE_DIR, DbTestCase, Keymig,
                            KeySet, UserFixture, check_all_rotated, journal_count,
                            running_run_id, scalar, wait_until, write_config)


def pg(state_dir, *args):
    proc = subprocess.run([PG_SCRIPT] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, KEYMIG_PG_DIR=state_dir))
    if proc.returncode != 0:
        raise RuntimeError("scripts/pg %s: %s" % (" ".join(args), proc.stderr))
    return proc.stdout.strip()


class RestartTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pg_dir = os.path.join(SOURCE_DIR, ".keymig", "it-restart-%d" % os.getpid())
        pg(cls.pg_dir, "start")
        cls.dsn = pg(cls.pg_dir, "newdb", "kmt_restart")
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, {"rolling0": 40_000, "rolling1": 20_000, "active": 200,
                                        "empty": 200}, seed=41)
        cls.fx.load(cls.dsn)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    @classmethod
    def tearDownClass(cls):
        try:
            pg(cls.pg_dir, "destroy")
        finally:
            super().tearDownClass()

    def test_a_database_restart_mid_run_loses_nothing(self):
        km = Keymig(self, self.config, self.dsn, self.fx.secrets)
        proc = km.start("migrate", "--json", "--batch-size", "500", "--threads", "2",
                        "--max-rows-per-second", "15000")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 10_000, 120))
        self.assertIsNone(proc.poll(), "keymig finished before the restart")
        pg(self.pg_dir, "restart")
        first = km.finish(proc)
        self.assertIn(first.returncode, (EXIT_OK, EXIT_RUNTIME), first.describe())
        if first.returncode == EXIT_RUNTIME:
            self.assertTrue(first.stderr.strip(), "exit 1 must say why")
            km.run("migrate", "--json", "--run-id", run_id, expect=EXIT_OK)
        print("\nrestart mid-run: first process exit %d" % first.returncode)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = "
                                "'%s'" % run_id), "completed")
        km.run("verify", "--json", "--run", run_id, expect=EXIT_OK)


if __name__ == "__main__":
    unittest.main()
