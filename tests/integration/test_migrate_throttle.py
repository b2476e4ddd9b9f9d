"""keymig's online throttles (keyMigration.throttle) against a real PostgreSQL: the flag
file pauses a run and its removal resumes it; a standby whose replay is paused holds
migrate back until it catches up (scripts/pg replica: a streaming replica made with
pg_basebackup); rows the application holds locked longer than lockTimeout are left for
the end-of-run sweep, and keymig never holds the application up longer than that; more
active sessions than criticalActiveSessions stop the run cleanly and it resumes."""

import os
import subprocess
import time
import unittest

from keymig_testlib import (EXIT_OK, EXIT_RUNTIME, PG_SCRIPT, DbTestCase, Keymig, KeySet,
                            enqueue, request_row, start_serve, wait_request,
                            UserFixture, check_all_rotated, current_secrets, drop_db, free_port, http_get,
                            journal_count, metric_sample as sample, new_db, running_run_id,
                            scalar, wait_until, write_config)


def run_counts(dsn, run_id):
    return scalar(dsn, "SELECT rows_scanned || '/' || rotated FROM keymig.runs"
                       " WHERE run_id = '%s'" % run_id)


class ThrottleCase(DbTestCase):
    """One database per test with COUNTS rows; keymig configured with MIGRATION."""

    DB, COUNTS, SEED, MIGRATION = None, None, None, {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, cls.COUNTS, seed=cls.SEED)

    def setUp(self):
        self.dsn = new_db(self.DB)
        self.fx.load(self.dsn)
        config = write_config(self.tmp, self.keys.active, self.keys.rolling,
                              migration=self.migration())
        self.km = Keymig(self, config, self.dsn, self.fx.secrets)

    def migration(self):
        return self.MIGRATION

    def tearDown(self):
        drop_db(self.DB)


class FlagFileTest(ThrottleCase):

    DB, COUNTS, SEED = "kmt_throttle_flag", {"rolling0": 6_000, "active": 100}, 41

    def migration(self):
        self.flag = os.path.join(self.tmp, "pause")
        return {"throttle": {"flagFile": self.flag}}

    def tearDown(self):
        if os.path.exists(self.flag):
            os.unlink(self.flag)
        super().tearDown()

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


class LockTimeoutTest(ThrottleCase):
    """The application holds SELECT ... FOR UPDATE on rows longer than lockTimeout."""

    DB, COUNTS, SEED = "kmt_throttle_locks", {"rolling0": 3_000}, 47
    MIGRATION = {"lockTimeout": "300ms"}
    LOCKED = list(range(1150, 1155))
    LATER = 1149  # the application's later UPDATE, a row keymig's batch may hold

    def setUp(self):
        super().setUp()
        scalar(self.dsn, "CREATE TABLE app_waits (waited interval)")

    def test_rows_the_application_holds_are_left_and_the_application_never_waits_long(self):
        app = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        before = {r.id: r.token for r in self.fx.rows}
        try:
            app.stdin.write("BEGIN;\nSELECT id FROM public.users WHERE id BETWEEN %d AND %d"
                            " FOR UPDATE;\n" % (self.LOCKED[0], self.LOCKED[-1]))
            app.stdin.flush()
            self.assertTrue(wait_until(lambda: scalar(
                self.dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                " current_database() AND state = 'idle in transaction'") == "1", 10))
            proc = self.km.start("migrate", "--json", "--batch-size", "200", "--threads", "1")
            waiting = wait_until(lambda: scalar(
                self.dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                " 'keymig' AND wait_event_type = 'Lock'") != "0", 30)
            self.assertTrue(waiting, "keymig never waited for the application's row lock")
            # The application goes on in its transaction: it updates a row next to the
            # ones it holds, which keymig's batch may hold while it waits for them.
            app.stdin.write("CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;\n"
                            "UPDATE public.users SET username = username WHERE id = %d;\n"
                            "INSERT INTO app_waits SELECT clock_timestamp() - t FROM t0;\n"
                            % self.LATER)
            app.stdin.flush()
            # Every other row is done while the application still holds its rows.
            r = self.km.finish(proc, timeout=20)
            self.assertEqual(r.returncode, EXIT_OK, r.describe())
            held = self.LOCKED + [self.LATER]
        finally:
            app.stdin.write("COMMIT;\n")
            app.stdin.close()
            app.wait(30)
            app_err = app.stderr.read()
            app.stderr.close()
        self.assertEqual(app.returncode, 0, app_err)
        s = r.json
        self.assertIn(s["conflicts"], (len(self.LOCKED), len(held)), s)
        self.assertEqual(s["rotated"], 3_000 - s["conflicts"], s)
        self.assertIn("event=rows_locked", r.stderr)
        now = current_secrets(self.dsn)
        for row in self.fx.rows:
            if row.id in self.LOCKED:
                self.assertEqual(now[row.id][0], before[row.id], "row %d was locked" % row.id)
            elif row.id != self.LATER:
                self.assert_rotated(self.keys, row, now[row.id][0], "(not locked)")
        waited = float(scalar(self.dsn, "SELECT extract(epoch FROM max(waited)) FROM app_waits"))
        self.assertLess(waited, 0.3 + 0.25,
                        "keymig kept the application waiting %.3fs (lockTimeout 300ms)" % waited)
        # The rows it left move in the next run, now that the application let go.
        again = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(again["rotated"], s["conflicts"], again)
        self.km.run("verify", "--json", expect=EXIT_OK)


class CriticalLoadTest(ThrottleCase):
    """More active sessions than criticalActiveSessions stop the run; it resumes."""

    DB, COUNTS, SEED = "kmt_throttle_critical", {"rolling0": 6_000}, 53
    MIGRATION = {"throttle": {"criticalActiveSessions": 3}}

    def setUp(self):
        super().setUp()
        self.sleepers = []

    def tearDown(self):
        for p in self.sleepers:
            if p.poll() is None:
                p.kill()
            p.wait(30)
        super().tearDown()

    def test_critical_load_stops_the_run_cleanly_and_it_resumes(self):
        proc = self.km.start("migrate", "--json", "--batch-size", "200", "--threads", "2",
                             "--max-rows-per-second", "2000")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 400, 60))
        # The application's sign-ins pile up: four sessions busy at once.
        for _ in range(4):
            self.sleepers.append(subprocess.Popen(
                ["psql", "-X", "-q", "-d", self.dsn, "-c", "SELECT pg_sleep(60)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = self.km.finish(proc, timeout=30)
        self.assertEqual(r.returncode, EXIT_RUNTIME, r.describe())
        s = r.json
        self.assertTrue(s["stopped"], s)
        self.assertEqual(s["state"], "running", s)
        self.assertRegex(s["stopped_by"], r"^critical load: [0-9]+ active sessions > 3$")
        self.assertIn("event=critical_load", r.stderr)
        self.assertLess(s["rotated"], 6_000, s)
        # The load goes away (a killed psql leaves its backend asleep: end those too).
        self.end_load()
        again = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertTrue(again["resumed"], again)
        self.assertEqual(again["run_id"], run_id, again)
        self.assertEqual(again["run_totals"]["rotated"], 6_000, again)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)

    def end_load(self):
        scalar(self.dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                         " WHERE query = 'SELECT pg_sleep(60)' AND pid <> pg_backend_pid()")
        for p in self.sleepers:
            p.wait(30)

    def test_a_request_stopped_by_critical_load_fails_and_is_not_claimed_again(self):
        # Requeued as a shutdown would be, the request would be claimed again at once,
        # against a database that had just asked keymig to back off.
        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="serve.yaml",
                              migration={"throttle": {"criticalActiveSessions": 3},
                                         "batchSize": 200, "maxRowsPerSecond": 2000})
        serve = start_serve(self, config, self.dsn, self.fx.secrets,
                            extra_args=["--poll-interval", "60"])
        rid = enqueue(self.dsn, "migrate")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 400, 60))
        for _ in range(4):
            self.sleepers.append(subprocess.Popen(
                ["psql", "-X", "-q", "-d", self.dsn, "-c", "SELECT pg_sleep(60)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        state, result, _ = wait_request(self.dsn, rid, timeout=60)
        self.assertEqual(state, "failed", result)
        self.assertEqual(result["exit_code"], EXIT_RUNTIME, result)
        self.assertRegex(result["error"], r"critical load: [0-9]+ active sessions > 3")
        self.assertNotIn("requeued", result)
        time.sleep(2)
        self.assertEqual(len(serve.events("request_claimed")), 1)
        self.end_load()
        # The run is resumable: the next request finishes it.
        again = enqueue(self.dsn, "migrate")
        state, result, _ = wait_request(self.dsn, again, timeout=120)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["run_id"], run_id, result)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)


def replica(command):
    proc = subprocess.run([PG_SCRIPT, "replica", command], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("scripts/pg replica %s: %s" % (command, proc.stderr))
    return proc.stdout.strip()


class ReplicaLagTest(ThrottleCase):
    """A real streaming standby of the test cluster whose replay the test pauses."""

    # Four batches a second, one per probe of the standbys (at most every 250 ms).
    BATCH, RATE, ROWS = 200, 800, 5_000
    DB, COUNTS, SEED = "kmt_throttle_lag", {"rolling0": ROWS, "active": 100}, 43
    MIGRATION = {"throttle": {"maxReplicaLag": "1s"}}

    @classmethod
    def setUpClass(cls):
        cls.replica_dsn = replica("start")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        replica("destroy")
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        # The standby has the new database before keymig starts.
        self.assertTrue(wait_until(lambda: scalar(self.dsn, "SELECT count(*) FROM pg_stat_replication"
                                                  " WHERE replay_lsn >= pg_current_wal_lsn()")
                                   == "1", 30), "the standby does not catch up")

    def tearDown(self):
        scalar(self.replica_dsn, "SELECT pg_wal_replay_resume()")
        super().tearDown()

    def lag(self, run_id=None):
        """The worst standby's replay lag as the primary sees it, in seconds (0: caught up),
        and with a run, its journal rows at the same moment."""
        lag = ("SELECT coalesce(max(CASE WHEN replay_lsn >= pg_current_wal_lsn() THEN 0 ELSE"
               " extract(epoch FROM replay_lag) END), 0) FROM pg_stat_replication")
        if run_id is None:
            return float(scalar(self.dsn, lag) or 0)
        out = scalar(self.dsn, "SELECT (%s), (SELECT count(*) FROM keymig.journal WHERE"
                               " run_id::text = '%s')" % (lag, run_id))
        lag_text, rows = out.split("|")
        return float(lag_text or 0), int(rows)

    def test_migrate_waits_while_the_standby_lags_and_resumes_after(self):
        proc = self.km.start("migrate", "--json", "--batch-size", str(self.BATCH), "--threads",
                             "1", "--max-rows-per-second", str(self.RATE))
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        # Before the pause: the lag stays under the limit and the run moves.
        samples = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            samples.append(self.lag())
            time.sleep(0.1)
        self.assertLess(max(samples), 1.0, samples)
        self.assertGreater(journal_count(self.dsn, run_id), 0)

        scalar(self.replica_dsn, "SELECT pg_wal_replay_pause()")
        over_at = None  # journal rows when the measured lag first passed the limit
        paused_until = time.monotonic() + 6
        trace = []
        while time.monotonic() < paused_until:
            lag, rows = self.lag(run_id)
            trace.append((round(lag, 2), rows))
            if over_at is None and lag > 1.0:
                over_at = rows
            time.sleep(0.1)
        rows_paused = journal_count(self.dsn, run_id)
        self.assertIsNotNone(over_at, "the standby's lag never passed 1s: %s" % trace)
        # keymig reads the lag at most every 250 ms; what it admitted before may commit.
        self.assertLessEqual(rows_paused - over_at, self.BATCH,
                             "more than one batch committed once the lag passed the limit: %s"
                             % trace)
        self.assertLess(rows_paused, self.ROWS, "the run ended before the standby lagged")
        self.assertIsNone(proc.poll(), "migrate ended while the standby lagged")

        scalar(self.replica_dsn, "SELECT pg_wal_replay_resume()")
        r = self.km.finish(proc, timeout=120)
        self.assertEqual(r.returncode, EXIT_OK, r.describe())
        self.assertEqual(r.json["rotated"], self.ROWS, r.json)
        self.assertIn("event=throttled reason=replica_lag", r.stderr)
        self.assertRegex(r.stderr, r"status=\"?waiting: replica lag [0-9.]+s > 1s")
        self.assertIn("event=throttle_cleared reason=replica_lag", r.stderr)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)


if __name__ == "__main__":
    unittest.main()
