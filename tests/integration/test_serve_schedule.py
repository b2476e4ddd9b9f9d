"""keyMigration.schedule.every: serve runs migrate then verify at start and again after
the interval; the runs show in /status and the rows end up under the active key."""

import json
import unittest

from keymig_testlib import (DbTestCase, KeySet, ServeProcess, UserFixture, current_secrets,
                            http_get, new_db, wait_until, write_config)


class ServeScheduleTest(DbTestCase):
    def test_every_runs_migrate_then_verify(self):
        dsn = new_db("h5_serve_schedule")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 120, "active": 5})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"schedule": {"every": "3s"}})
        serve = ServeProcess(config, dsn, fx.secrets)
        try:
            serve.wait_ready()

            def status():
                return json.loads(http_get(serve.port, "/status")[1])

            self.assertTrue(wait_until(lambda: "verify" in status()["last"], 30),
                            serve.stderr()[-2000:])
            doc = status()
            self.assertEqual(doc["last"]["migrate"]["source"], "schedule")
            self.assertEqual(doc["last"]["migrate"]["rotated"], 120, doc)
            self.assertTrue(doc["last"]["verify"]["succeeded"], doc)
            self.assertEqual(doc["schedule"]["every_seconds"], 3)
            now = current_secrets(dsn)
            for row in fx.by_kind("rolling"):
                self.assert_rotated(keys, row, now[row.id][0], "scheduled run")
            # And again after the interval: nothing left to rotate.
            self.assertTrue(wait_until(lambda: len(serve.events("scheduled_run_due")) >= 2, 15))
            self.assertTrue(wait_until(
                lambda: len([e for e in serve.events("run_finished")
                             if e.get("kind") == "verify"]) >= 2, 30))
            self.assertEqual(status()["last"]["migrate"]["rotated"], 0)
        finally:
            self.assertEqual(serve.stop(), 0)



if __name__ == "__main__":
    unittest.main()
