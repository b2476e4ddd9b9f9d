#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz harnesses (tests/fuzz/corpus/<harness>/seed-*), made
by Python's `cryptography` under the test keys of fuzz_support.hpp. Inputs the fuzzer found
to crash or hang are kept beside them as regression inputs (crash-*, timeout-*): never
delete those. Run again after changing the keys; it rewrites seed-* only."""

import base64
import os
import re
import sys

from cryptography.fernet import Fernet

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = open(os.path.join(HERE, "fuzz_support.hpp")).read()
KEYS = re.findall(r'"([A-Za-z0-9_-]{43}=)"', SUPPORT)
assert len(KEYS) == 3, KEYS


def write(harness, seeds):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for i, data in enumerate(seeds):
        with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())


def tokens():
    out = []
    for k in KEYS + [Fernet.generate_key().decode()]:
        f = Fernet(k.encode())
        for plain in (b"", b"JBSWY3DPEHPK3PXP", b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", b"x" * 100):
            t = f.encrypt_at_time(plain, 1_600_000_000).decode()
            out += [t, t.rstrip("="), t + "\n", " " + t, t.replace("-", "+").replace("_", "/")]
        inner = f.encrypt(b"JBSWY3DPEHPK3PXP")
        out.append(f.encrypt(inner).decode())  # double encryption
    raw = base64.urlsafe_b64decode(out[1] + "==")
    out += [base64.urlsafe_b64encode(raw[:-1]).decode(), "", "gAAAAA", "\x80" * 80]
    return out


def configs():
    k = KEYS
    base = ("secretStore:\n  activeKey: %s\n  rollingKeys: [%s, %s]\n"
            "keyMigration:\n  batchSize: 500\n  threads: 4\n"
            "  target: {table: public.users, idColumn: id, secretColumn: mfa_secret}\n"
            "  schedule: {interval: 6h}\n" % (k[0], k[1], k[2]))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += "%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % (
            chr(97 + i), chr(97 + i), *([chr(96 + i)] * 9))
    bomb += "keyMigration: *i\n"
    deep = "keyMigration: " + "[" * 5000 + "]" * 5000 + "\n"
    dup = base + "keyMigration:\n  batchSize: 1\n"
    # The shapes config/src/yaml_limits.cpp must tell apart: structure, and text that only
    # looks like it (quotes, comments, block scalars), at and past each limit.
    helm = ("# values [x] {y} *z\n---\nimage: {repository: \"a/b\", tag: '1.0 [x]'}\n"
            "args: [\"--x=[1]\", '*y', a#b, # c [\n  d]\nmulti: \"one [\n  two {\"\n"
            "script: |\n  [[[ *a # {\n    {{{\nfolded: >2-\n    *b\n  [c\n"
            "list:\n  - {k: v, \"q\":w}\n  - [a: b, ? c : d]\n  - - - x\n" + base)
    stairs = "keyMigration:\n" + "".join(" " * i + "k:\n" for i in range(1, 70))
    compact = "keyMigration:\n  targets:\n    " + "- " * 70 + "x\n"
    pairs = "keyMigration: " + "[k: " * 40 + "v" + "]" * 40 + "\n"
    aliases = "a: &a x\nkeyMigration:\n  targets: [" + ", ".join(["*a"] * 1001) + "]\n"
    return [base, bomb, deep, dup, "secretStore: {activeKey: %s}\n" % k[0],
            "---\n...\n", "%YAML 1.2\n---\n!!map {? a : b}\n", "keyMigration: &x {a: *x}\n",
            helm, stairs, compact, pairs, aliases]


def main():
    write("token", tokens())
    write("key", KEYS + [KEYS[0].rstrip("="), " " + KEYS[1] + "\n", KEYS[2].replace("_", "/"),
                         base64.b64encode(os.urandom(31)).decode(), ""])
    write("config", configs())
    write("duration", ["6h", "500ms", "1m30s", "0", "02:00", "23:59", "24:00", "1d", "-1s",
                       "9999999999999999999h", "1.5h", "", "00:00"])
    write("http", ["GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD /healthz HTTP/1.0\r\n\r\n",
                   "GET /status?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
                   "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                   "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   "GET " + "/a" * 1500 + " HTTP/1.1\r\n\r\n", "GET\r\n\r\n"])
    write("request", ["migrate\n", "migrate\n{}", "verify\n{\"ids\": [1, \"2\"]}",
                      "reset_mfa\n{\"usernames\": [\"alice\"]}", "reset_mfa\n{\"ids\": []}",
                      "migrate\n{\"ids\": [1e400, -1, null, {}]}", "x\n[", "migrate\n" + "[" * 3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
