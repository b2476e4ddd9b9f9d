"""A real Prometheus server scrapes `keymig serve` every second; after a run, a PromQL
query through its HTTP API returns keymig_rows_total."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse

from keymig_testlib import (DbTestCase, KeySet, ServeProcess, UserFixture, enqueue, free_port,
                            http_get, new_db, wait_request, wait_until, write_config)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class ServePrometheusTest(DbTestCase):
    def test_prometheus_sees_rows_total_after_a_run(self):
        self.assertTrue(os.access(PROMETHEUS, os.X_OK), "prometheus not installed")
        dsn = new_db("h5_serve_prom")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 150, "active": 10})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling)
        serve = ServeProcess(config, dsn, fx.secrets)
        serve.wait_ready()
        prom_dir = tempfile.mkdtemp(prefix="keymig-prom-", dir=self.tmp)
        prom_port = free_port()
        prom_config = os.path.join(prom_dir, "prometheus.yml")
        with open(prom_config, "w") as f:
            json.dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": [{"job_name": "keymig", "scrape_interval": "1s",
                                           "static_configs": [{"targets": [
                                               "127.0.0.1:%d" % serve.port]}]}]}, f)
        with open(os.path.join(prom_dir, "log"), "w") as prom_log:
            prom = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + prom_config,
                 "--storage.tsdb.path=" + os.path.join(prom_dir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % prom_port],
                stdout=subprocess.DEVNULL, stderr=prom_log)
        try:
            rid = enqueue(dsn, "migrate")
            state, result, _ = wait_request(dsn, rid)
            self.assertEqual(state, "done", result)

            def rotated_in_prometheus():
                query = urllib.parse.urlencode(
                    {"query": 'keymig_rows_total{outcome="rotated"}'})
                status, body, _ = http_get(prom_port, "/api/v1/query?" + query)
                if status != 200:
                    return None
                data = json.loads(body)["data"]["result"]
                return data if data and float(data[0]["value"][1]) >= 150 else None

            found = wait_until(rotated_in_prometheus, 60, interval=0.5)
            if not found:
                with open(os.path.join(prom_dir, "log")) as f:
                    log = f.read()[-3000:]
                self.fail("Prometheus never returned keymig_rows_total: " + log)
            print("\nPromQL keymig_rows_total{outcome=\"rotated\"}: %s" % found[0]["value"][1])
            targets = json.loads(http_get(prom_port, "/api/v1/targets")[1])
            health = [t["health"] for t in targets["data"]["activeTargets"]]
            self.assertEqual(health, ["up"])
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            self.assertEqual(serve.stop(), 0)


if __name__ == "__main__":
    unittest.main()
