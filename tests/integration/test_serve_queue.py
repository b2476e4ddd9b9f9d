"""keymig serve's request queue when more than one serve works one database: a live claim
is told by its backend, not its (cut) session name; each request names the table it is
for and only that table's serve takes it; a job cut short by a database outage is queued
again and resumed. Fixtures are made by Python's `cryptography`, which also judges every
rotated row."""

import time
import unittest

from keymig_testlib import (DbTestCase, KeySet, UserFixture, check_all_rotated, dsn_with_db,
                            enqueue, new_db, psql, query, request_row, running_run_id, scalar,
                            start_serve, wait_request, wait_until, write_config)

# Longer than PostgreSQL keeps of an application_name ("keymig-serve " + 50 bytes), and
# alike in their first 63 bytes, as two pods of one deployment on long host names are.
LONG_A = "keymig-serve-7f9c4d8b6-abcde.node-pool-1.eu-west-1.compute.internal:1:a1b2c3"
LONG_B = "keymig-serve-7f9c4d8b6-abcde.node-pool-1.eu-west-1.compute.internal:1:d4e5f6"


def journal_entries_per_row(dsn):
    return {int(r[0]): int(r[1]) for r in
            query(dsn, "SELECT row_id::text, count(*) FROM keymig.journal GROUP BY 1")}


class ServeLiveClaimTest(DbTestCase):
    def test_a_second_serve_with_a_long_instance_name_leaves_a_live_claim_alone(self):
        dsn = new_db("h5_serve_queue_live")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 200, "active": 20})
        fx.load(dsn)
        # About five seconds of work: long enough for a second serve to start meanwhile.
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"batchSize": 10, "maxRowsPerSecond": 40})
        first = start_serve(self, config, dsn, fx.secrets,
                            extra_args=["--instance", LONG_A, "--poll-interval", "60"])
        rid = enqueue(dsn, "migrate", target="public.users")
        self.assertTrue(wait_until(lambda: request_row(dsn, rid)[0] == "running", 10))

        second = start_serve(self, config, dsn, fx.secrets,
                             extra_args=["--instance", LONG_B, "--poll-interval", "60"])
        # The second serve's start-up drain has looked for stale claims and found the
        # target busy.
        self.assertTrue(wait_until(lambda: second.events("requests_deferred"), 15),
                        second.stderr()[-3000:])
        self.assertEqual(second.events("stale_requests_requeued"), [])
        self.assertEqual(scalar(dsn, "SELECT state || '|' || claimed_by FROM keymig.requests "
                                "WHERE id = %d" % rid), "running|" + LONG_A)

        state, result, _ = wait_request(dsn, rid, timeout=60)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["claimed_by"], LONG_A)
        self.assertEqual(second.events("request_claimed"), [])
        self.assertEqual(len(first.events("request_claimed")), 1)
        self.assertEqual(scalar(dsn, "SELECT count(*) FROM keymig.runs WHERE kind = 'migrate'"),
                         "1")
        check_all_rotated(self, dsn, keys, fx, result["run_id"])


class ServeTargetsTest(DbTestCase):
    def test_two_serves_on_two_tables_each_take_only_their_own_requests(self):
        dsn = new_db("h5_serve_queue_targets")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"active": 60, "rolling0": 20})
        fx.load(dsn)
        # A second table of the same users: a request run by the wrong serve resets the
        # same username in the wrong table.
        psql(dsn, "CREATE TABLE public.staff (LIKE public.users INCLUDING ALL); "
             "INSERT INTO public.staff SELECT * FROM public.users")
        users_config = write_config(self.tmp, keys.active, keys.rolling, name="users.yaml",
                                    target={"table": "users"})
        staff_config = write_config(self.tmp, keys.active, keys.rolling, name="staff.yaml",
                                    target={"table": "public.staff"})
        start_serve(self, users_config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])
        start_serve(self, staff_config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])

        active = fx.by_kind("active")
        for_users, for_staff = active[:10], active[10:20]
        # Spelled as an application might: the serves compare tables, not text.
        requests = []
        for u, s in zip(for_users, for_staff):
            requests.append((enqueue(dsn, "reset_mfa", {"usernames": [u.username]},
                                     target="users"), "public.users"))
            requests.append((enqueue(dsn, "reset_mfa", {"usernames": [s.username]},
                                     target="PUBLIC.staff"), "public.staff"))
        untargeted_victim = active[20]
        untargeted = enqueue(dsn, "reset_mfa", {"usernames": [untargeted_victim.username]},
                             target=None)

        for rid, table in requests:
            state, result, _ = wait_request(dsn, rid, timeout=60)
            self.assertEqual(state, "done", result)
            self.assertEqual(result["reset"], 1, result)
            self.assertTrue(result["target"].startswith(table + "."), result)
        state, result, _ = wait_request(dsn, untargeted, timeout=30)
        self.assertEqual(state, "failed", result)
        self.assertIn("names no target", result["error"])
        self.assertEqual(result["exit_code"], 2)

        for table, victims in (("public.users", for_users), ("public.staff", for_staff)):
            now = {int(r[0]): r[1] for r in query(dsn, "SELECT id, mfa_secret FROM " + table)}
            reset = {r for r, token in now.items() if token in (None, "")}
            expected = {r.id for r in victims} | {r.id for r in fx.by_kind("empty")}
            self.assertEqual(reset, expected, "%s: reset the wrong users" % table)
            self.assertEqual(now[untargeted_victim.id], untargeted_victim.token)


class ServeOutageTest(DbTestCase):
    def test_a_request_cut_short_by_an_outage_is_queued_again_and_resumed(self):
        name = "h5_serve_queue_outage"
        dsn = new_db(name)
        admin = dsn_with_db(dsn, "postgres")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 200, "active": 20})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"batchSize": 10, "maxRowsPerSecond": 40})
        serve = start_serve(self, config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])
        rid = enqueue(dsn, "migrate")
        self.assertTrue(wait_until(lambda: running_run_id(dsn) and int(scalar(
            dsn, "SELECT count(*) FROM keymig.journal")) > 0, 15))

        # The database goes away: no new session, and every session there is cut, until
        # the job has used up its retries.
        outage = time.monotonic()
        psql(admin, "ALTER DATABASE %s ALLOW_CONNECTIONS false" % name)
        try:
            def job_gave_up():
                psql(admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE datname = '%s'" % name)
                return serve.events("run_finished")
            self.assertTrue(wait_until(job_gave_up, 45, interval=0.2), serve.stderr()[-3000:])
        finally:
            psql(admin, "ALTER DATABASE %s ALLOW_CONNECTIONS true" % name)
        print("\noutage: %.1f s" % (time.monotonic() - outage))
        self.assertFalse(serve.events("run_finished")[0]["ok"])

        state, result, _ = wait_request(dsn, rid, timeout=45)
        self.assertEqual(state, "done", result)
        self.assertTrue(result["succeeded"], result)
        requeued = serve.events("request_requeued")
        self.assertEqual(len(requeued), 1, serve.stderr()[-3000:])
        self.assertIn("database unavailable", requeued[0]["error"])
        # Resumed, not repeated: every row rotated once, journaled once, readable by the
        # active key alone.
        self.assertEqual(journal_entries_per_row(dsn),
                         {r.id: 1 for r in fx.by_kind("rolling")})
        run_ids = [r[0] for r in query(dsn, "SELECT DISTINCT run_id::text FROM keymig.journal")]
        self.assertEqual(len(run_ids), 1, run_ids)
        check_all_rotated(self, dsn, keys, fx, run_ids[0])


if __name__ == "__main__":
    unittest.main()
