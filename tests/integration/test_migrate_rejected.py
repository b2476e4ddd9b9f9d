"""Rows the database refuses do not stop the rotation.

Three causes, one table each: a CHECK constraint (added NOT VALID, so that it judges only
new values) that refuses two users, a BEFORE UPDATE trigger that raises for one user and
quotes the new token in its message, and a varchar column too short for the padded form
of one user's unpadded token. keymig splits the failing batch until the refused rows
stand alone, writes the rest, reports the refused ids with the database's reason (never
a token), counts them, and exits 4: those rows keep their old token, which the rolling key
still reads, so verify and finalize do not call the rolling key retirable.
"""

import random
import unittest

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, USERS_COLUMNS, USERS_DDL, DbTestCase,
                            Keymig, KeySet, Row, Secrets, UserFixture, _brief, copy_in,
                            current_secrets, decrypt_with, drop_db, make_token, new_db, psql,
                            totp_secret, write_config)


class ManualFixture:
    """Rolling-key rows with 10-character plaintexts (100-character tokens), except
    `long_id`, whose 120-character token is stored without its '=' padding (119)."""

    def __init__(self, keys, n, long_id):
        rng = random.Random(77)
        self.rows, self.secrets = [], Secrets()
        for k in [keys.active] + keys.rolling + [keys.unknown]:
            self.secrets.add_key(k)
        for rid in range(1, n + 1):
            plain = totp_secret(rng, short=True)  # 16 characters: a 120-character token
            if rid != long_id:
                plain = plain[:10]  # under one AES block: a 100-character token
            ts = rng.randrange(1_500_000_000, 1_700_000_000)
            token = make_token(keys.rolling[0], plain, ts)
            if rid == long_id:
                token = token.rstrip("=")
            self.secrets.add(token, plain)
            self.rows.append(Row(rid, "user%06d" % rid, token, False, plain, ts, "rolling0"))

    def by_kind(self, prefix):
        return [r for r in self.rows if r.kind.startswith(prefix)]

    def load(self, dsn, ddl):
        psql(dsn, ddl)
        copy_in(dsn, "public.users", USERS_COLUMNS, [r.copy_tuple() for r in self.rows])


class RejectedRowsTest(DbTestCase):

    def setUp(self):
        self.keys = KeySet(rolling=1)
        self.config = write_config(self.tmp, self.keys.active, self.keys.rolling)

    def check_case(self, dbname, fx, refused, sqlstate, after_load="", ddl=USERS_DDL):
        dsn = new_db(dbname)
        self.addCleanup(drop_db, dbname)
        fx.load(dsn, ddl)
        if after_load:
            psql(dsn, after_load)
        km = Keymig(self, self.config, dsn, fx.secrets)
        rolling = fx.by_kind("rolling")

        s = km.run("migrate", "--json", "--batch-size", "50", "--threads", "2",
                   expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(s["rejected"], len(refused), _brief(s))
        self.assertEqual(sorted(int(r["id"]) for r in s["rejected_rows"]), sorted(refused))
        for r in s["rejected_rows"]:
            self.assertTrue(r["reason"].startswith("SQLSTATE %s: " % sqlstate), r)
        self.assertEqual(s["rotated"], len(rolling) - len(refused), _brief(s))
        self.assertEqual(s["conflicts"], 0, _brief(s))
        self.assertEqual(s["run_totals"]["rejected"], len(refused), s["run_totals"])
        self.assertEqual(s["run_totals"]["rotated"], len(rolling) - len(refused))
        self.assertEqual(s["state"], "completed", _brief(s))

        now = current_secrets(dsn)
        for row in rolling:
            token, _ = now[row.id]
            if row.id in refused:
                self.assertEqual(token, row.token, "refused row %d must keep its token" % row.id)
                padded = token + "=" * (-len(token) % 4)
                self.assertEqual(decrypt_with(self.keys.rolling[0], padded),
                                 (row.plaintext, row.timestamp))
            else:
                self.assert_rotated(self.keys, row, token)

        # The same again: the refused rows are refused again, nothing else to do.
        again = km.run("migrate", "--json", "--batch-size", "50",
                       expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(again["rejected"], len(refused), _brief(again))
        self.assertEqual(again["rotated"], 0, _brief(again))

        v = km.run("verify", "--json", expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(v["needs_rolling"], len(refused), _brief(v))
        f = km.run("finalize", "--json", "--run", s["run_id"], expect=EXIT_NEEDS_ROLLING).json
        self.assertFalse(f["rolling_key_retirable"], _brief(f))
        self.assertFalse(f["finalized"], _brief(f))

    def test_a_check_constraint_refuses_two_users(self):
        fx = UserFixture(self.keys, {"rolling0": 400, "active": 50, "empty": 50}, seed=41)
        ids = [r.id for r in fx.by_kind("rolling")]
        refused = [ids[17], ids[230]]
        self.check_case("kmt_rejected_check", fx, refused, "23514",
                        "ALTER TABLE public.users ADD CONSTRAINT frozen_users"
                        " CHECK (id NOT IN (%d, %d)) NOT VALID" % tuple(refused))

    def test_a_trigger_raises_for_one_user(self):
        fx = UserFixture(self.keys, {"rolling0": 400, "active": 50, "empty": 50}, seed=42)
        refused = [fx.by_kind("rolling")[123].id]
        # The message quotes the new token: keymig must not repeat it.
        self.check_case("kmt_rejected_trigger", fx, refused, "P0001", """
            CREATE FUNCTION public.locked_user() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.id = {id} THEN
                RAISE EXCEPTION 'user % is locked, refusing %', NEW.id, NEW.mfa_secret;
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER locked_user BEFORE UPDATE ON public.users
              FOR EACH ROW EXECUTE FUNCTION public.locked_user();""".replace(
            "{id}", str(refused[0])))

    def test_a_varchar_too_short_for_one_padded_token(self):
        fx = ManualFixture(self.keys, 300, long_id=150)
        self.check_case("kmt_rejected_varchar", fx, [150], "22001",
                        ddl=USERS_DDL.replace("mfa_secret text", "mfa_secret varchar(119)"))


if __name__ == "__main__":
    unittest.main()
