"""Metrics of one-shot commands (DESIGN.md sections 3 and 6): a live /metrics during a
migrate, a push to a real Pushgateway at the end (failed runs included), and a
node_exporter textfile that promtool accepts."""

import os
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from keymig_testlib import (EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, DbTestCase, Keymig, KeySet, UserFixture,
                            drop_db, metric_sample as sample, new_db, wait_until,
                            write_config)

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
PROMTOOL = "/usr/bin/promtool"
COUNTS = {"empty": 20, "active": 50, "rolling0": 3000}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class OneShotMetricsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for tool in (PUSHGATEWAY, PROMTOOL):
            if not os.access(tool, os.X_OK):
                raise AssertionError("%s missing (scripts/install-deps installs it)" % tool)
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=77)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.port = free_port()
        cls.gateway = "http://127.0.0.1:%d" % cls.port
        cls.pg = subprocess.Popen(
            [PUSHGATEWAY, "--web.listen-address=127.0.0.1:%d" % cls.port,
             "--persistence.file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until(lambda: cls._up(), timeout=20):
            cls.pg.kill()
            raise AssertionError("the Pushgateway did not start")

    @classmethod
    def _up(cls):
        try:
            http_get(cls.gateway + "/-/ready", timeout=0.5)
            return True
        except (urllib.error.URLError, OSError):
            return False

    @classmethod
    def tearDownClass(cls):
        cls.pg.terminate()
        try:
            cls.pg.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.pg.kill()
        super().tearDownClass()

    def setUp(self):
        self.dbname = "kmt_oneshot_metrics"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def test_migrate_serves_live_metrics_pushes_and_writes_a_textfile(self):
        port = free_port()
        textfile = os.path.join(self.tmp, "keymig.prom")
        # Throttled so that the scrape happens while rows are still moving.
        proc = self.km.start("migrate", "--json", "--max-rows-per-second", "1500",
                             "--metrics-listen", "127.0.0.1:%d" % port,
                             "--push-gateway", self.gateway, "--metrics-textfile", textfile)
        url = "http://127.0.0.1:%d/metrics" % port

        def mid_run():
            try:
                text = http_get(url, timeout=0.5)
            except (urllib.error.URLError, OSError):
                return None
            rotated = sample(text, "keymig_rows_total", outcome="rotated")
            in_progress = sample(text, "keymig_run_in_progress")
            if rotated and in_progress == 1:
                return text
            return None

        live = wait_until(mid_run, timeout=20)
        result = self.km.finish(proc)
        self.assertEqual(result.returncode, EXIT_OK, result.describe())
        self.assertIsNotNone(live, "no scrape saw rows moving while the run was in progress")
        self.assertLess(sample(live, "keymig_rows_total", outcome="rotated"), COUNTS["rolling0"])
        self.assertIsNotNone(sample(live, "keymig_build_info"))
        self.assertFalse(self.fx.secrets.leaks(live), "a secret in the scraped metrics")

        # The Pushgateway holds the run's final counts under job keymig.
        pushed = http_get(self.gateway + "/metrics")
        self.assertEqual(sample(pushed, "keymig_rows_total", job="keymig", command="migrate",
                                outcome="rotated"), COUNTS["rolling0"])
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig",
                                command="migrate"), 1)
        self.assertIsNotNone(sample(pushed, "keymig_last_success_timestamp_seconds",
                                    job="keymig", command="migrate"))

        # The textfile is complete and valid.
        with open(textfile) as f:
            text = f.read()
        self.assertEqual(sample(text, "keymig_rows_total", outcome="rotated"), COUNTS["rolling0"])
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)).count("keymig.prom"), 1)

    def test_a_failed_run_is_pushed_as_failed(self):
        # Nothing listens on this port: migrate cannot reach the database and exits 1, and
        # the push still says that the last migrate failed.
        dead = "postgresql://keymig@127.0.0.1:%d/none?connect_timeout=2" % free_port()
        km = Keymig(self, self.config, dead, self.fx.secrets)
        km.run("migrate", "--push-gateway", self.gateway, expect=EXIT_RUNTIME,
               env={"PGCONNECT_TIMEOUT": "2"}, timeout=300)
        pushed = http_get(self.gateway + "/metrics")
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig",
                                command="migrate"), 0)

    def test_a_failed_and_a_successful_run_of_one_target_share_one_group(self):
        # The failed run never reached the database, so its target comes from the config
        # ("users" is public.users.mfa_secret) and its database from the DSN's dbname; the
        # successful one resolved both. One group: the same database, its server down.
        dead = "postgresql://keymig@127.0.0.1:%d/%s?connect_timeout=2" % (free_port(),
                                                                          self.dbname)
        Keymig(self, self.config, dead, self.fx.secrets).run(
            "scan", "--push-gateway", self.gateway, expect=EXIT_RUNTIME,
            env={"PGCONNECT_TIMEOUT": "2"}, timeout=300)
        pushed = http_get(self.gateway + "/metrics")
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig", command="scan",
                                target="public.users.mfa_secret"), 0)
        self.km.run("scan", "--push-gateway", self.gateway, expect=EXIT_OK)
        pushed = http_get(self.gateway + "/metrics")
        groups = [line for line in pushed.splitlines()
                  if line.startswith("keymig_last_run_success{") and 'command="scan"' in line]
        self.assertEqual(len(groups), 1, groups)
        self.assertIn('target="public.users.mfa_secret"', groups[0])
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig", command="scan"),
                         1)
        self.assertIsNotNone(sample(pushed, "keymig_last_success_timestamp_seconds",
                                    job="keymig", command="scan"))

    def test_rollback_and_finalize_push_their_result(self):
        result = self.km.run("migrate", "--json", expect=EXIT_OK)
        run_id = result.json["run_id"]
        self.km.run("finalize", "--run", run_id, "--push-gateway", self.gateway, expect=EXIT_OK)
        self.km.run("rollback", "--run", "no-such-run", "--push-gateway", self.gateway,
                    expect=EXIT_USAGE)
        pushed = http_get(self.gateway + "/metrics")
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig",
                                command="finalize", target="public.users.mfa_secret"), 1)
        self.assertEqual(sample(pushed, "keymig_last_run_success", job="keymig",
                                command="rollback", target="public.users.mfa_secret"), 0)


if __name__ == "__main__":
    unittest.main()
