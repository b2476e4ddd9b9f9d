"""keymig status, reset-mfa and check-config --with-db (the MFA administration commands).

The fixture is made by Python's `cryptography`; expected counts are computed here from
the fixture, never from keymig. Every run is checked for leaked keys, tokens and
plaintexts by keymig_testlib.Keymig.
"""

import json
import os
import pty
import select
import subprocess
import time
import unittest

from keymig_testlib import (BINARY, EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_USAGE, DbTestCase,
                            Keymig, KeySet, Row, UserFixture, clean_env, drop_db, new_db, psql,
                            query, scalar, snapshot, write_config)

COUNTS = {"empty": 60, "active": 120, "active_flag_false": 40, "rolling0": 150,
          "rolling1": 90, "unknown_key": 15, "corrupt": 18}

# The pre-flight fixture has no malformed rows: a config with every key locks nobody out.
PREFLIGHT_COUNTS = {"empty": 30, "active": 60, "rolling0": 50, "rolling1": 40}


def is_sysadmin(row):
    # keymig_testlib.Row.copy_tuple: is_staff = id % 97 == 0, is_superuser = id % 211 == 0.
    return row.id % 97 == 0 or row.id % 211 == 0


def has_mfa(row):
    return row.token not in (None, "")


def expected_key(row):
    if not has_mfa(row):
        return "-"
    if row.kind.startswith("active"):
        return "active"
    if row.kind.startswith("rolling"):
        return "rolling_" + row.kind[-1]
    return "undecryptable"


def mfa_state(dsn):
    """{id: (secret, flag)} exactly as stored (NULL stays None)."""
    return {int(r[0]): (r[1], r[2]) for r in
            query(dsn, "SELECT id, mfa_secret, mfa_fernet_active::text FROM users")}


class StatusTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=606)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.dbname = "kmt_mfa_status"
        cls.dsn = new_db(cls.dbname)
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db(cls.dbname)
        super().tearDownClass()

    def setUp(self):
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def test_status_counts_match_the_fixture(self):
        rows = self.fx.rows
        s = self.km.run("status", "--json", expect=EXIT_OK).json
        self.assertEqual(s["users_total"], len(rows))
        self.assertEqual(s["with_mfa"], sum(1 for r in rows if has_mfa(r)))
        self.assertEqual(s["without_mfa"], sum(1 for r in rows if not has_mfa(r)))
        by_key = {k["key"]: k for k in s["by_key"]}
        self.assertEqual(by_key["active"]["users"], len(self.fx.by_kind("active")))
        self.assertEqual(by_key["rolling_0"]["users"], len(self.fx.by_kind("rolling0")))
        self.assertEqual(by_key["rolling_1"]["users"], len(self.fx.by_kind("rolling1")))
        for k in by_key.values():
            self.assertRegex(k["fingerprint"], r"^[0-9A-Za-z_\-:]{4,}$")
        self.assertEqual(len({k["fingerprint"] for k in by_key.values()}), 3)
        bad = self.fx.by_kind("bad:")
        self.assertEqual(s["undecryptable"], len(bad))
        self.assertEqual(sum(s["undecryptable_by_reason"].values()), len(bad))
        self.assertGreaterEqual(s["undecryptable_by_reason"].get("unknown_key", 0),
                                len(self.fx.by_kind("bad:unknown_key")))
        wrong = [r for r in rows if r.flag != (has_mfa(r) and r.kind.startswith("active"))]
        self.assertGreater(len(wrong), 0)
        self.assertEqual(s["wrong_flag"], len(wrong))
        admins = [r for r in rows if is_sysadmin(r)]
        self.assertGreater(len(admins), 0)
        self.assertEqual(s["sysadmins"], len(admins))
        self.assertEqual(s["sysadmins_without_mfa"], sum(1 for r in admins if not has_mfa(r)))
        self.assertEqual(s["sysadmins_unreadable"],
                         sum(1 for r in admins if r.kind.startswith("bad:")))

    def test_small_pages_give_the_same_counts(self):
        big = self.km.run("status", "--json", expect=EXIT_OK).json
        small = self.km.run("status", "--json", "--page-size", "7", expect=EXIT_OK).json
        for field in ("users_total", "with_mfa", "by_key", "undecryptable", "wrong_flag",
                      "sysadmins"):
            self.assertEqual(small[field], big[field], field)

    def test_list_rows_match_the_fixture(self):
        out = self.km.run("status", "--json", "--list", expect=EXIT_OK).json
        users = out["users"]
        self.assertEqual([u["id"] for u in users], [str(r.id) for r in
                                                     sorted(self.fx.rows, key=lambda r: r.id)])
        by_id = {u["id"]: u for u in users}
        for r in self.fx.rows:
            u = by_id[str(r.id)]
            ctx = "user %d (%s): %s" % (r.id, r.kind, u)
            self.assertEqual(u["username"], r.username, ctx)
            self.assertEqual(u["mfa"], has_mfa(r), ctx)
            self.assertEqual(u["key"].split(":")[0], expected_key(r), ctx)
            active = has_mfa(r) and r.kind.startswith("active")
            self.assertEqual(u["mfa_fernet_active"], active, ctx)
            self.assertEqual(u["stored_flag"], r.flag, ctx)
            self.assertEqual(u["flag_wrong"], r.flag != active, ctx)
            self.assertEqual(u["sysadmin"], is_sysadmin(r), ctx)
        self.assertEqual(out["users_total"], len(self.fx.rows))

    def test_text_list_shows_the_stored_flag_beside_a_wrong_one(self):
        text = self.km.run("status", "--list", expect=EXIT_OK).stdout
        lines = {l.split("\t")[0]: l.split("\t") for l in text.splitlines() if "\t" in l}
        self.assertEqual(lines["ID"], ["ID", "USERNAME", "MFA", "KEY", "MFA_FERNET_ACTIVE",
                                       "SYSADMIN"])
        stale = next(r for r in self.fx.by_kind("rolling") if r.flag)
        self.assertEqual(lines[str(stale.id)][4], "false (stored: true)")
        ok = next(r for r in self.fx.by_kind("active") if r.kind == "active")
        self.assertEqual(lines[str(ok.id)][1:5], [ok.username, "yes", "active", "true"])
        none = next(r for r in self.fx.by_kind("empty"))
        self.assertEqual(lines[str(none.id)][2], "no")
        self.assertIn("undecryptable:", text)

    def test_usernames_select_exact_users(self):
        picks = [self.fx.by_kind("rolling1")[0], self.fx.by_kind("active")[0]]
        out = self.km.run("status", "--json", "--list", "--usernames",
                          ",".join(r.username for r in picks) + ",nobody_here",
                          expect=EXIT_OK).json
        self.assertEqual(sorted(u["username"] for u in out["users"]),
                         sorted(r.username for r in picks))
        self.assertEqual(out["users_total"], 2)
        self.assertEqual(out["not_found"], ["nobody_here"])
        self.km.run("status", "--usernames", "user%", expect=EXIT_USAGE)


class ResetMfaTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=607)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.n = 0

    def setUp(self):
        type(self).n += 1
        self.dbname = "kmt_mfa_reset_%d" % self.n
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def reset_runs(self):
        if scalar(self.dsn, "SELECT to_regclass('keymig.runs') IS NOT NULL") != "t":
            return 0
        return int(scalar(self.dsn, "SELECT count(*) FROM keymig.runs WHERE kind = 'reset_mfa'"))

    def assert_unchanged(self, before, what):
        self.assertEqual(snapshot(self.dsn), before, what + " changed the table")
        self.assertEqual(self.reset_runs(), 0, what + " recorded a reset run")

    def picks(self):
        admin = next(r for r in self.fx.rows if is_sysadmin(r) and has_mfa(r))
        rolling = next(r for r in self.fx.by_kind("rolling") if r.flag and r is not admin)
        active = next(r for r in self.fx.by_kind("active") if r.kind == "active")
        bad = self.fx.by_kind("bad:")[0]
        return [admin, rolling, active, bad]

    def test_reset_then_rollback_restores_byte_identical_secrets_and_flags(self):
        before = snapshot(self.dsn)
        state_before = mfa_state(self.dsn)
        picks = self.picks()
        r = self.km.run("reset-mfa", "--yes", "--json", "--usernames",
                        ",".join(p.username for p in picks), expect=EXIT_OK)
        out = r.json
        run = out["run_id"]
        self.assertEqual(out["cleared"], len(picks))
        self.assertEqual(out["undo"], "keymig rollback --run " + run)
        self.assertEqual(sorted(u["username"] for u in out["users"]),
                         sorted(p.username for p in picks))

        after = mfa_state(self.dsn)
        chosen = {p.id for p in picks}
        for rid, old in state_before.items():
            if rid in chosen:
                self.assertEqual(after[rid], (None, "false"), "user %d not cleared" % rid)
            else:
                self.assertEqual(after[rid], old, "user %d changed" % rid)
        self.assertEqual(scalar(self.dsn, "SELECT kind || ' ' || state FROM keymig.runs "
                                "WHERE run_id = '%s'" % run), "reset_mfa completed")
        journal = {row[0]: row[1:] for row in query(
            self.dsn, "SELECT row_id, keymig.journal_text(old_token), keymig.journal_text(new_token),"
            " old_flag::text, new_flag::text "
            "FROM keymig.journal WHERE run_id = '%s'" % run)}
        self.assertEqual(set(journal), {str(i) for i in chosen})
        for p in picks:
            self.assertEqual(journal[str(p.id)],
                             (p.token, None, "true" if p.flag else "false", "false"))

        # The text form says how to undo it, too.
        self.km.run("rollback", "--run", run, expect=EXIT_OK)
        self.assertEqual(snapshot(self.dsn), before, "rollback did not restore every byte")

    def test_text_output_shows_users_and_the_undo_command(self):
        p = self.fx.by_kind("rolling0")[3]
        q = self.fx.by_kind("rolling1")[3]
        before = mfa_state(self.dsn)
        r = self.km.run("reset-mfa", "--yes", "--ids", str(p.id), "--usernames", q.username,
                        expect=EXIT_OK)
        self.assertIn("username=" + p.username, r.stdout)
        self.assertIn("username=" + q.username, r.stdout)
        run = scalar(self.dsn, "SELECT run_id FROM keymig.runs WHERE kind = 'reset_mfa'")
        self.assertIn("keymig rollback --run " + run, r.stdout)
        after = mfa_state(self.dsn)
        self.assertEqual(after[p.id], (None, "false"))
        self.assertEqual(after[q.id], (None, "false"))
        self.assertEqual(sum(1 for k in before if before[k] != after[k]), 2)

    def test_an_unknown_user_changes_nothing(self):
        before = snapshot(self.dsn)
        known = self.fx.by_kind("rolling0")[0]
        r = self.km.run("reset-mfa", "--yes", "--usernames", known.username + ",no_such_user",
                        expect=EXIT_USAGE)
        self.assertIn("no_such_user", r.stderr)
        self.assert_unchanged(before, "an unknown username")
        self.km.run("reset-mfa", "--yes", "--ids", "%d,99999999" % known.id, expect=EXIT_USAGE)
        self.assert_unchanged(before, "an unknown id")
        self.km.run("reset-mfa", "--yes", "--ids", "abc", expect=EXIT_USAGE)
        self.assert_unchanged(before, "an id that is not a bigint")

    def test_patterns_and_empty_lists_are_refused(self):
        before = snapshot(self.dsn)
        for args in (["--usernames", "user%"], ["--usernames", "user*"],
                     ["--usernames", "us?r000001"], ["--ids", "1%"], ["--usernames", ""],
                     ["--usernames", ","], ["--usernames", "user000001,"], ["--ids", ""], [],
                     ["--usernames", "user000001", "--ids", "2,"]):
            self.km.run("reset-mfa", "--yes", *args, expect=EXIT_USAGE)
        self.assert_unchanged(before, "a refused selection")

    def test_without_yes_and_without_a_terminal_it_refuses(self):
        before = snapshot(self.dsn)
        r = self.km.run("reset-mfa", "--usernames", self.fx.rows[0].username,
                        expect=EXIT_USAGE)
        self.assertIn("--yes", r.stderr)
        self.assert_unchanged(before, "reset-mfa without --yes")

    def run_on_terminal(self, args, answer):
        """Runs keymig with a pseudo-terminal as stdin and stderr; types `answer`."""
        master, slave = pty.openpty()
        full = ["reset-mfa", "--config", self.config, "--dsn", self.dsn] + args
        proc = subprocess.Popen([BINARY] + full, stdin=slave, stdout=subprocess.PIPE,
                                stderr=slave, env=clean_env(), text=True)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while b"Type 'yes'" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        os.write(master, (answer + "\n").encode())
        stdout, _ = proc.communicate(timeout=60)
        try:
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                seen += chunk
        except OSError:
            pass
        os.close(master)
        for text in (stdout, seen.decode(errors="replace")):
            leaks = self.fx.secrets.leaks(text)
            self.assertEqual(leaks, [], "reset-mfa on a terminal leaked")
        return proc.returncode, stdout, seen.decode(errors="replace")

    def test_on_a_terminal_it_asks_and_only_yes_confirms(self):
        before = snapshot(self.dsn)
        p = self.fx.by_kind("active")[1]
        code, stdout, prompt = self.run_on_terminal(["--usernames", p.username], "no")
        self.assertIn("Type 'yes'", prompt)
        self.assertIn(p.username, stdout)
        self.assertEqual(code, EXIT_USAGE)
        self.assert_unchanged(before, "a declined confirmation")
        code, stdout, _ = self.run_on_terminal(["--usernames", p.username], "yes")
        self.assertEqual(code, EXIT_OK, stdout)
        self.assertEqual(mfa_state(self.dsn)[p.id], (None, "false"))


class PreflightTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, PREFLIGHT_COUNTS, seed=608)
        # Two sysadmins without MFA (ids 97 * 211 * k: both admin columns true).
        for i, rid in enumerate((97 * 211 * 10, 97 * 211 * 11)):
            cls.fx.rows.append(Row(rid, "admin%d" % i, None if i else "", False, None, 0,
                                   "empty"))
        cls.full = write_config(cls.tmp, cls.keys.active, cls.keys.rolling, name="full.yaml")
        cls.dropped = write_config(cls.tmp, cls.keys.active, cls.keys.rolling[:1],
                                   name="dropped.yaml")
        cls.dbname = "kmt_mfa_preflight"
        cls.dsn = new_db(cls.dbname)
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db(cls.dbname)
        super().tearDownClass()

    def km(self, config):
        return Keymig(self, config, self.dsn, self.fx.secrets)

    def test_a_removed_rolling_key_locks_out_exactly_its_users(self):
        before = snapshot(self.dsn)
        r = self.km(self.dropped).run("check-config", "--with-db", "--json",
                                      expect=EXIT_NEEDS_ROLLING)
        db = r.json["preflight"]
        victims = sorted(str(x.id) for x in self.fx.by_kind("rolling1"))
        self.assertEqual(db["locked_out"], len(victims))
        self.assertEqual(db["missing_key"], len(victims))
        self.assertEqual(sorted(u["id"] for u in db["locked_out_users"]), victims)
        self.assertTrue(any("missing" in w for w in db["warnings"]), db["warnings"])
        text = self.km(self.dropped).run("check-config", "--with-db",
                                         expect=EXIT_NEEDS_ROLLING).stdout
        self.assertIn("locked out", text)
        self.assertEqual(snapshot(self.dsn), before, "the pre-flight wrote to the table")

    def test_a_config_with_every_key_locks_nobody_out(self):
        r = self.km(self.full).run("check-config", "--with-db", "--json", expect=EXIT_OK)
        self.assertEqual(r.json["preflight"]["locked_out"], 0)
        self.assertEqual(r.json["preflight"]["locked_out_users"], [])

    def test_sysadmins_without_mfa_are_warned_about_when_mfa_is_mandatory_for_them(self):
        admins_without = [r for r in self.fx.rows if is_sysadmin(r) and not has_mfa(r)]
        self.assertGreaterEqual(len(admins_without), 2)
        strict = os.path.join(self.tmp, "strict.yaml")
        with open(self.full) as f:
            doc = json.load(f)
        # JSON is YAML: the MFA policy next to the keys.
        doc["userLogin"] = {"mfa": {"enabled": True, "mandatoryForSysAdmins": True}}
        fd = os.open(strict, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        r = self.km(strict).run("check-config", "--with-db", "--json", expect=EXIT_OK)
        db = r.json["preflight"]
        self.assertEqual(sorted(u["id"] for u in db["sysadmins_at_risk"]),
                         sorted(str(x.id) for x in admins_without))
        self.assertTrue(any("sysadmin" in w for w in db["warnings"]), db["warnings"])
        # Without the policy, sysadmins without MFA are not at risk.
        r = self.km(self.full).run("check-config", "--with-db", "--json", expect=EXIT_OK)
        self.assertEqual(r.json["preflight"]["sysadmins_at_risk"], [])

    def test_a_key_the_last_migration_used_is_reported_when_removed(self):
        dbname = "kmt_mfa_preflight_runs"
        dsn = new_db(dbname)
        try:
            self.fx.load(dsn)
            full = Keymig(self, self.full, dsn, self.fx.secrets)
            keys = full.run("check-config", "--json", expect=EXIT_OK).json["keys"]
            removed = keys[-1]["fingerprint"]  # rolling[1], absent from dropped.yaml
            one = self.fx.by_kind("rolling0")[0]
            full.run("migrate", "--json", "--ids", str(one.id), expect=EXIT_OK)
            r = Keymig(self, self.dropped, dsn, self.fx.secrets).run(
                "check-config", "--with-db", "--json", expect=EXIT_NEEDS_ROLLING)
            self.assertEqual(r.json["preflight"]["removed_fingerprints"], [removed])
            self.assertTrue(any(removed in w for w in r.json["preflight"]["warnings"]))
        finally:
            drop_db(dbname)


if __name__ == "__main__":
    unittest.main()
