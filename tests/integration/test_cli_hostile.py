"""keymig against hostile or careless input: DSNs with passwords libpq cannot parse, a
trigger that quotes a row's token in its error, numeric flags far out of range, --json on
failure, duplicate YAML keys, a dry run on a database without schema keymig, malformed
metrics settings and usernames that carry terminal escapes.

Fixtures are made by Python's `cryptography`; every run is searched for every key, token
and plaintext (keymig_testlib.Keymig) and, where a password is in play, for every piece of
that password too."""

import json
import os
import resource
import subprocess
import time
import unittest
import urllib.parse

from keymig_testlib import (BINARY, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, UNDER_ASAN, DbTestCase,
                            Keymig, KeySet, UserFixture, clean_env, drop_db, new_db, psql, query,
                            scalar, write_config)

COUNTS = {"active": 6, "rolling0": 12, "empty": 2}

# Distinctive pieces: none of them may appear anywhere keymig writes.
PIECES = ("Qz7hSEC", "RETv4Kp", "Wm3xPRIV", "Nb8cENV")


def _limited():
    # A binary that believes --threads 2000000000 must fail fast here, not take the host.
    # ASan's shadow memory alone is more address space than any such limit (UNDER_ASAN).
    if not UNDER_ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


class HostileCli(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=2020)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.dbname = "kmt_cli_hostile"
        cls.dsn = new_db(cls.dbname)
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db(cls.dbname)
        super().tearDownClass()

    def setUp(self):
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def run_raw(self, *args, env=None, timeout=120):
        """keymig with exactly these arguments; (exit code, stdout, stderr, seconds)."""
        start = time.monotonic()
        proc = subprocess.run([BINARY, *args], capture_output=True, text=True,
                              env=clean_env(env), timeout=timeout, preexec_fn=_limited)
        self.km.check_output(type("R", (), {"args": list(args), "stdout": proc.stdout,
                                            "stderr": proc.stderr})())
        return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start

    def assert_failure_json(self, stdout, code, context):
        try:
            doc = json.loads(stdout)
        except ValueError:
            self.fail("%s: stdout is not one JSON object: %r" % (context, stdout[:500]))
        self.assertIsInstance(doc, dict, context)
        self.assertEqual(doc.get("exit_code"), code, "%s: %s" % (context, doc))
        self.assertTrue(doc.get("error"), "%s: %s" % (context, doc))
        return doc

    def config_with(self, name, text):
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def keys_yaml(self):
        return 'secretStore:\n  activeKey: "%s"\n  rollingKey: "%s"\n' % (
            self.keys.active, self.keys.rolling[0])

    # --- item 7: secrets in output ---------------------------------------------------------

    def test_a_malformed_dsn_never_shows_its_password_and_is_a_usage_error_at_once(self):
        dsns = {
            "bad percent-encoding": "postgresql://u:%s%%zz%s@127.0.0.1/db" % PIECES[:2],
            "unclosed IPv6 bracket": "postgresql://u:%s@[::1/db" % PIECES[2],
            "password with a space": "host=127.0.0.1 password=%s %s" % PIECES[:2],
            "password in the query": "postgresql:///db?password=%s&bogus%%zz=1" % PIECES[2],
        }
        for shape, dsn in dsns.items():
            for command in (["scan", "--json"], ["migrate", "--json"], ["status"]):
                with self.subTest(shape=shape, command=command[0]):
                    code, out, err, seconds = self.run_raw(
                        *command, "--config", self.config, "--dsn", dsn, "--log-format", "json",
                        env={"PGPASSWORD": PIECES[3]})
                    for piece in PIECES:
                        self.assertFalse(piece in out or piece in err,
                                         "%s: a piece of the password was printed" % shape)
                    self.assertEqual(code, EXIT_USAGE, "%s: %s" % (shape, err[-500:]))
                    self.assertLess(seconds, 10, "%s: retried as a lost connection" % shape)
                    self.assertIn("DSN", err)
                    if "--json" in command:
                        self.assert_failure_json(out, EXIT_USAGE, shape)

    def test_a_connection_error_never_shows_the_password(self):
        # Parsed fine, refused by the server: libpq names the user and host, never the password.
        parts = urllib.parse.urlsplit(self.dsn)
        dsn = "postgresql://no_such_role_x:%s@%s:%d/%s" % (
            PIECES[0], parts.hostname or "127.0.0.1", parts.port or 5432, self.dbname)
        code, out, err, _ = self.run_raw("scan", "--json", "--config", self.config, "--dsn", dsn,
                                         env={"PGPASSWORD": PIECES[3]})
        self.assertNotEqual(code, EXIT_OK)
        for piece in PIECES:
            self.assertFalse(piece in out or piece in err, "a password was printed")

    def test_a_trigger_quoting_the_token_never_reaches_stderr_or_the_runs_table(self):
        db = "kmt_cli_hostile_trigger"
        dsn = new_db(db)
        self.addCleanup(drop_db, db)
        fx = UserFixture(self.keys, {"rolling0": 8}, seed=77)
        fx.load(dsn)
        psql(dsn, """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'refused % -> %', OLD.mfa_secret, NEW.mfa_secret
    USING DETAIL = 'row ' || OLD.mfa_secret, HINT = NEW.mfa_secret;
END $$;
CREATE TRIGGER refuse BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse();""")
        km = Keymig(self, self.config, dsn, fx.secrets)
        for args in (["migrate", "--json"], ["migrate", "--log-format", "json"]):
            r = km.run(*args, expect=(EXIT_OK, EXIT_RUNTIME, 3, 4))  # checks stdout, stderr
            self.assertNotIn("gAAAAA", r.stdout + r.stderr)
        runs = "\n".join(row[0] for row in query(dsn, "SELECT row_to_json(r)::text "
                                                      "FROM keymig.runs r"))
        self.assertTrue(runs, "no run recorded")
        self.assertNotIn("gAAAAA", runs, "a token in keymig.runs")
        self.assertFalse(fx.secrets.leaks(runs), "a fixture token in keymig.runs")
        # Nothing was changed: the trigger refused every row.
        for row in fx.rows:
            self.assertEqual(scalar(dsn, "SELECT mfa_secret FROM users WHERE id = %d" % row.id),
                             row.token)

    def test_a_pushgateway_password_never_appears_in_any_message(self):
        for userinfo in ("ops:%s/x" % PIECES[2], "ops:%s%%zz" % PIECES[2], "ops:%s?#" % PIECES[2],
                         "ops:%s%%40:x" % PIECES[2]):
            with self.subTest(userinfo=userinfo):
                # Port 9: nothing listens, so a URL that parses fails at the push.
                code, out, err, _ = self.run_raw(
                    "scan", "--json", "--config", self.config, "--dsn", self.dsn,
                    "--push-gateway", "http://%s@127.0.0.1:9" % userinfo)
                # A URL that does not parse is refused before the run; one that does fails
                # at the push.
                self.assertIn(code, (EXIT_OK, EXIT_USAGE, 3, 4), err[-500:])
                self.assertIn("--push-gateway" if code == EXIT_USAGE else "metrics_export_failed",
                              err)
                self.assertNotIn(PIECES[2], out + err)

    def test_a_malformed_pushgateway_flag_is_refused_before_the_run_and_not_quoted(self):
        # At the end of a run a bad URL could only be a warning after every row was written.
        for url in ("ftp://ops:%s@127.0.0.1:9091" % PIECES[2], "http://ops:%s@127.0.0.1:nine"
                    % PIECES[2], "ops:%s@gw" % PIECES[2]):
            with self.subTest(url=url.replace(PIECES[2], "...")):
                dsn = new_db("kmt_cli_hostile_push")
                self.fx.load(dsn)
                code, out, err, _ = self.run_raw(
                    "migrate", "--json", "--config", self.config, "--dsn", dsn,
                    "--push-gateway", url)
                self.assertEqual(code, EXIT_USAGE, err[-500:])
                self.assertIn("--push-gateway", err)
                self.assertNotIn(PIECES[2], out + err)
                self.assertEqual(scalar(dsn, "SELECT count(*) FROM pg_namespace "
                                             "WHERE nspname = 'keymig'"), "0", "a run started")
                for row in self.fx.rows:
                    self.assertEqual(scalar(dsn, "SELECT coalesce(mfa_secret, '') FROM users "
                                                 "WHERE id = %d" % row.id), row.token or "")
                drop_db("kmt_cli_hostile_push")

    def test_a_key_token_or_dsn_in_the_wrong_place_on_the_command_line_is_not_echoed(self):
        # The command-line parser's messages quote the argument they refuse, and so do some
        # checks after it.
        key, token = self.keys.rolling[0], self.fx.rows[0].token
        url = "postgresql://u:%s@127.0.0.1/db" % PIECES[0]
        cases = [
            ("a key as a flag's value", ["migrate", "--batch-size", key]),
            ("a key after --option=", ["migrate", "--frob=" + key]),
            ("a key as a stray argument", ["scan", key]),
            # A key may begin with '-': the parser read "-h..." as short flags, printed the
            # help and exited 0 (about one random key in 4096).
            ("a key that begins with -h", ["scan", "-h" + key[2:]]),
            ("a key that begins with --", ["migrate", "--" + key[2:]]),
            ("a key taken as an option's value", ["scan", "--usernames", key]),
            ("a token as a flag's value", ["scan", "--threads", token]),
            ("a DSN without --dsn", ["migrate", url]),
            ("a DSN after --option=", ["migrate", "--batch-size=" + url]),
            ("a key=value DSN without --dsn", ["scan", "host=h password=%s" % PIECES[1]]),
            # Refused after parsing, by the module that reads it, which quotes the value.
            ("a key as --metrics-listen", ["migrate", "--metrics-listen", key, "--dsn", self.dsn]),
        ]
        for shape, args in cases:
            with self.subTest(shape=shape):
                # run_raw fails the test if a fixture key or token reaches stdout or stderr.
                code, out, err, _ = self.run_raw(*args, "--json", "--config", self.config)
                self.assertEqual(code, EXIT_USAGE, err[-500:])
                for piece in PIECES:
                    self.assertNotIn(piece, out + err, shape)
                self.assertIn("[redacted", err, shape)
                self.assert_failure_json(out, EXIT_USAGE, shape)

    # --- item 12: bad input ----------------------------------------------------------------

    def test_numeric_flags_far_out_of_range_are_usage_errors(self):
        cases = [
            ("migrate", "--threads", "2000000000"),
            ("migrate", "--threads", "1025"),
            ("scan", "--threads", "-1"),
            ("migrate", "--batch-size", "9223372036854775807"),
            ("scan", "--batch-size", "1000001"),
            ("verify", "--batch-size", "0"),
            ("migrate", "--max-rows-per-second", "-5"),
            ("migrate", "--max-rows-per-second", "10000000000"),
            ("rollback", "--run", "m-x", "--batch-size", "99999999999"),
            ("finalize", "--run", "m-x", "--threads", "4096"),
            ("status", "--page-size", "0"),
        ]
        for case in cases:
            with self.subTest(args=case):
                code, out, err, seconds = self.run_raw(
                    *case, "--json", "--config", self.config, "--dsn", self.dsn, timeout=60)
                self.assertEqual(code, EXIT_USAGE, err[-500:])
                flag = [a for a in case if a.startswith("--")][-1]
                self.assertIn(flag, err)
                self.assert_failure_json(out, EXIT_USAGE, " ".join(case))
        # The bounds themselves are accepted.
        r = self.km.run("scan", "--threads", "1024", "--batch-size", "1000000",
                        "--max-rows-per-second", "1000000000", "--json")
        self.assertIn(r.returncode, (EXIT_OK, 3, 4), r.describe())
        self.assertEqual(r.json["rows_scanned"], len(self.fx.rows))

    def test_every_json_command_prints_one_object_on_failure(self):
        missing = os.path.join(self.tmp, "no-such-values.yaml")
        nodb = self.dsn.rsplit("/", 1)[0] + "/kmt_no_such_database"
        bad_target = self.config_with("badtarget.yaml", self.keys_yaml() +
                                      "keyMigration:\n  target: {table: no_such_table}\n")
        cases = [
            (EXIT_USAGE, ["scan", "--json", "--config", missing]),
            (EXIT_USAGE, ["check-config", "--json", "--config", missing]),
            (EXIT_USAGE, ["migrate", "--json", "--bogus-flag"]),
            (EXIT_USAGE, ["journal", "purge", "--json", "--config", self.config, "--dsn",
                          self.dsn, "--older-than", "soon"]),
            (EXIT_RUNTIME, ["verify", "--json", "--config", self.config, "--dsn", nodb]),
            (EXIT_RUNTIME, ["status", "--json", "--config", self.config, "--dsn", nodb]),
            (EXIT_USAGE, ["scan", "--json", "--config", bad_target, "--dsn", self.dsn]),
            (EXIT_USAGE, ["status", "--list", "--json", "--config", bad_target, "--dsn",
                          self.dsn]),
            (EXIT_USAGE, ["reset-mfa", "--json", "--config", self.config, "--dsn", self.dsn]),
        ]
        for code, args in cases:
            with self.subTest(args=args):
                got, out, err, _ = self.run_raw(*args)
                self.assertEqual(got, code, err[-500:])
                doc = self.assert_failure_json(out, code, " ".join(args))
                self.assertTrue(err.strip(), "the failure is on stderr too")
                self.assertNotIn("\n", doc["error"])

    def test_duplicate_yaml_keys_are_config_errors_naming_key_and_line(self):
        cases = {
            "secretStore.activeKey": self.keys_yaml() + '  activeKey: "%s"\n' % self.keys.unknown,
            "keyMigration.batchSize": self.keys_yaml() +
            "keyMigration:\n  batchSize: 10\n  threads: 2\n  batchSize: 20\n",
            "keyMigration.target.table": self.keys_yaml() +
            "keyMigration:\n  target:\n    table: a\n    table: b\n",
            "keyMigration": self.keys_yaml() + "keyMigration: {}\nkeyMigration: {threads: 1}\n",
            "userLogin.mfa.enabled": self.keys_yaml() +
            "userLogin:\n  mfa:\n    enabled: true\n    enabled: false\n",
        }
        for key, text in cases.items():
            with self.subTest(key=key):
                path = self.config_with("dup.yaml", text)
                r = self.km.run("check-config", "--config", path, with_config=False,
                                expect=EXIT_USAGE)
                self.assertIn(key, r.stderr)
                self.assertIn("duplicate", r.stderr)
                line = next(i + 1 for i, l in reversed(list(enumerate(text.splitlines())))
                            if l.strip().startswith(key.split(".")[-1] + ":"))
                self.assertIn("%s:%d" % (path, line), r.stderr)
        # The chart's own sections are not keymig's to judge.
        path = self.config_with("chart.yaml", self.keys_yaml() + "image: a\nimage: b\n")
        self.km.run("check-config", "--config", path, with_config=False, expect=EXIT_OK)

    def test_a_dry_run_writes_nothing_not_even_the_schema(self):
        db = "kmt_cli_hostile_dry"
        dsn = new_db(db)
        self.addCleanup(drop_db, db)
        self.fx.load(dsn)
        before = query(dsn, "SELECT id::text, mfa_secret, mfa_fernet_active::text FROM users "
                            "ORDER BY id")
        km = Keymig(self, self.config, dsn, self.fx.secrets)
        r = km.run("migrate", "--dry-run", "--json", expect=EXIT_OK)
        self.assertEqual(r.json["rotated"], len(self.fx.by_kind("rolling")), r.describe())
        self.assertEqual(scalar(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = "
                                     "'keymig'"), "0", "a dry run created schema keymig")
        self.assertEqual(query(dsn, "SELECT id::text, mfa_secret, mfa_fernet_active::text "
                                    "FROM users ORDER BY id"), before)

    def test_check_config_refuses_a_malformed_listen_address_or_pushgateway(self):
        bad = [
            ("listen", "nonsense"),
            ("listen", "127.0.0.1:99999"),
            ("listen", "[::1:9464"),
            ("listen", "example.com:9464"),
            ("listen", "1.2.3.4:"),
            ("pushGateway", "ftp://gw:9091"),
            ("pushGateway", "gw:9091"),
            ("pushGateway", "http://ops:%s@gw:notaport" % PIECES[2]),
            ("pushGateway", "http://ops:%s@:9091" % PIECES[2]),
            ("pushGateway", "http://gw:9091/metrics/job/x"),
            ("pushGateway", "http://g w:9091"),
        ]
        for key, value in bad:
            with self.subTest(key=key, value=value):
                path = self.config_with("metrics.yaml", self.keys_yaml() +
                                        "keyMigration:\n  metrics:\n    %s: %s\n" %
                                        (key, json.dumps(value)))
                code, out, err, _ = self.run_raw("check-config", "--json", "--config", path)
                self.assertEqual(code, EXIT_USAGE, err)
                self.assertIn("keyMigration.metrics." + key, err)
                self.assertIn("%s:6" % path, err)
                self.assertNotIn(PIECES[2], out + err)
                self.assert_failure_json(out, EXIT_USAGE, value)
        good = [("listen", "127.0.0.1:9464"), ("listen", ":0"), ("listen", "[::1]:9464"),
                ("listen", "localhost:9464"), ("listen", "0.0.0.0:9464"),
                ("pushGateway", "http://gw.monitoring.svc:9091"),
                ("pushGateway", "https://ops:pw@gw:9091/"), ("pushGateway", "http://[::1]:9091"),
                ("pushGateway", "")]
        for key, value in good:
            with self.subTest(key=key, value=value):
                path = self.config_with("metrics.yaml", self.keys_yaml() +
                                        "keyMigration:\n  metrics:\n    %s: %s\n" %
                                        (key, json.dumps(value)))
                self.km.run("check-config", "--config", path, with_config=False, expect=EXIT_OK)

    def test_usernames_with_control_characters_are_shown_escaped(self):
        db = "kmt_cli_hostile_names"
        dsn = new_db(db)
        self.addCleanup(drop_db, db)
        self.fx.load(dsn)
        evil = {9001: "evil\x1b[2J\x1b]0;pwned\x07", 9002: "two\nlines", 9003: "tab\tcr\r"}
        for rid, name in evil.items():
            psql(dsn, "INSERT INTO users(id, username) VALUES (%d, convert_from('\\x%s', "
                      "'UTF8'))" % (rid, name.encode().hex()))
        km = Keymig(self, self.config, dsn, self.fx.secrets)
        r = km.run("status", "--list", expect=EXIT_OK)
        for text in (r.stdout, r.stderr):
            self.assertNotIn("\x1b", text)
            self.assertNotIn("\x07", text)
            self.assertNotIn("\r", text)
        self.assertIn("evil\\x1b[2J\\x1b]0;pwned\\x07", r.stdout)
        self.assertIn("two\\nlines", r.stdout)
        self.assertIn("tab\\tcr\\r", r.stdout)
        rows = [l for l in r.stdout.splitlines() if l[:1].isdigit()]
        self.assertEqual(len(rows), len(self.fx.rows) + len(evil))
        # JSON keeps the names exactly.
        j = km.run("status", "--list", "--json", expect=EXIT_OK).json
        names = {u["id"]: u["username"] for u in j["users"]}
        for rid, name in evil.items():
            self.assertEqual(names[str(rid)], name)
        # The reset-mfa confirmation names the user escaped too.
        r = km.run("reset-mfa", "--ids", "9001,9002", "--yes", expect=EXIT_OK)
        self.assertNotIn("\x1b", r.stdout + r.stderr)
        self.assertIn("username=evil\\x1b[2J", r.stdout)
        self.assertIn("username=two\\nlines", r.stdout)


if __name__ == "__main__":
    unittest.main()
