"""keymig serve's run control over HTTP (POST /control/pause, /control/resume,
/control/throttle) against a real PostgreSQL: a pause holds a queued run and a running one
(no batch commits), resume finishes it with every row right, a retune of rows per second
lowers the rate measurably, a missing or wrong bearer token changes nothing (401/403),
and without keyMigration.control.tokenFile the routes do not exist (404). The token never
appears in serve's output."""

import json
import os
import time
import unittest
import urllib.error
import urllib.request

from keymig_testlib import (DbTestCase, KeySet, UserFixture, check_all_rotated, drop_db,
                            enqueue, http_get, journal_count, new_db, running_run_id,
                            start_serve, wait_request, wait_until, write_config)

TOKEN = "kmt-control-token-7f3a9c0d1e2b4a5968"


def http_post(port, path, body=None, token=None, auth=None, timeout=5):
    """(status, body text) of POST http://127.0.0.1:port/path."""
    data = b"" if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method="POST")
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    elif auth is not None:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def control_status(port):
    status, body, _ = http_get(port, "/status")
    assert status == 200, body
    return json.loads(body)["control"]


def current_status(port):
    """The progress status of serve's main-lane run in /status, None without one."""
    status, body, _ = http_get(port, "/status")
    assert status == 200, body
    runs = json.loads(body)["current_runs"]
    return runs[0].get("progress", {}).get("status") if runs else None


def rate(dsn, run_id, seconds):
    """Rows journaled per second over `seconds`."""
    before = journal_count(dsn, run_id)
    time.sleep(seconds)
    return (journal_count(dsn, run_id) - before) / seconds


class ControlCase(DbTestCase):
    DB = None
    COUNTS = {"rolling0": 12_000, "active": 100}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, cls.COUNTS, seed=71)
        cls.fx.secrets.add(TOKEN)  # the leak check of serve's output covers the token too

    def setUp(self):
        self.dsn = new_db(self.DB)
        self.fx.load(self.dsn)

    def tearDown(self):
        drop_db(self.DB)

    def serve(self, migration):
        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="serve.yaml",
                              migration=migration)
        return start_serve(self, config, self.dsn, self.fx.secrets,
                           extra_args=["--poll-interval", "60"])


class ControlOffTest(ControlCase):
    DB = "kmt_control_off"
    COUNTS = {"rolling0": 10}

    def test_without_a_token_file_the_control_routes_do_not_exist(self):
        serve = self.serve({})
        for path in ("/control/pause", "/control/resume", "/control/throttle"):
            self.assertEqual(http_post(serve.port, path, token=TOKEN)[0], 404, path)
        self.assertEqual(control_status(serve.port)["enabled"], False)
        self.assertEqual(control_status(serve.port)["paused"], False)
        # The read-only routes refuse POST as before.
        self.assertEqual(http_post(serve.port, "/status")[0], 405)


class ControlTest(ControlCase):
    DB = "kmt_control"

    def setUp(self):
        super().setUp()
        self.token_file = os.path.join(self.tmp, "control.token")
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(TOKEN + "\n")

    def test_a_missing_or_wrong_token_is_refused_and_changes_nothing(self):
        serve = self.serve({"control": {"tokenFile": self.token_file}})
        port = serve.port
        self.assertEqual(http_post(port, "/control/pause")[0], 401)
        self.assertEqual(http_post(port, "/control/pause", auth="Basic a2V5bWln")[0], 401)
        self.assertEqual(http_post(port, "/control/pause", token=TOKEN[:-1] + "x")[0], 403)
        self.assertEqual(http_post(port, "/control/pause", token=TOKEN + "x")[0], 403)
        self.assertEqual(http_post(port, "/control/throttle", {"batch_size": 10},
                                   token="nope")[0], 403)
        state = control_status(port)
        self.assertEqual((state["enabled"], state["paused"], state["since"]), (True, False, None))
        self.assertEqual(state["batch_size"], 2000)
        # Bad bodies: 400 with a message naming the problem, nothing changed.
        for body, words in (({"batch_size": 0}, "batch_size: 0 is out of range 1-1000000"),
                            ({"max_rows_per_second": -1}, "out of range"),
                            ({"max_rows_per_second": "fast"}, "expected a whole number"),
                            ({"batchsize": 5}, "unknown key 'batchsize'"),
                            ({}, "give max_rows_per_second and/or batch_size")):
            status, text = http_post(port, "/control/throttle", body, token=TOKEN)
            self.assertEqual(status, 400, (body, text))
            self.assertIn(words, text)
        self.assertEqual(control_status(port)["since"], None)
        self.assertEqual(http_get(port, "/control/pause")[0], 405)
        log = serve.stderr()
        self.assertNotIn(TOKEN, log)
        self.assertNotIn(TOKEN[:-1] + "x", log)
        self.assertEqual(len(serve.events("control_refused")), 10)  # 2 × 401, 3 × 403, 5 × 400

    def test_pause_holds_runs_a_retune_slows_them_and_resume_finishes(self):
        serve = self.serve({"control": {"tokenFile": self.token_file}, "batchSize": 100,
                            "maxRowsPerSecond": 1500})
        port = serve.port
        # Paused before the request: the queued run starts but commits no batch.
        status, text = http_post(port, "/control/pause", token=TOKEN)
        self.assertEqual(status, 200, text)
        self.assertTrue(json.loads(text)["paused"])
        rid = enqueue(self.dsn, "migrate")
        run_id = wait_until(lambda: running_run_id(self.dsn), 60)
        self.assertIsNotNone(run_id)
        time.sleep(2)
        self.assertEqual(journal_count(self.dsn, run_id), 0, "a batch committed while paused")
        state = control_status(port)
        self.assertTrue(state["paused"])
        self.assertIsNotNone(state["since"])
        self.assertTrue(state["by"].startswith("127.0.0.1:"), state)
        self.assertTrue(wait_until(lambda: any(
            e.get("status") == "paused (operator)" for e in serve.events("progress")), 10),
            "no progress line says paused (operator)")
        self.assertTrue(wait_until(lambda: current_status(port) == "paused (operator)", 10),
                        "/status does not say the run is paused: %s" % current_status(port))

        self.assertEqual(http_post(port, "/control/resume", token=TOKEN)[0], 200)
        self.assertTrue(wait_until(lambda: journal_count(self.dsn, run_id) >= 300, 30))
        self.assertTrue(wait_until(lambda: current_status(port) == "running", 10),
                        current_status(port))
        fast = rate(self.dsn, run_id, 2.0)
        status, text = http_post(port, "/control/throttle",
                                 {"max_rows_per_second": 200, "batch_size": 50}, token=TOKEN)
        self.assertEqual(status, 200, text)
        self.assertEqual(json.loads(text)["max_rows_per_second"], 200)
        self.assertEqual(control_status(port)["batch_size"], 50)
        time.sleep(1.0)  # pages read at the old rate drain
        slow = rate(self.dsn, run_id, 3.0)
        self.assertGreater(fast, 700, "the run was slow before the retune")
        self.assertLess(slow, 400, "rows per second after the retune to 200: %.0f (before %.0f)"
                        % (slow, fast))
        self.assertLess(slow, fast / 2)

        # Paused while running: nothing commits (a batch already admitted may).
        self.assertEqual(http_post(port, "/control/pause", token=TOKEN)[0], 200)
        time.sleep(0.5)
        frozen = journal_count(self.dsn, run_id)
        time.sleep(3)
        self.assertEqual(journal_count(self.dsn, run_id), frozen, "a batch committed while paused")
        self.assertLess(frozen, 12_000)
        self.assertEqual(http_post(port, "/control/throttle", {"max_rows_per_second": 0},
                                   token=TOKEN)[0], 200)
        self.assertEqual(http_post(port, "/control/resume", token=TOKEN)[0], 200)
        state, result, _ = wait_request(self.dsn, rid, timeout=120)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["rotated"], 12_000, result)
        check_all_rotated(self, self.dsn, self.keys, self.fx, run_id)
        changes = serve.events("control_changed")
        self.assertEqual([e["action"] for e in changes],
                         ["pause", "resume", "throttle", "pause", "throttle", "resume"])
        self.assertTrue(all(e["by"].startswith("127.0.0.1:") for e in changes))
        self.assertTrue(serve.events("throttled"))
        self.assertNotIn(TOKEN, serve.stderr())


if __name__ == "__main__":
    unittest.main()
