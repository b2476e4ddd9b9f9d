"""keymig serve and signals: SIGTERM in the middle of a long migrate drains (exit 0, the
checkpoint consistent, the request back in the queue, a restart finishes it); SIGHUP with
a new active key makes the next run use it; a bad config on SIGHUP keeps the old one."""

import json
import os
import signal
import time
import unittest

from keymig_testlib import (DbTestCase, KeySet, ServeProcess, UserFixture, check_consistent,
                            current_secrets, decrypt_with, enqueue, http_get, journal_count, new_db,
                            request_row, running_run_id, scalar, wait_request, wait_until,
                            write_config)


class ServeSigtermTest(DbTestCase):
    def test_sigterm_mid_migrate_drains_and_a_restart_finishes(self):
        dsn = new_db("h5_serve_sigterm")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 6000, "active": 100})
        fx.load(dsn)
        # Throttled so that the run is long enough to interrupt: ~6 s.
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"batchSize": 100, "maxRowsPerSecond": 1000})
        serve = ServeProcess(config, dsn, fx.secrets)
        serve.wait_ready()
        # It holds keys and tokens in memory: no core file.
        with open("/proc/%d/limits" % serve.proc.pid) as f:
            core = [line.split()[4:6] for line in f if line.startswith("Max core file size")]
        self.assertEqual(core, [["0", "0"]])
        rid = enqueue(dsn, "migrate")
        run_id = wait_until(lambda: journal_count(dsn) > 0 and running_run_id(dsn), 30)
        self.assertTrue(run_id, serve.stderr()[-2000:])
        start = time.monotonic()
        code = serve.stop(timeout=30)
        drained = time.monotonic() - start
        print("\nSIGTERM to exit: %.2f s" % drained)
        self.assertEqual(code, 0)
        self.assertLess(drained, 10)
        moved = check_consistent(self, dsn, fx, run_id)
        self.assertGreater(moved, 0)
        self.assertLess(moved, 6000, "the run was not interrupted")
        state, result, _ = request_row(dsn, rid)
        self.assertEqual(state, "queued", result)
        self.assertTrue(result.get("interrupted"), result)

        # The next serve claims the requeued request on connect and resumes the run.
        serve = ServeProcess(config, dsn, fx.secrets)
        serve.wait_ready()
        state, result, _ = wait_request(dsn, rid, timeout=120)
        self.assertEqual(state, "done", result)
        now = current_secrets(dsn)
        for row in fx.by_kind("rolling"):
            self.assert_rotated(keys, row, now[row.id][0], "after SIGTERM and a resumed run")
        self.assertEqual(serve.stop(), 0)


class ServeSighupTest(DbTestCase):
    def test_sighup_reloads_keys_and_refuses_a_bad_config(self):
        dsn = new_db("h5_serve_sighup")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 200, "active": 20})
        fx.load(dsn)
        fx.secrets.add_key(keys.unknown)
        config = write_config(self.tmp, keys.active, keys.rolling, migration={"batchSize": 50})
        serve = ServeProcess(config, dsn, fx.secrets)
        try:
            serve.wait_ready()
            rid = enqueue(dsn, "migrate")
            state, result, _ = wait_request(dsn, rid)
            self.assertEqual(state, "done", result)

            # Rotate again: a brand-new active key, the old active becomes rolling.
            newest = keys.unknown
            write_config(self.tmp, newest, [keys.active] + keys.rolling,
                         migration={"batchSize": 50})
            serve.signal(signal.SIGHUP)
            self.assertTrue(wait_until(lambda: serve.events("config_reloaded"), 10),
                            serve.stderr()[-2000:])
            rid = enqueue(dsn, "migrate")
            state, result, _ = wait_request(dsn, rid)
            self.assertEqual(state, "done", result)
            self.assertEqual(result["rotated"], 220, result)
            now = current_secrets(dsn)
            for row in fx.by_kind("rolling") + fx.by_kind("active"):
                got = decrypt_with(newest, now[row.id][0])
                self.assertIsNotNone(got, "row %d not under the reloaded active key" % row.id)
                self.assertEqual(got[0], row.plaintext)

            # A broken config is refused; the service keeps running on the previous one.
            with open(config, "w") as f:
                f.write("secretStore: {activeKey: [not, a, key]\n")
            serve.signal(signal.SIGHUP)
            self.assertTrue(wait_until(lambda: serve.events("config_reload_refused"), 10),
                            serve.stderr()[-2000:])
            status = json.loads(http_get(serve.port, "/status")[1])
            self.assertEqual(status["config"]["generation"], 2)
            self.assertIn("last_reload_error", status["config"])
            self.assertEqual(http_get(serve.port, "/readyz")[0], 200)
            rid = enqueue(dsn, "verify")
            state, result, _ = wait_request(dsn, rid)
            self.assertEqual(state, "done", result)
            self.assertEqual(result["succeeded"], True)
            self.assertEqual(result["ok"], 220, result)
        finally:
            self.assertEqual(serve.stop(), 0)


if __name__ == "__main__":
    unittest.main()
