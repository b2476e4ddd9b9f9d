"""keymig serve as a process: HTTP endpoints, the request queue (LISTEN/NOTIFY, SKIP
LOCKED claims, results), requests queued while it was down, reset_mfa through the queue,
and /metrics through promtool. Fixtures are made by Python's `cryptography`."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from keymig_testlib import (BINARY, DbTestCase, KeySet, Secrets, UserFixture, clean_env,
                            current_secrets, new_db, psql, scalar, wait_until, write_config)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) if unreachable."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e), None


class ServeProcess:
    """`keymig serve` in the background, with its stderr in a file we can search."""

    def __init__(self, config, dsn, secrets, extra_args=(), env=None):
        self.port = free_port()
        self.secrets = secrets
        self.log = tempfile.NamedTemporaryFile(mode="w+", prefix="keymig-serve-", delete=False)
        args = [BINARY, "serve", "--config", config, "--metrics-listen",
                "127.0.0.1:%d" % self.port, "--log-format", "json"]
        if dsn:
            args += ["--dsn", dsn]
        self.proc = subprocess.Popen(args + list(extra_args), stdout=subprocess.PIPE,
                                     stderr=self.log, env=clean_env(env))

    def wait_ready(self, timeout=30):
        ok = wait_until(lambda: http_get(self.port, "/readyz")[0] == 200 or
                        self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None or not ok:
            raise AssertionError("keymig serve did not become ready:\n" + self.stderr()[-3000:])

    def stderr(self):
        with open(self.log.name) as f:
            return f.read()

    def events(self, name=None):
        out = []
        for line in self.stderr().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if name is None or doc.get("event") == name:
                out.append(doc)
        return out

    def signal(self, signo):
        self.proc.send_signal(signo)

    def stop(self, timeout=60):
        """SIGTERM, wait, check outputs for secrets; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("keymig serve did not stop within %ds" % timeout)
        stdout = self.proc.stdout.read().decode()
        self.proc.stdout.close()
        text = self.stderr()
        os.unlink(self.log.name)
        for stream, content in (("stdout", stdout), ("stderr", text)):
            leaks = self.secrets.leaks(content)
            if leaks:
                raise AssertionError("keymig serve leaked %s on %s" % (sorted(set(leaks)), stream))
        return code


def enqueue(dsn, kind, params=None, notify=True):
    """Inserts a request as the application does (one transaction with the NOTIFY)."""
    p = "NULL" if params is None else "'%s'::jsonb" % json.dumps(params).replace("'", "''")
    sql = "INSERT INTO keymig.requests(kind, params) VALUES ('%s', %s) RETURNING id" % (kind, p)
    if notify:
        sql = "BEGIN; %s; NOTIFY keymig_requests; COMMIT" % sql
    out = psql(dsn, sql)
    return int([l for l in out.splitlines() if l.strip().isdigit()][0])


def request_row(dsn, rid):
    state, result, latency = scalar(dsn, (
        "SELECT state || '|' || coalesce(result::text, 'null') || '|' || "
        "coalesce((extract(epoch FROM started_at - created_at) * 1000)::text, '') "
        "FROM keymig.requests WHERE id = %d") % rid).split("|")
    return state, json.loads(result), float(latency) if latency else None


def wait_request(dsn, rid, states=("done", "failed"), timeout=60):
    got = wait_until(lambda: request_row(dsn, rid)[0] in states, timeout)
    if not got:
        raise AssertionError("request %d still %s" % (rid, request_row(dsn, rid)))
    return request_row(dsn, rid)


class ServeQueueTest(DbTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dsn = new_db("h5_serve")
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 400, "active": 50, "empty": 10})
        cls.fx.load(cls.dsn)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling,
                                  migration={"batchSize": 100})
        # A first serve makes the schema; then a request is queued while none runs.
        first = ServeProcess(cls.config, cls.dsn, cls.fx.secrets)
        first.wait_ready()
        wait_until(lambda: scalar(cls.dsn, "SELECT to_regclass('keymig.requests') IS NOT NULL")
                   == "t", 30)
        assert first.stop() == 0
        cls.early = enqueue(cls.dsn, "verify", notify=True)
        cls.serve = ServeProcess(cls.config, cls.dsn, cls.fx.secrets,
                                 extra_args=["--poll-interval", "60"])
        cls.serve.wait_ready()

    @classmethod
    def tearDownClass(cls):
        code = cls.serve.stop()
        super().tearDownClass()
        assert code == 0, "keymig serve exited %d" % code

    def test_1_request_queued_while_down_is_done_after_start(self):
        state, result, _ = wait_request(self.dsn, self.early)
        self.assertIn(state, ("done", "failed"))
        # Before the migration, verify finds rows that still need the rolling key.
        self.assertEqual(result["exit_code"], 4, result)
        self.assertEqual(result["needs_rolling"], 400, result)

    def test_2_notified_migrate_is_claimed_within_a_second(self):
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
        status = json.loads(http_get(self.serve.port, "/status")[1])
        self.assertEqual(status["last"]["verify"]["succeeded"], True)
        self.assertIsNone(status["current_run"])

    def test_3_selected_migrate_and_bad_requests(self):
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

    def test_4_reset_mfa_request_clears_only_the_named_user(self):
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

    def test_5_http_endpoints(self):
        status, body, ctype = http_get(self.serve.port, "/healthz")
        self.assertEqual(status, 200)
        status, body, _ = http_get(self.serve.port, "/readyz")
        self.assertEqual(status, 200)
        status, body, ctype = http_get(self.serve.port, "/status")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "application/json")
        doc = json.loads(body)
        for field in ("instance", "ready", "current_run", "last", "config", "requests"):
            self.assertIn(field, doc)
        self.assertTrue(doc["ready"])
        self.assertEqual(http_get(self.serve.port, "/nope")[0], 404)

    def test_6_metrics_pass_promtool(self):
        rid = enqueue(self.dsn, "migrate")
        wait_request(self.dsn, rid)
        status, body, ctype = http_get(self.serve.port, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertIn("keymig_rows_total{", body)
        proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                              text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
