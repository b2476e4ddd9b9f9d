"""Non-default targets: a schema-qualified, mixed-case table whose names need quoting, uuid
ids, a bytea secret column and no flag column; text ids; an id column that is not unique.
"""

import unittest
import uuid

from keymig_testlib import (EXIT_OK, EXIT_UNDECRYPTABLE, EXIT_USAGE, DbTestCase, Keymig, KeySet,
                            UserFixture, copy_in, decrypt_with, drop_db, make_token, new_db,
                            psql, query, snapshot, totp_secret, write_config)

QUOTED_DDL = """
CREATE SCHEMA "KeyMig Tenant";
CREATE TABLE "KeyMig Tenant"."Mfa Users" (
  "User Id" uuid PRIMARY KEY,
  "Login" text NOT NULL,
  "Secret" bytea
);
CREATE TABLE public."mfa users" (id int PRIMARY KEY, "Secret" bytea);
"""


class TargetsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": 1500, "active": 100, "empty": 60,
                                        "unknown_key": 15}, seed=61)
        cls.dsn = new_db("kmt_targets")

    @classmethod
    def tearDownClass(cls):
        drop_db("kmt_targets")
        super().tearDownClass()

    def test_quoted_schema_table_uuid_ids_bytea_secret_no_flag(self):
        psql(self.dsn, QUOTED_DDL)
        ids = {}
        rows = []
        for row in self.fx.rows:
            uid = str(uuid.UUID(int=self.fx.rng.getrandbits(128)))
            ids[uid] = row
            rows.append((uid, row.username, None if row.token is None
                         else row.token.encode()))
        copy_in(self.dsn, '"KeyMig Tenant"."Mfa Users"', '"User Id", "Login", "Secret"', rows)
        # A decoy with a similar, lower-case name: an unquoted identifier would hit it.
        decoy = make_token(self.keys.rolling[0], totp_secret(self.fx.rng), 1_600_000_000)
        self.fx.secrets.add(decoy)
        copy_in(self.dsn, 'public."mfa users"', 'id, "Secret"', [(1, decoy.encode())])

        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="quoted.yaml",
                              target={"table": "KeyMig Tenant.Mfa Users", "idColumn": "User Id",
                                      "secretColumn": "Secret", "activeFlagColumn": "",
                                      "usernameColumn": "Login", "sysAdminColumns": []})
        km = Keymig(self, config, self.dsn, self.fx.secrets)
        s = km.run("migrate", "--json", "--batch-size", "128", expect=EXIT_UNDECRYPTABLE).json
        n_rolling = len(self.fx.by_kind("rolling"))
        self.assert_summary(s, rows_scanned=len(self.fx.rows), rotated=n_rolling,
                            already_active=len(self.fx.by_kind("active")), flag_fixed=0,
                            empty=len(self.fx.by_kind("empty")),
                            undecryptable=len(self.fx.by_kind("bad:")), conflicts=0)
        self.assertEqual({e["id"] for e in s["undecryptable_rows"]},
                         {u for u, r in ids.items() if r.kind.startswith("bad:")})

        now = {u: (None if t is None else t) for u, t in query(
            self.dsn, 'SELECT "User Id"::text, convert_from("Secret", \'UTF8\') '
            'FROM "KeyMig Tenant"."Mfa Users"')}
        for uid, row in ids.items():
            if row.kind.startswith("rolling"):
                self.assert_rotated(self.keys, row, now[uid])
            else:
                self.assertEqual(now[uid], row.token, "row %s (%s) changed" % (uid, row.kind))
        self.assertEqual(query(self.dsn, 'SELECT convert_from("Secret", \'UTF8\') '
                               'FROM public."mfa users"'), [(decoy,)], "the decoy table moved")

        # Selecting users by the custom username column works too, and finds nothing left.
        some = [r.username for r in self.fx.by_kind("rolling")[:3]]
        s = km.run("migrate", "--json", "--usernames", ",".join(some), expect=EXIT_OK).json
        self.assertEqual((s["rows_scanned"], s["rotated"], s["already_active"]), (3, 0, 3))
        km.run("verify", "--json", expect=EXIT_UNDECRYPTABLE)

    def test_text_ids_in_keyset_order(self):
        psql(self.dsn, "CREATE TABLE public.accounts (name text PRIMARY KEY, totp text, "
             "totp_ok boolean)")
        # Ids whose text order differs from any numeric order, mixed case, and a few that
        # share long prefixes: keyset paging must still visit each exactly once.
        rows, expected = [], {}
        for i in range(2500):
            name = ["u%d" % i, "U%d" % i, "user-%05d" % (i * 7 % 2500), "a" * (i % 50) + str(i)][i % 4]
            if name in expected:
                continue
            plain = totp_secret(self.fx.rng)
            ts = 1_550_000_000 + i
            token = make_token(self.keys.rolling[0], plain, ts)
            self.fx.secrets.add(token, plain)
            expected[name] = (plain, ts)
            rows.append((name, token, False))
        copy_in(self.dsn, "public.accounts", "name, totp, totp_ok", rows)
        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="text.yaml",
                              target={"table": "public.accounts", "idColumn": "name",
                                      "secretColumn": "totp", "activeFlagColumn": "totp_ok",
                                      "usernameColumn": "name", "sysAdminColumns": []})
        km = Keymig(self, config, self.dsn, self.fx.secrets)
        s = km.run("migrate", "--json", "--batch-size", "97", "--threads", "2",
                   expect=EXIT_OK).json
        self.assert_summary(s, rows_scanned=len(expected), rotated=len(expected), conflicts=0)
        for name, token, flag in query(self.dsn, "SELECT name, totp, totp_ok::text FROM public.accounts"):
            self.assertEqual(decrypt_with(self.keys.active, token), expected[name], name)
            self.assertEqual(flag, "true", name)
        chosen = sorted(expected)[::800][:3]
        s = km.run("migrate", "--json", "--ids", ",".join(chosen), expect=EXIT_OK).json
        self.assertEqual((s["rows_scanned"], s["already_active"]), (3, 3))

    def test_an_id_column_that_is_not_unique_is_refused(self):
        psql(self.dsn, "CREATE TABLE public.dupes (uid int, secret text, active boolean)")
        token = make_token(self.keys.rolling[0], totp_secret(self.fx.rng), 1_600_000_000)
        self.fx.secrets.add(token)
        copy_in(self.dsn, "public.dupes", "uid, secret, active", [(1, token, False), (1, token, False)])
        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="dupes.yaml",
                              target={"table": "dupes", "idColumn": "uid",
                                      "secretColumn": "secret", "activeFlagColumn": "active",
                                      "usernameColumn": "", "sysAdminColumns": []})
        km = Keymig(self, config, self.dsn, self.fx.secrets)
        before = snapshot(self.dsn, "public.dupes", "uid")
        r = km.run("migrate", "--json", expect=EXIT_USAGE)
        self.assertIn("uid", r.stderr, "the error should name the id column")
        self.assertEqual(snapshot(self.dsn, "public.dupes", "uid"), before)


if __name__ == "__main__":
    unittest.main()
