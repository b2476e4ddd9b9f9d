"""rollback, finalize and journal purge (docs/DESIGN.md sections 3 and 4)."""

import unittest

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, USERS_COLUMNS, DbTestCase, Keymig,
                            KeySet, UserFixture, copy_in, current_secrets, drop_db,
                            journal_count, make_token, new_db, psql, scalar, snapshot,
                            totp_secret, write_config)

COUNTS = {"empty": 60, "active": 100, "active_flag_false": 50, "rolling0": 2000, "rolling1": 500}


class RollbackFinalizeTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=2)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=51)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)
        cls.n = 0

    def setUp(self):
        type(self).n += 1
        self.dbname = "kmt_rollback_%d" % self.n
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def state(self, run_id):
        return scalar(self.dsn, "SELECT state FROM keymig.runs WHERE run_id::text = '%s'" % run_id)

    def test_rollback_restores_the_exact_old_tokens_but_not_over_newer_writes(self):
        before = snapshot(self.dsn)
        run = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        self.assertNotEqual(snapshot(self.dsn), before)

        # The application changes one rotated row after the run: rollback must keep it.
        changed = self.fx.by_kind("rolling0")[0]
        plain = totp_secret(self.fx.rng)
        newer = make_token(self.keys.active, plain, 1_650_000_000)
        self.fx.secrets.add(newer, plain)
        psql(self.dsn, "UPDATE public.users SET mfa_secret = '%s' WHERE id = %d" % (newer, changed.id))

        self.km.run("rollback", "--json", "--run", run, expect=EXIT_OK)
        after = snapshot(self.dsn)
        for rid, row in before.items():
            if rid == str(changed.id):
                self.assertEqual(after[rid][2], newer, "rollback overwrote a newer write")
            else:
                self.assertEqual(after[rid], row, "row %s not restored exactly" % rid)
        self.assertEqual(self.state(run), "rolled_back")

        # Rolling back twice changes nothing more.
        self.km.run("rollback", "--json", "--run", run, expect=EXIT_OK)
        self.assertEqual(snapshot(self.dsn), after)

    def test_finalize_refuses_while_rows_need_the_rolling_key(self):
        run = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        journaled = journal_count(self.dsn, run)
        # Flag fixes are journaled too (old_flag/new_flag), so that rollback can undo them.
        self.assertEqual(journaled, len(self.fx.by_kind("rolling")) +
                         len(self.fx.by_kind("active_flag_false")))

        # A node with stale config writes a new secret under the old key.
        plain = totp_secret(self.fx.rng)
        stale = make_token(self.keys.rolling[1], plain, 1_690_000_000)
        self.fx.secrets.add(stale, plain)
        copy_in(self.dsn, "public.users", USERS_COLUMNS, [(900_001, "late", stale, False, False, False)])

        r = self.km.run("finalize", "--json", "--run", run, expect=EXIT_NEEDS_ROLLING)
        self.assertEqual(journal_count(self.dsn, run), journaled, "finalize deleted the journal")
        self.assertNotEqual(self.state(run), "finalized")
        self.assertTrue(r.stdout.strip() or r.stderr.strip())

        second = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(second["rotated"], 1)
        self.km.run("finalize", "--json", "--run", run, expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn, run), 0, "finalize kept the journal")
        self.assertEqual(self.state(run), "finalized")
        self.km.run("finalize", "--json", "--run", second["run_id"], expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn), 0)

        # With the journal gone, a rollback cannot restore anything and must say so.
        before = snapshot(self.dsn)
        r = self.km.run("rollback", "--json", "--run", run)
        self.assertNotEqual(r.returncode, EXIT_OK, "rollback of a finalized run succeeded")
        self.assertEqual(snapshot(self.dsn), before)

    def test_journal_purge_deletes_only_old_journals(self):
        old = self.km.run("migrate", "--json", "--ids",
                          ",".join(str(r.id) for r in self.fx.by_kind("rolling")[:100]),
                          expect=EXIT_OK).json["run_id"]
        new = self.km.run("migrate", "--json", expect=EXIT_OK).json["run_id"]
        # A run's age is its last activity (keymig.runs timestamps), not the journal's.
        psql(self.dsn, "UPDATE keymig.runs SET started_at = now() - interval '41 days', "
             "updated_at = now() - interval '40 days', finished_at = now() - interval '40 days' "
             "WHERE run_id::text = '%s'" % old)
        self.km.run("journal purge", "--older-than", "30d", expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn, old), 0)
        self.assertEqual(journal_count(self.dsn, new), len(self.fx.by_kind("rolling")) - 100 +
                         len(self.fx.by_kind("active_flag_false")))
        tokens = current_secrets(self.dsn)
        for row in self.fx.by_kind("rolling"):
            self.assert_rotated(self.keys, row, tokens[row.id][0])


if __name__ == "__main__":
    unittest.main()
