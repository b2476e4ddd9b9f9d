"""keymig's online throttles (keyMigration.throttle) against a real PostgreSQL: the flag
file pauses a run and its removal resumes it; a standby whose replay is paused holds
migrate back until it catches up (scripts/pg replica: a streaming replica made with
pg_basebackup); rows the application holds locked longer than lockTimeout are left for
the end-of-run sweep, and keymig never holds the application up longer than that; more
active sessions than criticalActiveSessions stop the run cleanly and it resumes."""

import os
import subprocess
import threading
import time
import unittest

from keymig_testlib import (EXIT_OK, EXIT_RUNTIME, PG_SCRIPT, DbTestCase, Keymig, KeySet,
                            UserFixture, check_all_rotated, drop_db, free_port, http_get,
                            journal_count, new_db, running_run_id, sample, scalar, wait_until,
                            write_config)


def run_counts(dsn, run_id):
    return scalar(dsn, "SELECT rows_scanned || '/' || rotated FROM keymig.runs"
                       " WHERE run_id = '%s'" % run_id)


class FlagFileTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 6_000, "active": 100}, seed=41)

    def setUp(self):
        self.dbname = "kmt_throttle_flag"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.flag = os.path.join(self.tmp, "pause")
        config = write_config(self.tmp, self.keys.active, self.keys.rolling,
                              migration={"throttle": {"flagFile": self.flag}})
        self.km = Keymig(self, config, self.dsn, self.fx.secrets)

    def tearDown(self):
        if os.path.exists(self.flag):
            os.unlink(self.flag)
        drop_db(self.dbname)

    def test_the_flag_file_pauses_the_run_and_its_removal_resumes_it(self):
        port = free_port()
        proc = self.km.start("migrate", "--json", "--batch-size", "200", "--threads", "2",
                             "--max-rows-per-second", "2000",
                             "--metrics-listen", "127.0.0.1:%d" % port)
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 400, 60))
        open(self.flag, "w").close()
        # A batch that was already admitted may still commit: give it a moment.
        time.sleep(0.5)
        frozen = (journal_count(self.dsn, run_id), run_counts(self.dsn, run_id))
        time.sleep(3)
        self.assertEqual((journal_count(self.dsn, run_id), run_counts(self.dsn, run_id)), frozen,
                         "a batch committed while the flag file existed")
        self.assertIsNone(proc.poll(), "migrate ended while paused")
        self.assertLess(frozen[0], 6_000, "the run was over before the pause")
        status, body, _ = http_get(port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(sample(body, "keymig_throttled", reason="flag_file"), 1.0, body)
        self.assertGreaterEqual(
            sample(body, "keymig_throttled_seconds_total", reason="flag_file"), 2.5)
        os.unlink(self.flag)
        r = self.km.finish(proc, timeout=120)
        self.assertEqual(r.returncode, EXIT_OK, r.describe())
        self.assertEqual(r.json["rotated"], 6_000, r.json)
        self.assertIn("event=throttled reason=flag_file", r.stderr)
        self.assertIn("event=throttle_cleared reason=flag_file", r.stderr)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)


if __name__ == "__main__":
    unittest.main()
