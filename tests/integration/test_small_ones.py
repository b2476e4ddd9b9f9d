"""The small contract points of issue 19, each against a real PostgreSQL through the
binary: a selection of only unknown users, `--json` of a migrate stopped by SIGINT,
reset-mfa without an active key, and the runbooks' backup files (docs/break-glass.md)
coming out readable by their owner alone.

Every keymig output is searched for every key, token and plaintext (keymig_testlib)."""

import os
import re
import signal
import stat
import subprocess
import time
import unittest

import keymig_testlib as kt


class SmallOnes(kt.DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = kt.KeySet(rolling=1)
        cls.config = kt.write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def fixture(self, name, counts):
        db = kt.new_db(name)
        self.addCleanup(kt.drop_db, name)
        fx = kt.UserFixture(self.keys, counts)
        fx.load(db)
        return db, fx

    def schema_keymig_exists(self, db):
        return kt.scalar(db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'keymig'") == "1"

    # --- a selection of only unknown users ------------------------------------------------

    def test_a_selection_of_only_unknown_users_is_exit_2_and_writes_nothing(self):
        db, fx = self.fixture("keymig_small_unknown", {"rolling0": 10})
        km = kt.Keymig(self, self.config, db, fx.secrets)
        before = kt.snapshot(db)
        for command in ("migrate", "scan", "status", "migrate --dry-run"):
            for selection in (("--ids", "999998,999999"), ("--usernames", "ghost,nobody")):
                with self.subTest(command=command, selection=selection):
                    r = km.run(command, *selection, "--json", expect=kt.EXIT_USAGE)
                    self.assertFalse(r.json["ok"])
                    self.assertEqual(r.json["exit_code"], kt.EXIT_USAGE)
                    self.assertIn("no user " + selection[1].replace(",", ", "), r.json["error"])
                    self.assertIn("names nobody there", r.json["error"])
        self.assertEqual(kt.snapshot(db), before)
        self.assertFalse(self.schema_keymig_exists(db), "a refused migrate made schema keymig")

        # One known user among unknown ones: the known one is migrated, the rest listed.
        known = fx.rows[0]
        r = km.run("migrate", "--usernames", known.username + ",ghost", "--json",
                   expect=kt.EXIT_OK)
        self.assertEqual(r.json["rotated"], 1)
        self.assertEqual(r.json["not_found"], ["ghost"])

    # --- --json of a migrate stopped by SIGINT ----------------------------------------------

    def test_json_exit_code_of_a_migrate_stopped_by_sigint_is_the_real_exit_code(self):
        # Undecryptable rows too: their exit 3 is what the report claimed before.
        db, fx = self.fixture("keymig_small_sigint", {"rolling0": 3000, "unknown_key": 5})
        km = kt.Keymig(self, self.config, db, fx.secrets)
        proc = km.start("migrate", "--json", "--threads", "1", "--batch-size", "50",
                        "--max-rows-per-second", "500")
        self.assertTrue(kt.wait_until(lambda: kt.journal_count(db) > 0 if self.schema_keymig_exists(db)
                                      else False, 60), "migrate wrote nothing")
        proc.send_signal(signal.SIGINT)
        r = km.finish(proc, timeout=120)
        self.assertEqual(r.returncode, kt.EXIT_RUNTIME, r.describe())
        summary = r.json
        self.assertTrue(summary["stopped"])
        self.assertEqual(summary["exit_code"], r.returncode)
        self.assertEqual(summary["state"], "running")

    # --- reset-mfa without an active key ----------------------------------------------------

    def test_reset_mfa_needs_no_active_key(self):
        db, fx = self.fixture("keymig_small_reset", {"rolling0": 3, "active": 2})
        target = fx.rows[0]
        no_keys = os.path.join(self.tmp, "no-keys.yaml")
        with open(no_keys, "w") as f:
            f.write("keyMigration:\n  target: {table: users}\n")
        km = kt.Keymig(self, no_keys, db, fx.secrets)
        r = km.run("reset-mfa", "--usernames", target.username, "--yes", "--json",
                   expect=kt.EXIT_OK)
        out = r.json
        self.assertEqual(out["cleared"], 1)
        self.assertEqual(out["users"][0]["key"], "unchecked")
        self.assertIn("no active key configured", r.stderr)
        self.assertEqual(kt.current_secrets(db)[target.id], (None, False))
        # The reset is journaled and undone as any other.
        km.run("rollback", "--run", out["run_id"], expect=kt.EXIT_OK)
        self.assertEqual(kt.current_secrets(db)[target.id][0], target.token)

        # No config file at all, only the DSN: the defaults (table users) and no keys.
        other = fx.rows[1]
        bare = kt.Keymig(self, None, db, fx.secrets)
        r = bare.run("reset-mfa", "--ids", str(other.id), "--yes", expect=kt.EXIT_OK)
        self.assertIn("cleared MFA for 1 user(s)", r.stdout)
        self.assertIsNone(kt.current_secrets(db)[other.id][0])

    # --- the runbooks' backup files ---------------------------------------------------------

    def break_glass(self):
        with open(os.path.join(kt.SOURCE_DIR, "docs", "break-glass.md")) as f:
            return f.read()

    def run_documented(self, line, db, stdin=None):
        """Runs a runbook's shell line as an operator would, with the common umask 022."""
        work = os.path.join(self.tmp, "operator")
        os.makedirs(work, exist_ok=True)
        proc = subprocess.run(["bash", "-c", "umask 022; " + line], cwd=work, input=stdin,
                              capture_output=True, text=True, env=dict(os.environ, DSN=db),
                              timeout=120)
        self.assertEqual(proc.returncode, 0, "%s\n%s" % (line, proc.stderr))
        return work

    def assert_owner_only(self, path):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600, "%s is mode %04o" % (os.path.basename(path), mode))

    def test_the_break_glass_backups_are_readable_by_their_owner_alone(self):
        db, fx = self.fixture("keymig_small_backup", {"rolling0": 3})
        kt.psql(db, "UPDATE users SET username = 'alice' WHERE id = %d" % fx.rows[0].id)
        text = self.break_glass()

        # 2a: the pg_dump line, as written.
        dump = next(l for l in text.splitlines() if "pg_dump" in l and "users-before-reset" in l)
        work = self.run_documented(dump, db)
        backup = os.path.join(work, "users-before-reset.sql")
        self.assert_owner_only(backup)
        with open(backup) as f:
            self.assertIn(fx.rows[0].token, f.read())

        # 2b: psql started as written, fed the documented \copy line.
        start = next(l for l in text.splitlines() if re.match(r'^\(?(umask \d+; )?psql "\$DSN"', l))
        copy = next(l for l in text.splitlines() if l.startswith("\\copy (SELECT"))
        work = self.run_documented(start, db, stdin=copy + "\n")
        tsv = os.path.join(work, "mfa-backup-alice.tsv")
        self.assert_owner_only(tsv)
        with open(tsv) as f:
            self.assertIn(fx.rows[0].token, f.read())

    def test_every_documented_command_that_writes_a_file_sets_umask_077(self):
        docs = [os.path.join(kt.SOURCE_DIR, p) for p in (
            "README.md", "docs/operations.md", "docs/break-glass.md", "deploy/kubernetes/README.md")]
        command = re.compile(r"^\s*\(?(umask \d+; )?(keymig|pg_dump|psql|kubectl)\b")
        checked = 0
        for path in docs:
            with open(path) as f:
                lines = f.read().splitlines()
            for n, line in enumerate(lines, 1):
                if command.match(line) and re.search(r"\s>\s*[^\s&>]", line):
                    checked += 1
                    self.assertIn("umask 077", line, "%s:%d writes a file others can read: %s" % (
                        os.path.relpath(path, kt.SOURCE_DIR), n, line.strip()))
        self.assertGreaterEqual(checked, 3)


if __name__ == "__main__":
    unittest.main()
