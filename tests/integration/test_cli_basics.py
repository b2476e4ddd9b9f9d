"""keymig's database-free commands, driven as an operator would: keygen, inspect,
check-config, --help, --version and exit codes. Fixtures are made by Python's
`cryptography` (the independent Fernet oracle), never by keymig.

Every output (stdout and stderr) of every command run here is searched for every key,
token and plaintext the test made: none may appear. keygen printing its own new key is
the one exception, which is the point of keygen."""

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unittest

from cryptography.fernet import Fernet, InvalidToken

BINARY = os.environ.get("KEYMIG_BINARY", "build/keymig")
PLAINTEXT = b"JBSWY3DPEHPK3PXPJBSWY3DP"  # a TOTP secret, base32
TIMESTAMP = 1714564800  # 2024-05-01T12:00:00Z


class CliBasics(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(BINARY, os.X_OK):
            raise unittest.SkipTest(f"KEYMIG_BINARY {BINARY} is not built")
        cls.dir = tempfile.mkdtemp(prefix="keymig-cli-")
        cls.active = Fernet.generate_key().decode()
        cls.rolling = Fernet.generate_key().decode()
        cls.stranger = Fernet.generate_key().decode()  # configured nowhere
        cls.secrets = [cls.active, cls.rolling, cls.stranger, PLAINTEXT.decode()]
        cls.values = cls.write("values.yaml", f"""
image: {{repository: example/app}}
userLogin:
  mfa:
    enabled: true
    mandatory: false
    mandatoryForSysAdmins: true
    rememberMe: {{enabled: true, days: 14, disabledForSysAdmins: true}}
secretStore:
  activeKey: "{cls.active}"
  rollingKey: "{cls.rolling}"
keyMigration:
  target: {{table: users}}
  batchSize: 500
""")
        cls.tokens = {
            name: Fernet(key.encode()).encrypt_at_time(PLAINTEXT, TIMESTAMP + i).decode()
            for i, (name, key) in enumerate(
                [("active", cls.active), ("rolling", cls.rolling), ("stranger", cls.stranger)])
        }
        cls.secrets += list(cls.tokens.values())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def write(cls, name, text, mode=0o600):
        path = os.path.join(cls.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def run_keymig(self, *args, stdin="", env=None, cwd=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KEYMIG_")}
        full_env.update(env or {})
        proc = subprocess.run([BINARY, *args], input=stdin, capture_output=True, text=True,
                              env=full_env, cwd=cwd or self.dir, timeout=60)
        for secret in self.secrets:
            # Not assertNotIn: its failure message would print the secret.
            self.assertFalse(secret in proc.stdout or secret in proc.stderr,
                             f"keymig {' '.join(a for a in args if a not in self.secrets)} "
                             "printed a key, a token or a plaintext")
        return proc

    # --- keygen -------------------------------------------------------------------------

    def test_keygen_prints_a_key_python_accepts_and_two_calls_differ(self):
        first = self.run_keymig("keygen")
        second = self.run_keymig("keygen")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(second.returncode, 0, second.stderr)
        key1, key2 = first.stdout.strip(), second.stdout.strip()
        self.assertEqual(first.stdout, key1 + "\n")
        self.assertEqual(len(key1), 44)
        self.assertNotEqual(key1, key2)
        f = Fernet(key1.encode())  # raises ValueError if not a Fernet key
        self.assertEqual(f.decrypt(f.encrypt(b"x")), b"x")
        self.assertEqual(first.stderr, "")

    def test_keygen_out_writes_a_private_file_and_never_overwrites(self):
        path = os.path.join(self.dir, "new.key")
        proc = self.run_keymig("keygen", "--out", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            key = f.read().strip()
        Fernet(key.encode())
        self.assertFalse(key in proc.stdout + proc.stderr, "--out printed the key")
        again = self.run_keymig("keygen", "--out", path)
        self.assertEqual(again.returncode, 2)
        with open(path) as f:
            self.assertEqual(f.read().strip(), key)
        os.unlink(path)

    # --- inspect ------------------------------------------------------------------------

    def test_inspect_names_the_key_and_the_timestamp_python_reads(self):
        for name, label in [("active", "active"), ("rolling", "rolling[0]")]:
            token = self.tokens[name]
            proc = self.run_keymig("inspect", "--config", self.values, "-", stdin=token + "\n")
            self.assertEqual(proc.returncode, 0, proc.stderr)
            expected_ts = Fernet(getattr(self, name).encode()).extract_timestamp(token.encode())
            iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expected_ts))
            self.assertIn(f"token 1: {label} ", proc.stdout)
            self.assertIn(f"{iso} ({expected_ts})", proc.stdout)

    def test_inspect_exits_3_when_no_configured_key_verifies_a_token(self):
        stdin = "\n".join([self.tokens["active"], self.tokens["stranger"], self.tokens["rolling"]]) + "\n"
        proc = self.run_keymig("inspect", "--config", self.values, stdin=stdin)
        self.assertEqual(proc.returncode, 3, proc.stderr)
        lines = proc.stdout.splitlines()
        self.assertTrue(lines[0].startswith("token 1: active"), proc.stdout)
        self.assertTrue(lines[1].startswith("token 2: not verified: unknown_key"), proc.stdout)
        self.assertTrue(lines[2].startswith("token 3: rolling[0]"), proc.stdout)
        self.assertIn("3 tokens: 1 active, 1 rolling, 1 not verified", proc.stdout)
        only_stranger = self.run_keymig("inspect", "--config", self.values, "-",
                                        stdin=self.tokens["stranger"])
        self.assertEqual(only_stranger.returncode, 3)
        # Python agrees that neither configured key reads it.
        with self.assertRaises(InvalidToken):
            Fernet(self.active.encode()).extract_timestamp(self.tokens["stranger"].encode())

    def test_inspect_json_reports_key_fingerprint_and_timestamp(self):
        stdin = "\n".join([self.tokens["active"], self.tokens["rolling"], "not-a-token"]) + "\n"
        proc = self.run_keymig("inspect", "--config", self.values, "--json", stdin=stdin)
        self.assertEqual(proc.returncode, 3, proc.stderr)
        out = json.loads(proc.stdout)
        self.assertEqual((out["total"], out["active"], out["rolling"], out["unverified"]), (3, 1, 1, 1))
        first, second, third = out["tokens"]
        self.assertEqual((first["key"], first["key_index"], first["timestamp"]), ("active", 0, TIMESTAMP))
        self.assertEqual(first["created_at"], "2024-05-01T12:00:00Z")
        self.assertEqual((second["key"], second["timestamp"]), ("rolling[0]", TIMESTAMP + 1))
        self.assertNotEqual(first["fingerprint"], second["fingerprint"])
        self.assertFalse(third["verified"])
        self.assertIn(third["reason"], ["not_base64", "non_canonical", "bad_version", "too_short"])
        # The fingerprints are the ones check-config reports for the same keys.
        check = json.loads(self.run_keymig("check-config", "--config", self.values, "--json").stdout)
        self.assertEqual([k["fingerprint"] for k in check["keys"]],
                         [first["fingerprint"], second["fingerprint"]])

    def test_inspect_token_on_the_command_line_works_with_a_warning(self):
        token = self.tokens["rolling"]
        proc = self.run_keymig("inspect", "--config", self.values, token)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("rolling[0]", proc.stdout)
        self.assertIn("ps", proc.stderr)

    def test_inspect_with_no_token_is_a_usage_error(self):
        proc = self.run_keymig("inspect", "--config", self.values, stdin="\n\n")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("no token", proc.stderr)

    # --- check-config -------------------------------------------------------------------

    def test_check_config_valid_prints_policy_fingerprints_and_origins(self):
        proc = self.run_keymig("check-config", "--config", self.values)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, r"active\s+fingerprint [0-9a-f]{8,}\s+from .*values.yaml:10 "
                                      r"secretStore.activeKey")
        self.assertRegex(proc.stdout, r"rolling\[0\]\s+fingerprint [0-9a-f]{8,}\s+from .*values.yaml:11 "
                                      r"secretStore.rollingKey")
        self.assertIn("optional for users, mandatory for sysadmins", proc.stdout)
        self.assertIn("14 days; sysadmins enter a code at every sign-in", proc.stdout)
        self.assertIn("config is valid", proc.stdout)
        self.assertNotIn("warnings:", proc.stdout)

    def test_check_config_yaml_syntax_error_exits_2_naming_the_line(self):
        bad = self.write("syntax.yaml", f"""secretStore:
  activeKey: "{self.active}"
keyMigration:
  target:
    table: [users
  batchSize: 10
""")
        proc = self.run_keymig("check-config", "--config", bad)
        self.assertEqual(proc.returncode, 2)
        m = re.search(r"syntax\.yaml:(\d+)", proc.stderr)
        self.assertIsNotNone(m, proc.stderr)
        self.assertIn(int(m.group(1)), range(5, 8))
        self.assertIn("YAML syntax error", proc.stderr)
        self.assertIn("keyMigration", proc.stderr)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)

    def test_check_config_unknown_key_exits_2_naming_it(self):
        bad = self.write("typo.yaml", "keyMigration:\n  batchSize: 10\n  thread: 4\n")
        proc = self.run_keymig("check-config", "--config", self.values, "--config", bad)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("typo.yaml:3 keyMigration.thread: unknown key", proc.stderr)
        as_json = self.run_keymig("check-config", "--config", self.values, "--config", bad, "--json")
        self.assertEqual(as_json.returncode, 2)
        out = json.loads(as_json.stdout)
        self.assertFalse(out["ok"])
        self.assertIn("keyMigration.thread", out["error"])

    def test_check_config_rejects_bad_keys_naming_where_they_came_from(self):
        cases = {
            "not a key": (f'secretStore: {{activeKey: "{self.active[:20]}"}}\n', ":1 secretStore.activeKey"),
            "rolling equals active": (
                f'secretStore:\n  activeKey: "{self.active}"\n  rollingKeys: ["{self.rolling}", "{self.active}"]\n',
                ":3 secretStore.rollingKeys[1]"),
            "duplicate rolling": (
                f'secretStore:\n  activeKey: "{self.active}"\n  rollingKey: "{self.rolling}"\n'
                f'  rollingKeys:\n    - "{self.rolling}"\n',
                ":5 secretStore.rollingKeys[0]"),
            "no active key": ("secretStore: {}\n", "no active key"),
            "missing key file": ("secretStore: {activeKeyFile: /nonexistent/key}\n", "/nonexistent/key"),
        }
        for name, (text, expected) in cases.items():
            with self.subTest(name):
                path = self.write("bad-keys.yaml", text)
                proc = self.run_keymig("check-config", "--config", path)
                self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
                self.assertIn(expected, proc.stderr)
                self.assertFalse(self.active[:20] in proc.stdout + proc.stderr, "a key prefix leaked")

    def test_check_config_warns_about_lockouts_loose_key_files_and_no_rolling_key(self):
        key_file = self.write("active.key", self.active + "\n", mode=0o644)
        path = self.write("warn.yaml", """
userLogin:
  mfa: {enabled: false, mandatoryForSysAdmins: true, rememberMe: {enabled: false, disabledForSysAdmins: true}}
secretStore: {activeKeyFile: active.key}
""")
        proc = self.run_keymig("check-config", "--config", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("MFA is disabled", proc.stdout)
        self.assertIn("mandatoryForSysAdmins is true while userLogin.mfa.enabled is false", proc.stdout)
        self.assertIn("disabledForSysAdmins is true while rememberMe.enabled is false", proc.stdout)
        self.assertIn(f"{key_file} is readable by others (mode 0644)", proc.stdout)
        self.assertIn("no rolling key configured", proc.stdout)
        out = json.loads(self.run_keymig("check-config", "--config", path, "--json").stdout)
        self.assertEqual(len(out["warnings"]), 4)
        self.assertEqual(out["keys"][0]["key_file"], key_file)

    def test_environment_keys_win_over_the_file(self):
        env = {"KEYMIG_ACTIVE_KEY": self.rolling, "KEYMIG_ROLLING_KEYS": self.active}
        proc = self.run_keymig("check-config", "--config", self.values, "--json", env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        keys = json.loads(proc.stdout)["keys"]
        self.assertEqual(keys[0]["origin"]["file"], "env")
        self.assertEqual(keys[0]["origin"]["key"], "KEYMIG_ACTIVE_KEY")
        self.assertEqual(keys[1]["origin"]["key"], "KEYMIG_ROLLING_KEYS[0]")
        swapped = self.run_keymig("inspect", "--config", self.values, env=env,
                                  stdin=self.tokens["rolling"] + "\n")
        self.assertEqual(swapped.returncode, 0)
        self.assertIn("token 1: active", swapped.stdout)

    def test_without_config_values_yaml_in_the_working_directory_is_used(self):
        with tempfile.TemporaryDirectory(dir=self.dir) as empty:
            proc = self.run_keymig("check-config", cwd=empty)
            self.assertEqual(proc.returncode, 2)
            self.assertIn("--config", proc.stderr)
            shutil.copy(self.values, os.path.join(empty, "values.yaml"))
            proc = self.run_keymig("check-config", cwd=empty)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("config: values.yaml", proc.stdout)

    # --- the frame ----------------------------------------------------------------------

    def test_version(self):
        proc = self.run_keymig("--version")
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(proc.stdout.strip(), "keymig 0.1.0")

    def test_no_command_prints_help_and_exits_2(self):
        proc = self.run_keymig()
        self.assertEqual(proc.returncode, 2)
        self.assertIn("Usage: keymig", proc.stderr)

    def test_unknown_flag_and_missing_argument_exit_2_with_a_hint(self):
        for args, hint in [(("--no-such-flag",), "see 'keymig --help'"),
                           (("inspect", "--no-such-flag"), "see 'keymig inspect --help'"),
                           (("check-config", "--config"), "see 'keymig check-config --help'"),
                           (("no-such-command",), "see 'keymig --help'"),
                           (("bench", "db", "--migrate-binary", "/no/such/keymig"),
                            "see 'keymig bench db --help'")]:
            with self.subTest(args=args):
                proc = self.run_keymig(*args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
                self.assertTrue(proc.stderr.startswith("keymig: "), proc.stderr)
                self.assertIn(hint, proc.stderr)

    def test_a_refused_connection_is_said_at_once_not_retried_as_lost(self):
        # A port nobody listens on: bind one, then close it.
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started = time.monotonic()
        proc = self.run_keymig("migrate", "--config", self.values,
                               "--dsn", f"postgresql://keymig@127.0.0.1:{port}/nowhere")
        elapsed = time.monotonic() - started
        self.assertEqual(proc.returncode, 1, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        self.assertIn("connection refused: no server listens there", last)
        self.assertIn("Connection refused", last)
        self.assertNotIn("connection lost", proc.stderr)
        self.assertNotIn("connect_retry", proc.stderr)
        self.assertLess(elapsed, 5, "a refused connect waited %.1f s" % elapsed)

    def test_a_server_that_drops_the_connect_is_retried_once_per_attempt(self):
        # Accepts and hangs up at once, as a server restarting or a proxy without a backend.
        import socket
        import threading
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        done = threading.Event()

        def hang_up():
            listener.settimeout(0.2)
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                    conn.close()
                except OSError:
                    pass

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            proc = self.run_keymig("migrate", "--config", self.values, "--dsn",
                                   f"postgresql://keymig@127.0.0.1:{port}/nowhere?sslmode=disable")
        finally:
            done.set()
            thread.join()
            listener.close()
        self.assertEqual(proc.returncode, 1, proc.stderr)
        attempts = re.findall(r"event=connect_retry attempt=(\d+)", proc.stderr)
        self.assertTrue(attempts, proc.stderr)
        # migrate opens its other sessions only once the first is in: one line per attempt.
        self.assertEqual(len(attempts), len(set(attempts)), proc.stderr)
        self.assertIn("could not connect", proc.stderr.strip().splitlines()[-1])
        self.assertNotIn("connection lost", proc.stderr.strip().splitlines()[-1])

    def test_no_dsn_anywhere_is_exit_2_naming_where_a_dsn_comes_from(self):
        from unittest import mock
        libpq = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
        patched = mock.patch.dict(os.environ, {})
        patched.start()
        self.addCleanup(patched.stop)
        for name in libpq:
            os.environ.pop(name, None)
        env = {"PGHOST": ""}  # set but empty says nothing either
        for command in (("scan",), ("migrate",), ("status",), ("check-config", "--with-db")):
            with self.subTest(command=command):
                started = time.monotonic()
                proc = self.run_keymig(*command, "--config", self.values, "--json", env=env)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertLess(time.monotonic() - started, 5)
                error = json.loads(proc.stdout)["error"]
                self.assertEqual(json.loads(proc.stdout)["exit_code"], 2)
                for source in ("no database configured", "--dsn", "keyMigration.database.dsn",
                               "PGHOST", "PGDATABASE"):
                    self.assertIn(source, error)
        # libpq's own variables are a configuration: keymig goes on and tries them.
        env["PGHOST"] = "/nonexistent-socket-dir"
        proc = self.run_keymig("scan", "--config", self.values, env=env)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("connection refused", proc.stderr)

    def test_help_of_every_command_exits_0(self):
        top = self.run_keymig("--help")
        self.assertEqual(top.returncode, 0)
        self.assertIn("Examples:", top.stdout)
        commands = re.findall(r"^  ([a-z][a-z-]*)\s{2,}", top.stdout, re.MULTILINE)
        for required in ("keygen", "inspect", "check-config"):
            self.assertIn(required, commands)
        for command in commands:
            with self.subTest(command=command):
                proc = self.run_keymig(command, "--help")
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertIn(f"keymig {command}", proc.stdout)

    def test_each_command_help_ends_with_its_own_examples(self):
        top = self.run_keymig("--help").stdout
        generic = top[top.index("Examples:"):]
        commands = re.findall(r"^  ([a-z][a-z-]*)\s{2,}", top, re.MULTILINE)
        seen = {}
        for command in commands + ["journal purge", "bench db"]:
            with self.subTest(command=command):
                out = self.run_keymig(*command.split(), "--help").stdout
                self.assertNotIn(generic, out)
                self.assertIn("Examples:\n", out)
                examples = out[out.index("Examples:\n"):]
                lines = examples.splitlines()[1:]
                self.assertTrue(lines, out)
                first = command.split()[0]
                # Every example is a command line; the first is this command's.
                self.assertIn(f"keymig {first} ", lines[0])
                for line in lines:
                    self.assertTrue(line.startswith("  "), line)
                    self.assertNotIn("re-encrypt rolling-key rows", line)
                seen.setdefault(first, examples)
        self.assertEqual(len(set(seen.values())), len(seen), "two commands share examples")


if __name__ == "__main__":
    unittest.main()
