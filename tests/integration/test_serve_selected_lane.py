"""A selected-user request does not wait behind a whole-table run: while serve's
scheduled migrate works through 20,000 rows (throttled so that it lasts about eight
seconds), a migrate request for three usernames is done in well under three seconds (one
waited 23.7 s before), beside the run, and both leave every row rotated once. Fixtures are
made by Python's `cryptography`, which also judges the rows."""

import time
import unittest

from keymig_testlib import (DbTestCase, KeySet, UserFixture, current_secrets, enqueue,
                            journal_count, journal_of, new_db, running_run_id, scalar,
                            start_serve, wait_request, wait_until, write_config)


class ServeSelectedLaneTest(DbTestCase):
    def test_a_usernames_request_is_served_during_a_scheduled_whole_table_run(self):
        dsn = new_db("h5_serve_selected_lane")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"rolling0": 20000, "active": 10})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling,
                              migration={"batchSize": 250, "maxRowsPerSecond": 2500,
                                         "schedule": {"every": "24h"}})
        serve = start_serve(self, config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])
        scheduled = wait_until(lambda: journal_count(dsn) > 0 and running_run_id(dsn), 30)
        self.assertTrue(scheduled, serve.stderr()[-2000:])

        # Users near the end of the table, which the scheduled run reaches last.
        users = sorted(fx.by_kind("rolling"), key=lambda r: r.id)[-3:]
        start = time.monotonic()
        rid = enqueue(dsn, "migrate", {"usernames": [u.username for u in users]})
        state, result, _ = wait_request(dsn, rid, timeout=60)
        took = time.monotonic() - start
        print("\nselected request beside a scheduled run: %.2f s" % took)
        self.assertEqual(state, "done", result)
        self.assertLess(took, 3.0, "waited for the scheduled run")
        self.assertEqual(result["rotated"], 3, result)
        # The scheduled run was still going when the request was done.
        self.assertEqual(scalar(dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'"
                                % scheduled), "running", serve.stderr()[-2000:])
        lanes = {e["lane"] for e in serve.events("request_claimed")}
        self.assertEqual(lanes, {"selected"})

        # Both runs complete; each row was rotated by one of them, once.
        self.assertTrue(wait_until(lambda: scalar(
            dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'" % scheduled)
            == "completed", 60), serve.stderr()[-2000:])
        # the three users in the request's run, every other rolling row in the scheduled
        # one, each journaled once with its original token.
        selected_run = result["run_id"]
        now = current_secrets(dsn)
        journals = {run: journal_of(dsn, run) for run in (scheduled, selected_run)}
        chosen = {u.id for u in users}
        for row in fx.rows:
            token, flag = now[row.id]
            if not row.kind.startswith("rolling"):
                self.assertEqual(token, row.token, "row %d changed" % row.id)
                continue
            self.assert_rotated(keys, row, token)
            self.assertTrue(flag, "row %d: flag" % row.id)
            mine = selected_run if row.id in chosen else scheduled
            other = scheduled if mine == selected_run else selected_run
            self.assertEqual(journals[mine].get(str(row.id)), [(row.token, token)],
                             "row %d journal" % row.id)
            self.assertNotIn(str(row.id), journals[other], "row %d journaled twice" % row.id)


if __name__ == "__main__":
    unittest.main()
