"""SIGHUP to keymig serve reloads the config and keys and says so; it starts no run. A
schedule of `every: 24h` ran a whole-table migrate on every SIGHUP, unannounced: here the
scheduled run at start happens once, a SIGHUP after it logs what it did, and no second run
follows."""

import json
import signal
import time
import unittest

from keymig_testlib import (DbTestCase, KeySet, ServeProcess, UserFixture, http_get, new_db,
                            wait_until, write_config)


class ServeReloadTest(DbTestCase):
    def test_sighup_reloads_and_starts_no_run(self):
        dsn = new_db("h5_serve_reload")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 50, "active": 5})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"schedule": {"every": "24h"}})
        serve = ServeProcess(config, dsn, fx.secrets)
        try:
            serve.wait_ready()

            def verifies_finished():
                return [e for e in serve.events("run_finished") if e.get("kind") == "verify"]

            # The run at start: migrate, then verify of that run.
            self.assertTrue(wait_until(verifies_finished, 30), serve.stderr()[-2000:])
            status = json.loads(http_get(serve.port, "/status")[1])
            next_run = status["schedule"]["next_run_at"]

            serve.signal(signal.SIGHUP)
            self.assertTrue(wait_until(lambda: serve.events("config_reloaded"), 10),
                            serve.stderr()[-2000:])
            time.sleep(2)
            # Before: scheduled_run_due and a second whole-table migrate at once.
            self.assertEqual(len(serve.events("scheduled_run_due")), 1, serve.stderr()[-3000:])
            started = [e for e in serve.events("run_started") if e["module"] == "service"]
            self.assertEqual(len(started), 2, serve.stderr()[-3000:])
            reloaded = serve.events("config_reloaded")[0]
            self.assertEqual(reloaded["run_started"], False, reloaded)
            self.assertEqual(reloaded["next_run_at"], next_run, reloaded)
            self.assertEqual(reloaded["generation"], 2, reloaded)
            status = json.loads(http_get(serve.port, "/status")[1])
            self.assertIsNone(status["current_run"], status)
            self.assertEqual(status["config"]["generation"], 2)
            self.assertEqual(status["schedule"]["next_run_at"], next_run)
        finally:
            self.assertEqual(serve.stop(), 0)


if __name__ == "__main__":
    unittest.main()
