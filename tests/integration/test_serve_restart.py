"""keymig serve against a database that goes away: /readyz turns 503, the service
reconnects with backoff, re-LISTENs and claims what was queued meanwhile. Uses a cluster
of its own, since it stops and restarts PostgreSQL."""

import os
import socket
import subprocess
import time
import unittest

from keymig_testlib import (PG_SCRIPT, SOURCE_DIR, DbTestCase, KeySet, Secrets, ServeProcess,
                            UserFixture, enqueue, http_get, new_db, wait_request, wait_until,
                            write_config)

PG_DIR = os.path.join(SOURCE_DIR, ".keymig", "h5-serve-restart-pg")


def pg(*args):
    proc = subprocess.run([PG_SCRIPT] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, KEYMIG_PG_DIR=PG_DIR))
    if proc.returncode != 0:
        raise RuntimeError("scripts/pg %s: %s" % (" ".join(args), proc.stderr))
    return proc.stdout.strip()


def start_same_port():
    """scripts/pg start picks a new port; the service must find the server where it was."""
    # scripts/pg may have put the cluster outside a work tree the postgres user cannot
    # reach (and linked it): hand pg_ctl the real path.
    state = os.path.realpath(PG_DIR)
    with open(os.path.join(state, "port")) as f:
        port = f.read().strip()
    cmd = [os.path.join(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"), "pg_ctl"),
           "-D", os.path.join(state, "data"), "-o", "-p " + port,
           "-l", os.path.join(state, "server.log"), "-w", "-t", "60", "start"]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, capture_output=True, cwd="/")


class ServeDatabaseRestartTest(DbTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = pg("start")

    @classmethod
    def tearDownClass(cls):
        pg("destroy")
        super().tearDownClass()

    def test_survives_restart_and_outage(self):
        dsn = new_db("h5_serve_restart", dsn=self.cluster)
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 100, "active": 10})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling)
        serve = ServeProcess(config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])
        try:
            serve.wait_ready()
            self.assertTrue(wait_until(lambda: serve.events("listening_for_requests"), 10))
            wait_until(lambda: enqueue_ok(dsn), 30)

            # A restart cuts every connection; the service must come back on its own.
            pg("restart")
            self.assertTrue(wait_until(lambda: len(serve.events("listening_for_requests")) >= 2,
                                       30), serve.stderr()[-3000:])
            rid = enqueue(dsn, "migrate")
            state, result, latency = wait_request(dsn, rid, timeout=30)
            self.assertEqual(state, "done", result)
            self.assertLess(latency, 1000.0)

            # Down for a while: not ready, but alive.
            pg("stop")
            self.assertTrue(wait_until(lambda: http_get(serve.port, "/readyz")[0] == 503, 15))
            self.assertEqual(http_get(serve.port, "/healthz")[0], 200)
            start_same_port()
            self.assertTrue(wait_until(lambda: http_get(serve.port, "/readyz")[0] == 200, 60),
                            serve.stderr()[-3000:])
            rid = enqueue(dsn, "verify")
            state, result, _ = wait_request(dsn, rid, timeout=30)
            self.assertEqual(state, "done", result)
            self.assertEqual(result["needs_rolling"], 0, result)
        finally:
            self.assertEqual(serve.stop(), 0)


def enqueue_ok(dsn):
    try:
        return wait_request(dsn, enqueue(dsn, "verify"), timeout=30)[0] in ("done", "failed")
    except RuntimeError:
        return False



class ServeSilentDatabaseTest(DbTestCase):
    """A database host that accepts TCP and never answers (a failover in progress, a
    firewall dropping the rest): the connect must not hold the service's event loop."""

    def test_endpoints_and_sigterm_answer_while_the_connect_hangs(self):
        listener, port = silent_server()
        keys = KeySet(rolling=1)
        secrets = Secrets()
        secrets.add_key(keys.active)
        secrets.add_key(keys.rolling[0])
        config = write_config(self.tmp, keys.active, keys.rolling, name="silent.yaml")
        dsn = "postgresql://keymig@127.0.0.1:%d/keymig" % port
        # A long connect timeout: the old blocking connect held the loop for all of it.
        serve = ServeProcess(config, dsn, secrets, env={"PGCONNECT_TIMEOUT": "60"})
        try:
            self.assertTrue(wait_until(lambda: http_get(serve.port, "/healthz")[0] == 200, 20),
                            serve.stderr()[-2000:])
            # keymig's connect is now waiting on a server that never speaks.
            self.assertTrue(wait_until(lambda: accepted(listener), 10))
            for _ in range(5):
                started = time.monotonic()
                status, body, _ = http_get(serve.port, "/metrics", timeout=5)
                self.assertEqual(status, 200, body)
                self.assertLess(time.monotonic() - started, 2.0)
                status, _, _ = http_get(serve.port, "/readyz", timeout=5)
                self.assertEqual(status, 503)
                time.sleep(0.3)
            started = time.monotonic()
            code = serve.stop(timeout=30)
            self.assertEqual(code, 0)
            self.assertLess(time.monotonic() - started, 10.0,
                            "SIGTERM waited for the hanging connect")
        finally:
            if serve.proc.poll() is None:
                serve.proc.kill()
            for conn in accepted.held:
                conn.close()
            accepted.held.clear()
            listener.close()

    def test_a_connect_that_never_answers_is_abandoned_and_retried(self):
        listener, port = silent_server()
        keys = KeySet(rolling=1)
        secrets = Secrets()
        config = write_config(self.tmp, keys.active, keys.rolling, name="silent2.yaml")
        dsn = "postgresql://keymig@127.0.0.1:%d/keymig?connect_timeout=2" % port
        serve = ServeProcess(config, dsn, secrets)
        try:
            self.assertTrue(wait_until(lambda: len(serve.events("listen_connect_failed")) >= 2,
                                       30), serve.stderr()[-2000:])
            failure = serve.events("listen_connect_failed")[0]
            self.assertIn("timeout", failure["error"])
        finally:
            serve.stop(timeout=30)
            listener.close()

    def test_a_silent_first_host_gives_way_to_the_next(self):
        """An HA DSN lists its hosts: the one that never answers is given its
        connect_timeout, then the next is tried, as libpq's own connect does."""
        listener, port = silent_server()
        dsn = new_db("h5_serve_multihost")
        scheme, rest = dsn.split("://", 1)
        user, rest = rest.split("@", 1)
        hostport, dbname = rest.split("/", 1)
        multi = "%s://%s@127.0.0.1:%d,%s/%s?connect_timeout=2" % (scheme, user, port, hostport,
                                                                dbname)
        keys = KeySet(rolling=1)
        config = write_config(self.tmp, keys.active, keys.rolling, name="multihost.yaml")
        serve = ServeProcess(config, multi, Secrets())
        try:
            serve.wait_ready(timeout=30)
            failed = serve.events("listen_connect_failed")
            self.assertTrue(failed, "the silent host was not tried first")
            self.assertIn("port=%d" % port, failed[0].get("host", ""))
            self.assertIn("timeout", failed[0]["error"])
        finally:
            serve.stop(timeout=30)
            listener.close()


def silent_server():
    """A listening socket that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


def accepted(listener):
    """True once a client connection is waiting on (or was taken from) the listener."""
    listener.setblocking(False)
    try:
        conn, _ = listener.accept()
        accepted.held.append(conn)  # keep it open: the client must keep waiting
        return True
    except BlockingIOError:
        return bool(accepted.held)


accepted.held = []


if __name__ == "__main__":
    unittest.main()
