"""keymig serve as a process: HTTP endpoints, the request queue (LISTEN/NOTIFY, SKIP
LOCKED claims, results), requests queued while it was down, reset_mfa through the queue,
and /metrics through promtool. Fixtures are made by Python's `cryptography`.

Every test has a database and a `keymig serve` of its own, so that they run in any order."""

import json
import subprocess
import unittest

from keymig_testlib import (DbTestCase, KeySet, UserFixture, current_secrets, enqueue,
                            http_get, make_serve_schema, new_db, start_serve, wait_request,
                            write_config)


class ServeQueueTest(DbTestCase):
    def setUp(self):
        self.dsn = new_db("h5_serve")
        self.keys = KeySet(rolling=1)
        self.fx = UserFixture(self.keys, {"rolling0": 400, "active": 50, "empty": 10})
        self.fx.load(self.dsn)
        self.config = write_config(self.tmp, self.keys.active, self.keys.rolling,
                                   migration={"batchSize": 100})

    def start(self):
        return start_serve(self, self.config, self.dsn, self.fx.secrets,
                           extra_args=["--poll-interval", "60"])

    def test_a_request_queued_while_serve_was_down_is_done_after_it_starts(self):
        # A first serve makes the schema; then a request is queued while none runs.
        make_serve_schema(self.config, self.dsn, self.fx.secrets)
        early = enqueue(self.dsn, "verify", notify=True)
        self.start()
        state, result, _ = wait_request(self.dsn, early)
        self.assertIn(state, ("done", "failed"))
        # Before the migration, verify finds rows that still need the rolling key.
        self.assertEqual(result["exit_code"], 4, result)
        self.assertEqual(result["needs_rolling"], 400, result)

    def test_a_notified_migrate_is_claimed_within_a_second_and_rotates_the_rows(self):
        serve = self.start()
        latencies = []
        rid = enqueue(self.dsn, "migrate")
        state, result, latency = wait_request(self.dsn, rid)
        latencies.append(latency)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["rotated"], 400, result)
        self.assertTrue(result["succeeded"])
        now = current_secrets(self.dsn)
        for row in self.fx.by_kind("rolling"):
            self.assert_rotated(self.keys, row, now[row.id][0], "after a queued migrate")
            self.assertTrue(now[row.id][1])
        # A few more wake-ups for a latency figure (verify of a migrated table is quick).
        for _ in range(5):
            rid = enqueue(self.dsn, "verify")
            state, result, latency = wait_request(self.dsn, rid)
            self.assertEqual(state, "done", result)
            latencies.append(latency)
        print("\nNOTIFY-to-claim latency ms: %s (max %.1f)" % (
            ", ".join("%.1f" % l for l in latencies), max(latencies)))
        for l in latencies:
            self.assertLess(l, 1000.0)
        status = json.loads(http_get(serve.port, "/status")[1])
        self.assertEqual(status["last"]["verify"]["succeeded"], True)
        self.assertIsNone(status["current_run"])

    def test_a_selected_migrate_scans_only_its_rows_and_bad_requests_fail_with_a_reason(self):
        self.start()
        rid = enqueue(self.dsn, "migrate", {"ids": [self.fx.rows[0].id], "usernames": []})
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["rows_scanned"], 1, result)
        for kind, params, why in (("reset_mfa", None, "never resets everyone"),
                                  ("reset_mfa", {"usernames": []}, "never resets everyone"),
                                  ("drop", None, "unknown kind"),
                                  ("migrate", {"where": "1=1"}, "unknown params field")):
            rid = enqueue(self.dsn, kind, params)
            state, result, _ = wait_request(self.dsn, rid)
            self.assertEqual(state, "failed", (kind, params, result))
            self.assertIn(why, result["error"])

    def test_a_reset_mfa_request_clears_only_the_named_user(self):
        self.start()
        victim = self.fx.by_kind("active")[0]
        before = current_secrets(self.dsn)
        rid = enqueue(self.dsn, "reset_mfa", {"usernames": [victim.username]})
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "done", result)
        after = current_secrets(self.dsn)
        self.assertIn(after[victim.id][0], (None, ""))
        for rid_, value in before.items():
            if rid_ != victim.id:
                self.assertEqual(after[rid_], value)

    def test_the_http_endpoints_answer_health_readiness_status_and_404(self):
        serve = self.start()
        status, body, ctype = http_get(serve.port, "/healthz")
        self.assertEqual(status, 200)
        status, body, _ = http_get(serve.port, "/readyz")
        self.assertEqual(status, 200)
        status, body, ctype = http_get(serve.port, "/status")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "application/json")
        doc = json.loads(body)
        for field in ("instance", "ready", "current_run", "last", "config", "requests"):
            self.assertIn(field, doc)
        self.assertTrue(doc["ready"])
        self.assertEqual(http_get(serve.port, "/nope")[0], 404)

    def test_the_metrics_after_a_migrate_pass_promtool(self):
        serve = self.start()
        rid = enqueue(self.dsn, "migrate")
        wait_request(self.dsn, rid)
        status, body, ctype = http_get(serve.port, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertIn("keymig_rows_total{", body)
        proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                              text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
