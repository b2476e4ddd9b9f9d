"""What the database stored, not what keymig sent: finalize never deletes the only readable
copy of a secret.

An application BEFORE UPDATE trigger rewrites one row in ten to a value no key reads.
migrate must see it (RETURNING the stored value), count those rows `rewritten`, list their
ids, keep their journal rows and exit 4; verify fails; finalize refuses (exit 4) and
deletes nothing; once the trigger is gone, rollback puts every original token back (pyca
reads each under the rolling key). And when the application itself writes unreadable
values into migrated rows later, finalize refuses too, but lets rows that were emptied,
deleted or re-encrypted under the active key go.
"""

import unittest

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, DbTestCase, Keymig, KeySet,
                            UserFixture, _brief, current_secrets, decrypt_with, drop_db,
                            journal_count, make_token, new_db, psql, totp_secret, write_config)

MANGLE = """
CREATE FUNCTION public.mangle_secret() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id % 10 = 0 AND NEW.mfa_secret IS DISTINCT FROM OLD.mfa_secret THEN
    NEW.mfa_secret := 'app:' || md5(NEW.mfa_secret);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER mangle_secret BEFORE UPDATE ON public.users
  FOR EACH ROW EXECUTE FUNCTION public.mangle_secret();
"""


class RewritingTriggerTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def fixture(self, dbname, rows, seed):
        fx = UserFixture(self.keys, {"rolling0": rows}, seed=seed, start_id=1)
        dsn = new_db(dbname)
        self.addCleanup(drop_db, dbname)
        fx.load(dsn)
        return fx, dsn, Keymig(self, self.config, dsn, fx.secrets)

    def test_a_trigger_rewrite_is_counted_and_finalize_keeps_the_journal(self):
        fx, dsn, km = self.fixture("kmt_rewritten", 1000, 51)
        psql(dsn, MANGLE)
        mangled = sorted(r.id for r in fx.rows if r.id % 10 == 0)

        s = km.run("migrate", "--json", "--batch-size", "100", "--threads", "2",
                   expect=EXIT_NEEDS_ROLLING).json
        run_id = s["run_id"]
        self.assertEqual(s["rewritten"], len(mangled), _brief(s))
        self.assertEqual(sorted(int(i) for i in s["rewritten_rows"]), mangled)
        self.assertEqual(s["rotated"], 1000 - len(mangled), _brief(s))
        self.assertEqual(s["conflicts"], 0, _brief(s))
        self.assertEqual(s["run_totals"]["rewritten"], len(mangled), s["run_totals"])
        self.assertEqual(journal_count(dsn, run_id), 1000, "every changed row is journaled")

        v = km.run("verify", "--json", "--run", run_id)
        self.assertNotEqual(v.returncode, EXIT_OK, v.describe())
        f = km.run("finalize", "--json", "--run", run_id, expect=EXIT_NEEDS_ROLLING).json
        self.assertFalse(f["finalized"], _brief(f))
        self.assertFalse(f["rolling_key_retirable"], _brief(f))
        self.assertEqual(journal_count(dsn, run_id), 1000, "finalize deleted journal rows")

        # The operator finds the trigger, drops it and rolls back: every secret readable.
        psql(dsn, "DROP TRIGGER mangle_secret ON public.users")
        r = km.run("rollback", "--json", "--run", run_id, expect=EXIT_OK).json
        self.assertEqual(r["restored"], 1000, _brief(r))
        now = current_secrets(dsn)
        for row in fx.rows:
            token, _ = now[row.id]
            self.assertEqual(token, row.token, "row %d not restored" % row.id)
            self.assertEqual(decrypt_with(self.keys.rolling[0], token),
                             (row.plaintext, row.timestamp))

    def test_finalize_refuses_while_journaled_rows_hold_unreadable_values(self):
        fx, dsn, km = self.fixture("kmt_changed_later", 300, 52)
        s = km.run("migrate", "--json", "--batch-size", "50", expect=EXIT_OK).json
        run_id = s["run_id"]
        ids = [r.id for r in fx.rows]
        garbage = ids[10:15]
        emptied, deleted, reencrypted = ids[20], ids[21], ids[22]
        psql(dsn, "UPDATE public.users SET mfa_secret = 'garbage-' || id WHERE id IN (%s)"
             % ",".join(map(str, garbage)))
        psql(dsn, "UPDATE public.users SET mfa_secret = NULL WHERE id = %d" % emptied)
        psql(dsn, "DELETE FROM public.users WHERE id = %d" % deleted)
        rng = __import__("random").Random(3)
        plain = totp_secret(rng)
        fresh = make_token(self.keys.active, plain, 1_650_000_000)
        fx.secrets.add(fresh, plain)
        psql(dsn, "UPDATE public.users SET mfa_secret = '%s' WHERE id = %d" % (fresh, reencrypted))

        f = km.run("finalize", "--json", "--run", run_id, expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(f["journal_unreadable"], len(garbage), _brief(f))
        self.assertEqual(sorted(int(i) for i in f["journal_unreadable_rows"]), garbage)
        self.assertIn("%d journaled rows" % len(garbage), f["reason"])
        self.assertIn("rollback", f["reason"])
        self.assertEqual(journal_count(dsn, run_id), 300, "finalize deleted journal rows")

        # Investigated: those users re-enrolled under the active key. Now it may go.
        for rid in garbage:
            p = totp_secret(rng)
            t = make_token(self.keys.active, p, 1_650_000_000)
            fx.secrets.add(t, p)
            psql(dsn, "UPDATE public.users SET mfa_secret = '%s' WHERE id = %d" % (t, rid))
        f = km.run("finalize", "--json", "--run", run_id, expect=EXIT_OK).json
        self.assertTrue(f["finalized"], _brief(f))
        self.assertEqual(journal_count(dsn, run_id), 0)


if __name__ == "__main__":
    unittest.main()
