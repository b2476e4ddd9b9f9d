"""Slow clients cannot take out the probes: 200 loopback clients each trickle one byte every
~2 s of a request they never finish (reconnecting whenever `keymig serve` closes them) for
~20 s, while a prober GETs /healthz and /metrics every 100 ms. Every probe must be answered
200 within 1 s, else a liveness probe would restart the pod in the middle of a run.

The tricklers run in a process of their own (this file, `trickle PORT SECONDS`), so that
they do not hold the prober's interpreter lock: a probe is a prompt client."""

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
import unittest

from keymig_testlib import DbTestCase, KeySet, UserFixture, new_db, start_serve, write_config

CLIENTS = 200
TRICKLE_INTERVAL = 2.0  # seconds between two bytes of one client
ATTACK_SECONDS = float(os.environ.get("KEYMIG_SLOW_CLIENT_SECONDS", "20"))
PROBE_INTERVAL = 0.1
PROBE_DEADLINE = 1.0
# Never finished: no blank line ever ends the head.
TRICKLE = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096


class Tricklers:
    """CLIENTS connections, each sending its next byte every TRICKLE_INTERVAL (spread over
    the interval), reconnecting when the server closes it."""

    def __init__(self, port, seconds):
        self.port = port
        self.seconds = seconds
        self.connects = 0
        self.closed_by_server = 0
        self.bytes_sent = 0

    def _connect(self):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return None
        s.setblocking(False)
        self.connects += 1
        return s

    def run(self):
        start = time.monotonic()
        # client i: [socket, bytes of TRICKLE sent, time of its next byte]
        clients = [[None, 0, start + TRICKLE_INTERVAL * i / CLIENTS] for i in range(CLIENTS)]
        for c in clients:
            c[0] = self._connect()
        while time.monotonic() < start + self.seconds:
            now = time.monotonic()
            live = [c[0] for c in clients if c[0] is not None]
            readable = select.select(live, [], [], 0.02)[0] if live else []
            for c in clients:
                s = c[0]
                gone = s is None
                if s is not None and s in readable:
                    try:
                        gone = s.recv(65536) == b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        gone = True
                if not gone and now >= c[2]:
                    c[2] = now + TRICKLE_INTERVAL
                    try:
                        s.send(TRICKLE[c[1] % len(TRICKLE):][:1])
                        c[1] += 1
                        self.bytes_sent += 1
                    except OSError:
                        gone = True
                if gone:
                    if s is not None:
                        self.closed_by_server += 1
                        s.close()
                    c[0], c[1] = self._connect(), 0
            time.sleep(0.005)
        for c in clients:
            if c[0] is not None:
                c[0].close()
        return {"connects": self.connects, "closed_by_server": self.closed_by_server,
                "bytes_sent": self.bytes_sent}


def probe(port, path):
    """(status or None, seconds) of one GET with its own connection."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_DEADLINE)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - start
    except (OSError, http.client.HTTPException) as e:
        return repr(e), time.monotonic() - start
    finally:
        conn.close()


class SlowClientsTest(DbTestCase):
    def test_probes_are_answered_while_200_slow_clients_hold_connections(self):
        dsn = new_db("http_slow_clients")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 20, "active": 5})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling)
        serve = start_serve(self, config, dsn, fx.secrets)
        for path in ("/healthz", "/metrics"):
            self.assertEqual(probe(serve.port, path)[0], 200, path)

        tricklers = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "trickle", str(serve.port),
             str(ATTACK_SECONDS + TRICKLE_INTERVAL)], stdout=subprocess.PIPE)
        time.sleep(TRICKLE_INTERVAL)  # let all 200 connect and start trickling
        results = {"/healthz": [], "/metrics": []}
        end = time.monotonic() + ATTACK_SECONDS
        try:
            while time.monotonic() < end:
                tick = time.monotonic()
                for path in results:
                    results[path].append(probe(serve.port, path))
                time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - tick)))
            attack = json.loads(tricklers.communicate(timeout=60)[0])
        finally:
            if tricklers.poll() is None:
                tricklers.kill()
                tricklers.wait()

        total = sum(len(r) for r in results.values())
        good = sum(1 for r in results.values() for status, took in r
                   if status == 200 and took <= PROBE_DEADLINE)
        slowest = max(took for r in results.values() for _, took in r)
        summary = ("probes answered 200 within %.0f s: %d/%d (slowest %.3f s); %d slow "
                   "connections made, %d closed by the server, %d bytes trickled" % (
                       PROBE_DEADLINE, good, total, slowest, attack["connects"],
                       attack["closed_by_server"], attack["bytes_sent"]))
        failures = [(path, status, round(took, 3)) for path, r in results.items()
                    for status, took in r if status != 200 or took > PROBE_DEADLINE]
        summary += "; failed: %s" % failures[:10]
        print(summary, file=sys.stderr)
        self.assertGreater(total, 100, summary)
        self.assertGreaterEqual(attack["connects"], CLIENTS, summary)
        self.assertEqual(good, total, summary)
        # Still healthy after the attack, and it did not count against the process.
        self.assertEqual(probe(serve.port, "/healthz")[0], 200)
        self.assertIsNone(serve.proc.poll())


if __name__ == "__main__":
    if sys.argv[1:2] == ["trickle"]:
        print(json.dumps(Tricklers(int(sys.argv[2]), float(sys.argv[3])).run()))
    else:
        unittest.main()
