"""Targets that are not plain tables, and tokens encrypted twice (issue 16, "Bad rows and
bad targets").

A view, a materialized view, a foreign table, a nullable id and a schema keymig's role may
not use are each refused before anything is written, with an error that names the table
and what to do. A partitioned table is migrated in every partition. A token whose
plaintext is itself a Fernet token is its own class in scan, verify and status (a count
and ids, never the token) and is still rotated by its outer layer.
"""

import unittest
import urllib.parse

from keymig_testlib import (EXIT_OK, EXIT_USAGE, DbTestCase, Keymig, KeySet, UserFixture,
                            decrypt_with, drop_db, make_token, new_db, new_key, psql, query,
                            snapshot, totp_secret, write_config)

ROLE = "kmt_bad_targets_app"


def target(table, id_column="id"):
    return {"table": table, "idColumn": id_column, "secretColumn": "mfa_secret",
            "activeFlagColumn": "mfa_fernet_active", "usernameColumn": "",
            "sysAdminColumns": []}


class BadTargetsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 300, "active": 40, "empty": 20}, seed=16)
        cls.dbname = "kmt_bad_targets"
        cls.dsn = new_db(cls.dbname)
        cls.fx.load(cls.dsn)

    @classmethod
    def tearDownClass(cls):
        drop_db(cls.dbname)
        super().tearDownClass()

    def keymig(self, table, id_column="id", dsn=None):
        config = write_config(self.tmp, self.keys.active, self.keys.rolling,
                              name=table.replace(".", "_") + ".yaml",
                              target=target(table, id_column))
        return Keymig(self, config, dsn or self.dsn, self.fx.secrets)

    def assert_refused(self, km, table_sql, id_column, *words):
        before = snapshot(self.dsn)
        before_target = snapshot(self.dsn, table_sql, id_column)
        for command in ("scan", "verify", "migrate"):
            r = km.run(command, "--json")
            self.assertEqual(r.returncode, EXIT_USAGE, r.describe())
            self.assertIn("nothing was changed", r.stderr)
            for word in words:
                self.assertIn(word, r.stderr, r.describe())
        self.assertTrue(snapshot(self.dsn) == before, "users changed")
        self.assertTrue(snapshot(self.dsn, table_sql, id_column) == before_target,
                        "the target changed")

    def test_an_updatable_view_is_refused_naming_the_table_under_it(self):
        psql(self.dsn, "CREATE VIEW public.users_view AS SELECT * FROM public.users")
        self.assert_refused(self.keymig("public.users_view"), "public.users_view", "id",
                            "public.users_view is a view", "Name the table under the view",
                            "it reads public.users")

    def test_a_view_that_cannot_be_updated_is_refused(self):
        psql(self.dsn, "CREATE VIEW public.users_agg AS SELECT id, max(mfa_secret) AS mfa_secret,"
             " bool_or(mfa_fernet_active) AS mfa_fernet_active FROM public.users GROUP BY id")
        self.assert_refused(self.keymig("users_agg"), "public.users_agg", "id",
                            "public.users_agg is a view", "it reads public.users")

    def test_a_materialized_view_is_refused(self):
        psql(self.dsn, "CREATE MATERIALIZED VIEW public.users_copy AS SELECT * FROM public.users")
        self.assert_refused(self.keymig("public.users_copy"), "public.users_copy", "id",
                            "public.users_copy is a materialized view", "REFRESH")

    def test_a_foreign_table_is_refused(self):
        psql(self.dsn, "CREATE EXTENSION IF NOT EXISTS file_fdw;"
             "CREATE SERVER kmt_files FOREIGN DATA WRAPPER file_fdw;"
             "CREATE FOREIGN TABLE public.users_far (id int NOT NULL, mfa_secret text,"
             " mfa_fernet_active boolean) SERVER kmt_files OPTIONS (filename '/dev/null')")
        self.assert_refused(self.keymig("public.users_far"), "public.users_far", "id",
                            "public.users_far is a foreign table", "another server")

    def test_a_unique_index_on_a_nullable_id_is_refused(self):
        psql(self.dsn, "CREATE TABLE public.loose (id int, mfa_secret text,"
             " mfa_fernet_active boolean); CREATE UNIQUE INDEX ON public.loose (id);"
             "INSERT INTO public.loose SELECT id, mfa_secret, mfa_fernet_active FROM public.users;"
             "INSERT INTO public.loose SELECT NULL, mfa_secret, false FROM public.users"
             " WHERE mfa_secret <> '' LIMIT 3")
        before = query(self.dsn, "SELECT id::text, mfa_secret FROM public.loose ORDER BY 1, 2")
        self.assert_refused(self.keymig("public.loose"), "public.loose", "id",
                            "public.loose allows NULL",
                            'ALTER TABLE "public"."loose" ALTER COLUMN "id" SET NOT NULL')
        self.assertEqual(query(self.dsn, "SELECT id::text, mfa_secret FROM public.loose"
                               " ORDER BY 1, 2"), before)

    def test_a_schema_the_role_may_not_use_is_a_target_error(self):
        psql(self.dsn, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s')"
             " THEN CREATE ROLE %s LOGIN; END IF; END $$" % (ROLE, ROLE))
        psql(self.dsn, "CREATE SCHEMA hidden; CREATE TABLE hidden.users (LIKE public.users"
             " INCLUDING ALL); INSERT INTO hidden.users SELECT * FROM public.users;"
             "GRANT SELECT, UPDATE ON hidden.users TO %s" % ROLE)
        parts = urllib.parse.urlsplit(self.dsn)
        as_role = urllib.parse.urlunsplit(parts._replace(
            query=(parts.query + "&" if parts.query else "") + "user=" + ROLE))
        km = self.keymig("hidden.users", dsn=as_role)
        for command in ("scan", "verify"):
            r = km.run(command, "--json")
            self.assertEqual(r.returncode, EXIT_USAGE, r.describe())
            self.assertIn("USAGE on schema hidden", r.stderr)
            self.assertIn("nothing was written", r.stderr)

    def test_a_partitioned_table_is_migrated_in_every_partition(self):
        psql(self.dsn, """
            CREATE TABLE public.parted (id int PRIMARY KEY, mfa_secret text,
                                        mfa_fernet_active boolean) PARTITION BY RANGE (id);
            CREATE TABLE public.parted_low PARTITION OF public.parted FOR VALUES FROM (MINVALUE) TO (100);
            CREATE TABLE public.parted_mid PARTITION OF public.parted FOR VALUES FROM (100) TO (250);
            CREATE TABLE public.parted_high PARTITION OF public.parted FOR VALUES FROM (250) TO (MAXVALUE);
            INSERT INTO public.parted SELECT id, mfa_secret, mfa_fernet_active FROM public.users""")
        km = self.keymig("public.parted")
        s = km.run("migrate", "--json", "--batch-size", "37", expect=EXIT_OK).json
        n_rolling = len(self.fx.by_kind("rolling"))
        self.assert_summary(s, rows_scanned=len(self.fx.rows), rotated=n_rolling,
                            already_active=len(self.fx.by_kind("active")), undecryptable=0,
                            conflicts=0)
        by_id = {r.id: r for r in self.fx.rows}
        seen = {}
        for part in ("parted_low", "parted_mid", "parted_high"):
            rows = query(self.dsn, "SELECT id, mfa_secret, mfa_fernet_active::text FROM public."
                         + part)
            self.assertTrue(rows, part + " is empty: the fixture should fill every partition")
            for rid, token, flag in rows:
                row = by_id[int(rid)]
                seen[row.id] = part
                if row.kind == "empty":
                    self.assertEqual(token or None, row.token or None)
                    continue
                self.assert_rotated(self.keys, row, token, "in " + part)
                self.assertEqual(flag, "true", "row %s in %s" % (rid, part))
        self.assertEqual(set(seen), set(by_id))
        km.run("verify", "--json", expect=EXIT_OK)

    def test_scan_warns_when_a_varchar_secret_column_is_shorter_than_what_migrate_writes(self):
        # Short secrets make 120-character tokens ending in one '='; stored without it they
        # fit a varchar(119), but migrate writes the canonical 120.
        rows, plain = [], {}
        for i in range(1, 9):
            secret = totp_secret(self.fx.rng, short=True)
            token = make_token(self.keys.rolling[0], secret, 1_600_000_000 + i)
            self.assertEqual(len(token), 120)
            self.fx.secrets.add(token, token.rstrip("="))
            plain[i] = secret
            rows.append("(%d, '%s', false)" % (i, token.rstrip("=")))
        psql(self.dsn, "CREATE TABLE public.narrow (id int PRIMARY KEY, mfa_secret varchar(119),"
             " mfa_fernet_active boolean); INSERT INTO public.narrow VALUES " + ",".join(rows))
        km = self.keymig("public.narrow")
        s = km.run("scan", "--json", expect=EXIT_OK).json
        self.assertEqual((s["secret_column_chars"], s["longest_token_chars"]), (119, 120))
        self.assertEqual(len(s["warnings"]), 1, s["warnings"])
        self.assertIn("varchar(119)", s["warnings"][0])
        self.assertIn("widen the column", s["warnings"][0])
        self.assertIn("warning: secret column public.narrow.mfa_secret is varchar(119)",
                      km.run("scan", expect=EXIT_OK).stdout)
        # What the warning foretold: the rows are refused one by one and keep their text.
        before = snapshot(self.dsn, "public.narrow")
        m = km.run("migrate", "--json").json
        self.assertEqual(m["rejected"], 8)
        self.assertTrue(snapshot(self.dsn, "public.narrow") == before)
        # Wide enough for the canonical text: no warning.
        psql(self.dsn, "ALTER TABLE public.narrow ALTER COLUMN mfa_secret TYPE varchar(120)")
        s = km.run("scan", "--json", expect=EXIT_OK).json
        self.assertEqual((s["secret_column_chars"], s["warnings"]), (120, []))
        km.run("migrate", "--json", expect=EXIT_OK)
        for rid, token in query(self.dsn, "SELECT id, mfa_secret FROM public.narrow"):
            self.assertEqual(decrypt_with(self.keys.active, token)[0], plain[int(rid)])


class DoubleEncryptedTest(DbTestCase):
    """Rows whose plaintext is a Fernet token (a field library that encrypted twice): under
    the rolling key, under the active key, and under a key the inner layer alone knows."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 200, "active": 40, "empty": 10}, seed=61)
        cls.dbname = "kmt_double"
        cls.dsn = new_db(cls.dbname)
        cls.fx.load(cls.dsn)
        inner_key = new_key()
        cls.fx.secrets.add_key(inner_key)
        cls.double = {}  # id -> (outer key, inner token)
        candidates = cls.fx.by_kind("rolling")[:12] + cls.fx.by_kind("active")[:6]
        for i, row in enumerate(candidates):
            # Inner layers under the outer key itself, as a library encrypting twice with the
            # same key does, and under another key.
            outer = cls.keys.rolling[0] if row.kind.startswith("rolling") else cls.keys.active
            inner = make_token(outer if i % 2 else inner_key, row.plaintext, row.timestamp)
            token = make_token(outer, inner, row.timestamp)
            cls.fx.secrets.add(inner, token)
            cls.double[row.id] = (outer, inner)
            psql(cls.dsn, "UPDATE public.users SET mfa_secret = '%s' WHERE id = %d"
                 % (token, row.id))
        # A plaintext that starts like a token but is not one is not counted.
        decoy = cls.fx.by_kind("rolling")[20]
        decoy_token = make_token(cls.keys.rolling[0], "gAAAAAnot-a-token", decoy.timestamp)
        cls.fx.secrets.add(decoy_token)
        psql(cls.dsn, "UPDATE public.users SET mfa_secret = '%s' WHERE id = %d"
             % (decoy_token, decoy.id))
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    @classmethod
    def tearDownClass(cls):
        drop_db(cls.dbname)
        super().tearDownClass()

    def ids(self, values):
        return sorted(str(v) for v in values)

    def test_scan_verify_status_report_them_and_migrate_rotates_the_outer_layer(self):
        km = Keymig(self, self.config, self.dsn, self.fx.secrets)
        want = self.ids(self.double)

        s = km.run("scan", "--json", expect=EXIT_OK).json
        self.assertEqual(s["double_encrypted"], len(want))
        self.assertEqual(self.ids(s["double_encrypted_rows"]), want)
        self.assertEqual(s["undecryptable"], 0, "they stay in their key's class")
        text = km.run("scan", expect=EXIT_OK).stdout
        self.assertIn("double-encrypted (the plaintext is itself a token): %d" % len(want), text)

        st = km.run("status", "--json", expect=EXIT_OK).json
        self.assertEqual(st["double_encrypted"], len(want))
        self.assertEqual(self.ids(st["double_encrypted_ids"]), want)

        v = km.run("verify", "--json").json
        self.assertEqual(v["double_encrypted"], len(want))
        self.assertEqual(self.ids(v["double_encrypted_rows"]), want)

        m = km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(m["undecryptable"], 0)
        now = {int(i): t for i, t in query(self.dsn, "SELECT id, mfa_secret FROM public.users")}
        for rid, (outer, inner) in self.double.items():
            got = decrypt_with(self.keys.active, now[rid])
            self.assertIsNotNone(got, "row %d not under the active key" % rid)
            self.assertEqual(got[0], inner, "row %d: the outer layer's plaintext changed" % rid)

        v = km.run("verify", "--json", expect=EXIT_OK).json
        self.assertEqual((v["ok"], v["double_encrypted"]),
                         (len(self.fx.rows) - len(self.fx.by_kind("empty")), len(want)))
        self.assertEqual(self.ids(v["double_encrypted_rows"]), want)
        st = km.run("status", "--json", expect=EXIT_OK).json
        self.assertEqual(st["double_encrypted"], len(want))


if __name__ == "__main__":
    unittest.main()
