"""Shared helpers for keymig's integration tests.

Fixtures are made by Python's `cryptography` (the independent Fernet oracle), never by
keymig, and loaded with psql COPY. Every keymig run goes through `Keymig.run`, which checks
its stdout and stderr for every registered secret (keys, tokens, plaintexts) at once, so
no test can forget to.

Environment (set by ctest, see tests/CMakeLists.txt):
  KEYMIG_BINARY      path of build/keymig
  KEYMIG_SOURCE_DIR  the source tree
  KEYMIG_TEST_DSN    a database in the throwaway cluster; test modules make their own
                     databases next to it
  KEYMIG_PG_SCRIPT   scripts/pg (optional)
"""

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SOURCE_DIR = os.environ.get("KEYMIG_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("KEYMIG_BINARY") or os.path.join(SOURCE_DIR, "build", "keymig")
PG_SCRIPT = os.environ.get("KEYMIG_PG_SCRIPT") or os.path.join(SOURCE_DIR, "scripts", "pg")
# The sanitizers BINARY was built with (CMake's KEYMIG_SANITIZE: "", "address,undefined" or
# "thread"). AddressSanitizer reserves terabytes of shadow memory, which no RLIMIT_AS allows
# and no gcore can be read back from, and it turns mlock into a no-op: the few tests that
# look at keymig's memory from outside cannot run on that build, and say so.
UNDER_ASAN = "address" in os.environ.get("KEYMIG_SANITIZE", "")

# Exit codes, docs/DESIGN.md section 3.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_UNDECRYPTABLE, EXIT_NEEDS_ROLLING = 0, 1, 2, 3, 4

# The counters every `--json` summary of scan and migrate carries.
SUMMARY_FIELDS = ("run_id", "rows_scanned", "rotated", "already_active", "flag_fixed", "empty",
                  "undecryptable", "conflicts", "seconds")


# ---------------------------------------------------------------------------------------
# PostgreSQL through psql (no Python driver on the test machines)


def base_dsn():
    dsn = os.environ.get("KEYMIG_TEST_DSN")
    if dsn:
        return dsn
    # Run by hand: use the throwaway cluster if it is up.
    proc = subprocess.run([PG_SCRIPT, "dsn"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("KEYMIG_TEST_DSN is not set and scripts/pg is not running "
                           "(run scripts/run-tests, or scripts/pg start)")
    return proc.stdout.strip()


def dsn_with_db(dsn, dbname):
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def psql(dsn, sql, stdin=None, check=True):
    """Runs SQL (one or more statements, autocommit each) and returns stdout, unaligned."""
    proc = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
        input=stdin, capture_output=True, text=True,
        env=dict(os.environ, PGOPTIONS="-c client_min_messages=warning"))
    if check and proc.returncode != 0:
        raise RuntimeError("psql failed (%d): %s\n%s" % (proc.returncode, sql[:300], proc.stderr))
    return proc.stdout.strip()


def scalar(dsn, sql):
    return psql(dsn, sql)


def new_db(name, dsn=None):
    """(Re)creates database `name` in the cluster of `dsn` (default KEYMIG_TEST_DSN)."""
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
    admin = dsn_with_db(dsn or base_dsn(), "postgres")
    psql(admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    psql(admin, "CREATE DATABASE %s" % name)
    return dsn_with_db(dsn or base_dsn(), name)


def drop_db(name, dsn=None):
    admin = dsn_with_db(dsn or base_dsn(), "postgres")
    psql(admin, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, check=False)


def _copy_escape(value):
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    text = str(value)
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def _copy_unescape(field):
    if field == "\\N":
        return None
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            n = field[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(n, n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def copy_in(dsn, table_sql, columns_sql, rows):
    """Bulk-loads rows (tuples of str/bool/int/bytes/None) with COPY FROM STDIN."""
    data = "".join("\t".join(_copy_escape(v) for v in row) + "\n" for row in rows)
    psql(dsn, "COPY %s (%s) FROM STDIN" % (table_sql, columns_sql), stdin=data)


def query(dsn, sql):
    """Rows of a SELECT as tuples of str/None (COPY text format, so NULL and '' differ)."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c",
         "COPY (%s) TO STDOUT" % sql],
        capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("psql failed: %s\n%s" % (sql[:300], out.stderr))
    rows = []
    for line in out.stdout.split("\n"):
        if line == "":
            continue
        rows.append(tuple(_copy_unescape(f) for f in line.split("\t")))
    return rows


# ---------------------------------------------------------------------------------------
# Keys, tokens and fixtures


def new_key():
    return Fernet.generate_key().decode()


def totp_secret(rng, short=False):
    """A base32 TOTP secret; short ones give tokens that end in '=' padding."""
    raw = bytes(rng.getrandbits(8) for _ in range(10 if short else 20))
    return base64.b32encode(raw).decode()


def make_token(key, plaintext, timestamp):
    return Fernet(key.encode()).encrypt_at_time(plaintext.encode(), timestamp).decode()


def token_timestamp(token):
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return int.from_bytes(raw[1:9], "big")


def decrypt_with(key, token):
    """(plaintext, timestamp) under `key` alone, or None when that key cannot read it."""
    f = Fernet(key.encode())
    try:
        plain = f.decrypt(token.encode())
    except InvalidToken:
        return None
    return plain.decode(), f.extract_timestamp(token.encode())


def decrypt_any(keys, token):
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys]).decrypt(token.encode()).decode()
    except InvalidToken:
        return None


def _reencode(raw):
    return base64.urlsafe_b64encode(raw).decode()


def corrupt_tokens(key, rng):
    """Malformed tokens of several kinds, each a (kind, token) pair. No configured key may
    read any of them; keymig must leave them byte-identical and report them."""
    good = make_token(key, totp_secret(rng), 1_600_000_000)
    stranger = Fernet.generate_key().decode()
    raw = bytearray(base64.urlsafe_b64decode(good))
    bad_mac = bytearray(raw)
    bad_mac[-1] ^= 0x01
    bad_version = bytearray(raw)
    bad_version[0] = 0x81
    flipped_ct = bytearray(raw)
    flipped_ct[30] ^= 0x80
    return [
        ("not_base64", "this is not a token!"),
        ("plain_secret", "JBSWY3DPEHPK3PXP"),
        ("truncated", good[:60]),
        ("bad_mac", _reencode(bytes(bad_mac))),
        ("bad_version", _reencode(bytes(bad_version))),
        ("ciphertext_flipped", _reencode(bytes(flipped_ct))),
        # pyca reads odd spellings of a configured key's token (keymig migrates those, see
        # test_lenient_spellings.py): these are a key nobody configured.
        ("trailing_newline", make_token(stranger, totp_secret(rng), 1_600_000_002) + "\n"),
        ("leading_space", " " + make_token(stranger, totp_secret(rng), 1_600_000_001)),
        ("too_short", _reencode(b"\x80" + b"\x00" * 20)),
    ]


class Secrets:
    """What must never appear in keymig's output: keys, tokens, plaintexts."""

    # Any Fernet token of this era starts with version 0x80 and four zero timestamp bytes.
    TOKEN_PREFIX = "gAAAAA"
    WORD = re.compile(r"[A-Za-z0-9_\-=]{12,}")

    def __init__(self):
        self.words = set()
        self.substrings = set()

    def add_key(self, key):
        self.substrings.add(key)
        self.substrings.add(key.rstrip("="))
        self.substrings.add(base64.urlsafe_b64decode(key).hex())

    def add(self, *values):
        for v in values:
            if v:
                self.words.add(v.strip().rstrip("="))
                self.words.add(v.strip())

    def leaks(self, text):
        found = []
        if self.TOKEN_PREFIX in text:
            found.append("a Fernet token (%s...)" % self.TOKEN_PREFIX)
        for s in self.substrings:
            if s and s in text:
                found.append("a key")
        for word in self.WORD.findall(text):
            if word in self.words or word.rstrip("=") in self.words:
                found.append("a fixture token or plaintext")
        return found


# ---------------------------------------------------------------------------------------
# Running keymig


class Result:
    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr

    @property
    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise AssertionError("stdout of keymig %s is not one JSON object (%s):\n%s\n%s" % (
                " ".join(self.args), e, self.stdout[:2000], self.stderr[-2000:]))

    def describe(self):
        return "keymig %s -> exit %d\nstdout: %s\nstderr: %s" % (
            " ".join(self.args), self.returncode, self.stdout[-3000:], self.stderr[-3000:])


def write_config(directory, active, rolling, target=None, migration=None, name="values.yaml"):
    """A values.yaml (JSON is YAML) with the keys, mode 0600; returns its path."""
    doc = {"secretStore": {}}
    if active:
        doc["secretStore"]["activeKey"] = active
    if rolling:
        doc["secretStore"]["rollingKeys"] = list(rolling)
    km = dict(migration or {})
    if target is not None:
        km["target"] = target
    if km:
        doc["keyMigration"] = km
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    return path


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYMIG_") or k in (
        "KEYMIG_SOURCE_DIR",)}
    env.update(extra or {})
    return env


class Keymig:
    """Runs the binary with a config and a DSN; checks every output for secrets."""

    def __init__(self, testcase, config, dsn, secrets):
        self.testcase, self.config, self.dsn, self.secrets = testcase, config, dsn, secrets
        self.outputs = []

    def _args(self, command, args, with_config):
        full = list(command.split()) + list(args)
        if with_config and self.config:
            full += ["--config", self.config]
        if self.dsn:
            full += ["--dsn", self.dsn]
        return full

    def check_output(self, result):
        for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            leaks = self.secrets.leaks(text)
            if leaks:
                raise AssertionError("keymig %s leaked %s on %s" % (
                    " ".join(result.args), ", ".join(sorted(set(leaks))), stream))

    def run(self, command, *args, expect=None, env=None, timeout=900, with_config=True):
        full = self._args(command, args, with_config)
        proc = subprocess.run([BINARY] + full, capture_output=True, text=True,
                              env=clean_env(env), timeout=timeout)
        result = Result(full, proc.returncode, proc.stdout, proc.stderr)
        self.outputs.append(result)
        self.check_output(result)
        if expect is not None:
            allowed = expect if isinstance(expect, (tuple, list, set)) else (expect,)
            if result.returncode not in allowed:
                raise AssertionError("expected exit %s: %s" % (allowed, result.describe()))
        return result

    def start(self, command, *args, env=None):
        """Starts keymig in the background; finish with `finish`."""
        full = self._args(command, args, True)
        out = tempfile.TemporaryFile(mode="w+")
        err = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([BINARY] + full, stdout=out, stderr=err, env=clean_env(env))
        proc.keymig_files = (full, out, err)
        return proc

    def finish(self, proc, timeout=900):
        full, out, err = proc.keymig_files
        proc.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        result = Result(full, proc.returncode, out.read(), err.read())
        out.close()
        err.close()
        self.outputs.append(result)
        self.check_output(result)
        return result


def log_events(text, name=None):
    """The JSON log lines (--log-format json) of a keymig output, or those of one event."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "event" in doc and (name is None or doc["event"] == name):
            out.append(doc)
    return out


def kill_hard(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def metric_sample(text, name, **labels):
    """The value of the first sample `name{labels...}` in a text exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None



# ---------------------------------------------------------------------------------------
# keymig serve as a process: shared by the test_serve* modules


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


def enqueue(dsn, kind, params=None, notify=True, target="public.users"):
    """Inserts a request as the application does (one transaction with the NOTIFY).
    `target` names the table the request is for (the default target's, by default);
    None leaves it NULL, which serve refuses."""
    p = "NULL" if params is None else "'%s'::jsonb" % json.dumps(params).replace("'", "''")
    t = "NULL" if target is None else "'%s'" % target.replace("'", "''")
    sql = ("INSERT INTO keymig.requests(kind, params, target) VALUES ('%s', %s, %s) RETURNING id"
           % (kind, p, t))
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


def start_serve(tc, config, dsn, secrets, extra_args=(), env=None):
    """A ready `keymig serve`, stopped when the test ends; its exit code must be 0."""
    serve = ServeProcess(config, dsn, secrets, extra_args=extra_args, env=env)
    try:
        serve.wait_ready()
    except AssertionError:
        kill_hard(serve.proc)
        raise

    def stop():
        if serve.proc.returncode is None:
            tc.assertEqual(serve.stop(), 0, "keymig serve exit code")
    tc.addCleanup(stop)
    return serve


def make_serve_schema(config, dsn, secrets):
    """Runs a first `keymig serve` until it has made the keymig schema, then stops it."""
    first = ServeProcess(config, dsn, secrets)
    first.wait_ready()
    made = wait_until(lambda: scalar(dsn, "SELECT to_regclass('keymig.requests') IS NOT NULL")
                      == "t", 30)
    code = first.stop()
    assert made, "keymig serve did not create keymig.requests"
    assert code == 0, "keymig serve exited %d" % code

# ---------------------------------------------------------------------------------------
# The default target (docs/DESIGN.md section 1) and its fixture


USERS_DDL = """
CREATE TABLE public.users (
  id bigint PRIMARY KEY,
  username text NOT NULL UNIQUE,
  mfa_secret text,
  mfa_fernet_active boolean NOT NULL DEFAULT false,
  is_staff boolean NOT NULL DEFAULT false,
  is_superuser boolean NOT NULL DEFAULT false
)"""
USERS_COLUMNS = "id, username, mfa_secret, mfa_fernet_active, is_staff, is_superuser"


class Row:
    __slots__ = ("id", "username", "token", "flag", "plaintext", "timestamp", "kind")

    def __init__(self, id, username, token, flag, plaintext, timestamp, kind):
        self.id, self.username, self.token, self.flag = id, username, token, flag
        self.plaintext, self.timestamp, self.kind = plaintext, timestamp, kind

    def copy_tuple(self):
        return (self.id, self.username, self.token, self.flag, self.id % 97 == 0,
                self.id % 211 == 0)


class UserFixture:
    """Rows of every class docs/DESIGN.md section 2 names, made by Python.

    kind: 'empty' (NULL or ''), 'active' (flag true), 'active_flag_false',
    'rolling0' / 'rolling1' (two rolling keys, in config order), 'bad:<kind>' (malformed
    or under a key that is not configured).
    """

    def __init__(self, keys, counts, seed=1234, start_id=1, id_step=1):
        self.keys = keys
        self.rng = random.Random(seed)
        self.rows = []
        self.secrets = Secrets()
        for k in [keys.active] + keys.rolling + [keys.unknown]:
            self.secrets.add_key(k)
        plan = []
        for kind, n in counts.items():
            plan += [kind] * n
        self.rng.shuffle(plan)
        next_id = start_id
        bad = corrupt_tokens(keys.rolling[0], self.rng)
        bad_i = 0
        for kind in plan:
            rid = next_id
            next_id += id_step
            ts = self.rng.randrange(1_500_000_000, 1_700_000_000)
            plain = None
            flag = False
            if kind == "empty":
                token = None if rid % 2 else ""
            elif kind in ("active", "active_flag_false"):
                plain = totp_secret(self.rng, short=rid % 3 == 0)
                token = make_token(keys.active, plain, ts)
                flag = kind == "active"
            elif kind.startswith("rolling"):
                plain = totp_secret(self.rng, short=rid % 3 == 0)
                token = make_token(keys.rolling[int(kind[-1])], plain, ts)
                flag = rid % 5 == 0  # a stale true flag must not stop the rotation
            elif kind == "unknown_key":
                plain = totp_secret(self.rng)
                token = make_token(keys.unknown, plain, ts)
                kind = "bad:unknown_key"
            elif kind == "corrupt":
                what, token = bad[bad_i % len(bad)]
                bad_i += 1
                kind = "bad:" + what
            else:
                raise ValueError(kind)
            self.secrets.add(token, plain)
            self.rows.append(Row(rid, "user%06d" % rid, token, flag, plain, ts, kind))
        for _, token in bad:
            self.secrets.add(token)

    def by_kind(self, prefix):
        return [r for r in self.rows if r.kind.startswith(prefix)]

    def load(self, dsn, ddl=USERS_DDL):
        psql(dsn, ddl)
        copy_in(dsn, "public.users", USERS_COLUMNS, [r.copy_tuple() for r in self.rows])
        psql(dsn, "ANALYZE public.users")


class KeySet:
    def __init__(self, rolling=2):
        self.active = new_key()
        self.rolling = [new_key() for _ in range(rolling)]
        self.unknown = new_key()


def snapshot(dsn, table="public.users", id_column="id", columns=None):
    """{id: row tuple as text}: compares rows byte for byte."""
    cols = columns or "*"
    rows = query(dsn, "SELECT %s::text, t.* FROM %s t ORDER BY 1" % (id_column, table)
                 if cols == "*" else
                 "SELECT %s::text, %s FROM %s ORDER BY 1" % (id_column, cols, table))
    return {r[0]: r[1:] for r in rows}


def current_secrets(dsn):
    """{id: (token, flag)} of the default users table."""
    return {int(r[0]): (r[1], r[2] == "t") for r in
            query(dsn, "SELECT id, mfa_secret, mfa_fernet_active FROM public.users")}


def _brief(summary):
    """A summary without its long row lists, for assertion messages."""
    return {k: (v if not isinstance(v, list) or len(v) <= 5 else "[%d entries]" % len(v))
            for k, v in summary.items()}


class DbTestCase(unittest.TestCase):
    """A temp directory per test class and helpers to check migrated rows."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="keymig-it-")
        if not os.access(BINARY, os.X_OK):
            raise AssertionError("keymig binary not built: %s" % BINARY)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assert_rotated(self, keys, row, token, context=""):
        """`token` is row's secret moved to the active key: same plaintext, same timestamp."""
        got = decrypt_with(keys.active, token) if token else None
        self.assertIsNotNone(got, "row %s (%s) is not readable by the active key alone %s" % (
            row.id, row.kind, context))
        self.assertEqual(got[0], row.plaintext, "row %s: plaintext changed %s" % (row.id, context))
        self.assertEqual(got[1], row.timestamp, "row %s: timestamp changed %s" % (row.id, context))

    def assert_summary(self, summary, **expected):
        for field in SUMMARY_FIELDS:
            self.assertIn(field, summary, "summary lacks %r: %s" % (field, summary))
        for field, value in expected.items():
            self.assertEqual(summary[field], value, "%s: %s" % (field, _brief(summary)))


# ---------------------------------------------------------------------------------------
# Checks shared by the crash, online and restart tests


def journal_of(dsn, run_id):
    """{row_id: [(old_token, new_token), ...]} of one run (a list, to see duplicates)."""
    out = {}
    for rid, old, new in query(dsn, "SELECT row_id::text, keymig.journal_text(old_token),"
                               " keymig.journal_text(new_token) FROM keymig.journal"
                               " WHERE run_id::text = '%s'" % run_id):
        out.setdefault(rid, []).append((old, new))
    return out


def running_run_id(dsn):
    """The run id of the run in progress, once keymig has registered it."""
    if scalar(dsn, "SELECT to_regclass('keymig.runs') IS NOT NULL") != "t":
        return None
    rid = scalar(dsn, "SELECT run_id::text FROM keymig.runs WHERE state = 'running' "
                 "ORDER BY 1 LIMIT 1")
    return rid or None


def journal_count(dsn, run_id=None):
    if scalar(dsn, "SELECT to_regclass('keymig.journal') IS NOT NULL") != "t":
        return 0
    where = " WHERE run_id::text = '%s'" % run_id if run_id else ""
    return int(scalar(dsn, "SELECT count(*) FROM keymig.journal" + where))


def check_consistent(tc, dsn, fx, run_id):
    """Between batches: every row is either untouched or rotated and journaled, never
    rotated without its journal entry (batch = one transaction)."""
    now = current_secrets(dsn)
    journal = journal_of(dsn, run_id)
    moved = 0
    for row in fx.rows:
        token, _ = now[row.id]
        entry = journal.get(str(row.id))
        if token == row.token:
            tc.assertIsNone(entry, "row %d journaled but not rotated" % row.id)
        else:
            moved += 1
            tc.assertIsNotNone(entry, "row %d rotated without a journal entry" % row.id)
            tc.assertEqual(entry, [(row.token, token)], "journal of row %d" % row.id)
    return moved


def check_all_rotated(tc, dsn, keys, fx, run_id):
    """Every rolling row moved exactly once under `run_id`, journaled with its exact
    original token, and every other row untouched."""
    now = current_secrets(dsn)
    journal = journal_of(dsn, run_id)
    for row in fx.rows:
        token, flag = now[row.id]
        if row.kind.startswith("rolling"):
            tc.assert_rotated(keys, row, token)
            tc.assertTrue(flag, "row %d: flag" % row.id)
            tc.assertEqual(journal.get(str(row.id)), [(row.token, token)],
                           "row %d must be journaled exactly once, with its original token"
                           % row.id)
        else:
            tc.assertEqual(token, row.token, "row %d (%s) changed" % (row.id, row.kind))
    tc.assertEqual(len(journal), len(fx.by_kind("rolling")), "journal has extra rows")
