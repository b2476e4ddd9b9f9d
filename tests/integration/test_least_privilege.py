"""Least privilege: the grants of scripts/keymig-role.sql are enough for every command, and
a role without one of them hears which, before anything is written."""

import os
import subprocess
import unittest
import urllib.parse

from keymig_testlib import (EXIT_OK, EXIT_USAGE, SOURCE_DIR, DbTestCase, Keymig, KeySet,
                            UserFixture, base_dsn, check_all_rotated, drop_db, dsn_with_db,
                            new_db, psql, scalar, snapshot, write_config)

ROLE_SQL = os.path.join(SOURCE_DIR, "scripts", "keymig-role.sql")


def as_role(dsn, role):
    parts = urllib.parse.urlsplit(dsn)
    host = parts.netloc.split("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=role + "@" + host))


def grant(dsn, role, **extra):
    args = ["psql", "-X", "-q", "-d", dsn, "-v", "role=" + role, "-v", "table=public.users",
            "-v", "secret_column=mfa_secret", "-v", "flag_column=mfa_fernet_active"]
    for k, v in extra.items():
        args += ["-v", "%s=%s" % (k, v)]
    proc = subprocess.run(args + ["-f", ROLE_SQL], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError("keymig-role.sql failed: %s" % proc.stderr)


class LeastPrivilegeTest(DbTestCase):

    ROLE = "km_least_%d" % os.getpid()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 900, "active": 80, "empty": 30}, seed=77)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    @classmethod
    def tearDownClass(cls):
        for db in ("kmt_least", "kmt_least_nocreate", "kmt_least_noupdate"):
            drop_db(db)
        psql(dsn_with_db(base_dsn(), "postgres"), "DROP ROLE IF EXISTS %s" % cls.ROLE, check=False)
        super().tearDownClass()

    def privileges(self, dsn):
        return scalar(dsn, "SELECT concat_ws(',',"
                      " has_table_privilege('%(r)s', 'public.users', 'INSERT'),"
                      " has_table_privilege('%(r)s', 'public.users', 'DELETE'),"
                      " has_table_privilege('%(r)s', 'public.users', 'TRUNCATE'),"
                      " has_column_privilege('%(r)s', 'public.users', 'username', 'UPDATE'),"
                      " has_column_privilege('%(r)s', 'public.users', 'is_superuser', 'UPDATE'),"
                      " has_database_privilege('%(r)s', current_database(), 'CREATE'),"
                      " (SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb"
                      "    FROM pg_roles WHERE rolname = '%(r)s'))" % {"r": self.ROLE})

    def test_the_role_script_grants_enough_for_every_command_and_nothing_more(self):
        dsn = new_db("kmt_least")
        self.fx.load(dsn)
        grant(dsn, self.ROLE)
        grant(dsn, self.ROLE)  # idempotent
        self.assertEqual(self.privileges(dsn), "f,f,f,f,f,f,f")
        km = Keymig(self, self.config, as_role(dsn, self.ROLE), self.fx.secrets)
        km.run("scan", "--json", expect=EXIT_OK)
        s = km.run("migrate", "--json", "--batch-size", "200", expect=EXIT_OK).json
        self.assertEqual(s["rotated"], len(self.fx.by_kind("rolling")))
        check_all_rotated(self, dsn, self.keys, self.fx, s["run_id"])
        km.run("verify", "--json", "--run", s["run_id"], expect=EXIT_OK)
        km.run("status", "--json", expect=EXIT_OK)
        km.run("rollback", "--run", s["run_id"], "--json", expect=EXIT_OK)
        s = km.run("migrate", "--json", expect=EXIT_OK).json
        f = km.run("finalize", "--run", s["run_id"], "--json", expect=EXIT_OK).json
        self.assertTrue(f["rolling_key_retirable"])
        # Schema keymig is the role's, made by the script, so that upgrades need no CREATE.
        self.assertEqual(scalar(dsn, "SELECT nspowner::regrole::text FROM pg_namespace"
                                " WHERE nspname = 'keymig'"), self.ROLE)

    def test_a_role_that_may_not_create_schema_keymig_is_told_and_nothing_is_made(self):
        dsn = new_db("kmt_least_nocreate")
        self.fx.load(dsn)
        psql(dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%(r)s')"
             " THEN CREATE ROLE %(r)s LOGIN; END IF; END $$;"
             " GRANT SELECT, UPDATE ON public.users TO %(r)s" % {"r": self.ROLE})
        before = snapshot(dsn)
        km = Keymig(self, self.config, as_role(dsn, self.ROLE), self.fx.secrets)
        r = km.run("migrate", "--json", expect=EXIT_USAGE)
        self.assertIn("CREATE on the database", r.stderr)
        self.assertIn(self.ROLE, r.stderr)
        self.assertIn("scripts/keymig-role.sql", r.stderr)
        self.assertEqual(scalar(dsn, "SELECT to_regnamespace('keymig') IS NULL"), "t")
        self.assertEqual(snapshot(dsn), before)

    def test_a_role_without_update_on_the_secret_is_told_before_anything_is_written(self):
        dsn = new_db("kmt_least_noupdate")
        self.fx.load(dsn)
        grant(dsn, self.ROLE)
        psql(dsn, "REVOKE UPDATE (mfa_secret) ON public.users FROM %s" % self.ROLE)
        before = snapshot(dsn)
        km = Keymig(self, self.config, as_role(dsn, self.ROLE), self.fx.secrets)
        r = km.run("migrate", "--json", expect=EXIT_USAGE)
        self.assertIn("lacks UPDATE on column mfa_secret of public.users", r.stderr)
        # Refused before anything was made: no run, not even keymig's tables (the script
        # made the empty schema).
        self.assertEqual(scalar(dsn, "SELECT to_regclass('keymig.runs') IS NULL"), "t")
        some = self.fx.by_kind("active")[0].username
        r = km.run("reset-mfa", "--usernames", some, "--yes", expect=EXIT_USAGE)
        self.assertIn("lacks UPDATE on column mfa_secret", r.stderr)
        # Reading still works: scan needs SELECT alone.
        km.run("scan", "--json", expect=EXIT_OK)
        km.run("migrate", "--dry-run", "--json", expect=EXIT_OK)
        self.assertEqual(snapshot(dsn), before)


if __name__ == "__main__":
    unittest.main()
