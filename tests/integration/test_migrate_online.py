"""keymig under live traffic: an application writing during the run, and keymig's
database connection being cut (pg_terminate_backend) in the middle.

The writer is a psql process fed one autocommitted UPDATE at a time; it changes secrets
to new rolling-key tokens, new active-key tokens, NULL and ''. keymig must never overwrite
a newer value: each row the writer touched ends as the writer's last write, or, when that
was a rolling-key token, as its rotation (same plaintext, same timestamp). Random writes
rarely land between keymig's read and write of a row, so one test forces that case: an
UPDATE held uncommitted until keymig waits for its row.
"""

import random
import subprocess
import threading
import time
import unittest

from keymig_testlib import (EXIT_OK, EXIT_RUNTIME, DbTestCase, Keymig, KeySet, UserFixture,
                            check_all_rotated, current_secrets, decrypt_with, drop_db,
                            journal_count, make_token, new_db, psql, running_run_id, scalar,
                            totp_secret, wait_until, write_config)


class Writer(threading.Thread):
    """The application: random rows, one UPDATE each, until stopped."""

    def __init__(self, dsn, keys, ids, secrets, seed):
        super().__init__(daemon=True)
        self.dsn, self.keys, self.ids, self.secrets = dsn, keys, ids, secrets
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.last = {}  # id -> (kind, token, plaintext, timestamp)
        self.writes = 0

    def run(self):
        proc = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            while not self.stop.is_set():
                rid = self.rng.choice(self.ids)
                what = self.rng.random()
                ts = int(time.time()) - self.rng.randrange(0, 10_000)
                plain = totp_secret(self.rng)
                if what < 0.45:
                    kind, token = "rolling", make_token(self.keys.rolling[0], plain, ts)
                elif what < 0.8:
                    kind, token = "active", make_token(self.keys.active, plain, ts)
                elif what < 0.9:
                    kind, token, plain = "null", None, None
                else:
                    kind, token, plain = "blank", "", None
                self.secrets.add(token, plain)
                value = "NULL" if token is None else "'%s'" % token
                proc.stdin.write("UPDATE public.users SET mfa_secret = %s, mfa_fernet_active = %s "
                                 "WHERE id = %d;\n" % (value, "true" if kind == "active"
                                                       else "false", rid))
                proc.stdin.flush()
                self.last[rid] = (kind, token, plain, ts)
                self.writes += 1
                time.sleep(0.0005)
        finally:
            proc.stdin.close()
            err = proc.stderr.read()
            proc.wait()
            self.error = err if proc.returncode else None


class OnlineTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 60_000, "active": 500, "empty": 500},
                             seed=31)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def setUp(self):
        self.dbname = "kmt_online_%s" % self._testMethodName[5:20]
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def test_a_live_writer_loses_no_write(self):
        writer = Writer(self.dsn, self.keys, [r.id for r in self.fx.rows], self.fx.secrets, 7)
        writer.start()
        time.sleep(0.3)
        r = self.km.run("migrate", "--json", "--batch-size", "200", "--threads", "2",
                        "--max-rows-per-second", "20000", expect=EXIT_OK)
        writer.stop.set()
        writer.join(60)
        self.assertIsNone(writer.error, writer.error)
        s = r.json
        print("\nwriter: %d writes to %d rows during the run; keymig %s" % (
            writer.writes, len(writer.last),
            {k: s[k] for k in ("rotated", "already_active", "conflicts", "empty")}))
        self.assertGreater(writer.writes, 1000, "the writer did not overlap the run")

        now = current_secrets(self.dsn)
        still_rolling = 0
        for row in self.fx.rows:
            token, flag = now[row.id]
            if row.id not in writer.last:
                if row.kind == "rolling0":
                    self.assert_rotated(self.keys, row, token)
                    self.assertTrue(flag)
                else:
                    self.assertEqual(token, row.token)
                continue
            kind, wtoken, wplain, wts = writer.last[row.id]
            if kind in ("null", "blank", "active"):
                self.assertEqual(token, wtoken, "row %d: the writer's %s was overwritten"
                                 % (row.id, kind))
                self.assertEqual(flag, kind == "active", "row %d: flag" % row.id)
            elif token == wtoken:
                still_rolling += 1
            else:
                got = decrypt_with(self.keys.active, token)
                self.assertIsNotNone(got, "row %d: the writer's token was replaced by one "
                                     "the active key cannot read" % row.id)
                self.assertEqual(got, (wplain, wts), "row %d: the writer's write was lost"
                                 % row.id)

        # The rows the writer left under the rolling key move in a second run.
        again = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(again["rotated"], still_rolling, again)
        self.km.run("verify", "--json", expect=EXIT_OK)

    def test_a_write_committed_while_keymig_waits_for_the_row_is_kept(self):
        # Deterministic compare-and-swap miss: the application holds a row lock on an
        # uncommitted change, keymig reads the old token, rotates it and waits for the
        # lock; the application commits, PostgreSQL re-checks keymig's condition on the
        # new row version, the CAS misses, and the end-of-run sweep handles the row anew.
        row = next(r for r in self.fx.rows if r.kind == "rolling0")
        plain = totp_secret(random.Random(5))
        ts = int(time.time()) - 1234
        app_token = make_token(self.keys.rolling[0], plain, ts)
        self.fx.secrets.add(app_token, plain)
        app = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        try:
            app.stdin.write("BEGIN;\nUPDATE public.users SET mfa_secret = '%s' WHERE id = %d;\n"
                            % (app_token, row.id))
            app.stdin.flush()
            wait_until(lambda: scalar(self.dsn, "SELECT count(*) FROM pg_locks l JOIN pg_class c"
                                      " ON c.oid = l.relation WHERE c.relname = 'users'"
                                      " AND l.mode = 'RowExclusiveLock' AND l.granted") != "0", 10)
            proc = self.km.start("migrate", "--json", "--batch-size", "500")
            waiting = wait_until(lambda: scalar(
                self.dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                " 'keymig' AND wait_event_type = 'Lock'") != "0", 60)
            self.assertTrue(waiting, "keymig never waited for the application's row lock")
            app.stdin.write("COMMIT;\n")
            app.stdin.flush()
        finally:
            app.stdin.close()
            app.wait(30)
            app_err = app.stderr.read()
            app.stderr.close()
        self.assertEqual(app.returncode, 0, app_err)
        r = self.km.finish(proc)
        self.assertEqual(r.returncode, EXIT_OK, r.describe())
        s = r.json
        self.assertGreaterEqual(s["conflicts_resolved"], 1, s)
        self.assertEqual(s["conflicts"], 0, s)
        token, flag = current_secrets(self.dsn)[row.id]
        self.assertNotEqual(token, row.token)
        self.assertEqual(decrypt_with(self.keys.active, token), (plain, ts),
                         "the application's write was lost or not rotated")
        self.assertTrue(flag)
        self.assertEqual(scalar(self.dsn, "SELECT keymig.journal_text(old_token) FROM keymig.journal WHERE"
                                " row_id = '%d'" % row.id), app_token,
                         "the journal must hold the token the sweep replaced")
        self.km.run("verify", "--json", expect=EXIT_OK)

    def test_terminated_backends_are_survived(self):
        proc = self.km.start("migrate", "--json", "--batch-size", "500", "--threads", "2",
                             "--max-rows-per-second", "15000")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        killed = 0
        for threshold in (8_000, 25_000):
            self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= threshold
                                       or proc.poll() is not None, 120))
            if proc.poll() is not None:
                break
            # CASE fixes the evaluation order: the planner may otherwise call
            # pg_terminate_backend on rows (our own session) before the filters.
            killed += int(psql(self.dsn, "SELECT count(*) FILTER (WHERE CASE WHEN "
                               "application_name = 'keymig' AND datname = current_database() "
                               "AND pid <> pg_backend_pid() THEN pg_terminate_backend(pid) "
                               "ELSE false END) FROM pg_stat_activity"))
        self.assertGreater(killed, 0, "no backend with application_name 'keymig' to terminate")
        first = self.km.finish(proc)
        self.assertIn(first.returncode, (EXIT_OK, EXIT_RUNTIME), first.describe())
        if first.returncode == EXIT_RUNTIME:
            self.assertTrue(first.stderr.strip(), "exit 1 must say why")
            self.km.run("migrate", "--json", "--run-id", run_id, expect=EXIT_OK)
        print("\nterminated %d keymig backends; first process exit %d" % (killed,
                                                                           first.returncode))
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = "
                                "'%s'" % run_id), "completed")
        self.km.run("verify", "--json", "--run", run_id, expect=EXIT_OK)


if __name__ == "__main__":
    unittest.main()
