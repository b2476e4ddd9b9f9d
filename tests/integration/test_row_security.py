"""Row-level security that hides rows from keymig's role (issue 20, item 3).

A policy that shows keymig's role half the table would make every pass see half: migrate
rotates that half, verify and finalize find nothing left and call the rolling key
retirable. Every command must refuse the table instead, naming it and the fix, before it
writes anything.
"""

import unittest
import urllib.parse

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_USAGE, DbTestCase, Keymig,
                            KeySet, UserFixture, drop_db, new_db, psql, scalar, snapshot,
                            write_config)

ROLE = "kmt_rls_app"


def as_role(dsn, role):
    parts = urllib.parse.urlsplit(dsn)
    query = (parts.query + "&" if parts.query else "") + "user=" + role
    return urllib.parse.urlunsplit(parts._replace(query=query))


class RowSecurityTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 400}, seed=33)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def setUp(self):
        self.dbname = "kmt_rls"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        psql(self.dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s')"
             " THEN CREATE ROLE %s LOGIN; END IF; END $$" % (ROLE, ROLE))
        psql(self.dsn, "ALTER ROLE %s NOSUPERUSER NOBYPASSRLS" % ROLE)
        psql(self.dsn, "GRANT CREATE ON DATABASE %s TO %s" % (self.dbname, ROLE))
        psql(self.dsn, "GRANT SELECT, UPDATE ON public.users TO %s" % ROLE)
        # The schema and a completed run, made by a role that sees every row: half the
        # rows (the ones the policy shows) moved, half still under the rolling key.
        self.admin = Keymig(self, self.config, self.dsn, self.fx.secrets)
        shown = [r.id for r in self.fx.rows if r.id % 2 == 0]
        self.run_id = self.admin.run("migrate", "--json", "--ids", ",".join(map(str, shown)),
                                     expect=EXIT_OK).json["run_id"]
        psql(self.dsn, "GRANT USAGE, CREATE ON SCHEMA keymig TO %s;"
             "GRANT ALL ON ALL TABLES IN SCHEMA keymig TO %s;"
             "GRANT ALL ON ALL SEQUENCES IN SCHEMA keymig TO %s" % (ROLE, ROLE, ROLE))
        psql(self.dsn, "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;"
             "CREATE POLICY half ON public.users USING (id % 2 = 0)")
        self.km = Keymig(self, self.config, as_role(self.dsn, ROLE), self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def assert_refused(self, result):
        self.assertEqual(result.returncode, EXIT_USAGE, result.describe())
        self.assertIn("row-level security", result.stderr)
        self.assertIn("public.users", result.stderr)
        self.assertIn("BYPASSRLS", result.stderr)

    def test_every_command_refuses_a_table_whose_policy_hides_rows(self):
        before = snapshot(self.dsn)
        runs = scalar(self.dsn, "SELECT count(*) FROM keymig.runs")
        for command in (["verify", "--json"], ["finalize", "--json", "--run", self.run_id],
                        ["scan", "--json"], ["migrate", "--json"],
                        ["rollback", "--json", "--run", self.run_id]):
            self.assert_refused(self.km.run(*command))
        self.assertTrue(snapshot(self.dsn) == before, "rows changed")
        self.assertEqual(scalar(self.dsn, "SELECT count(*) FROM keymig.runs"), runs)
        self.assertEqual(scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'"
                                % self.run_id), "completed")

    def test_bypassrls_sees_every_row(self):
        psql(self.dsn, "ALTER ROLE %s BYPASSRLS" % ROLE)
        try:
            verify = self.km.run("verify", "--json", expect=EXIT_NEEDS_ROLLING).json
            self.assertEqual(verify["needs_rolling"], 200)
        finally:
            psql(self.dsn, "ALTER ROLE %s NOBYPASSRLS" % ROLE)


if __name__ == "__main__":
    unittest.main()
