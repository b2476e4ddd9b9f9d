"""The admin UI's request kinds beyond migrate, verify and reset_mfa: `rollback` undoes a
"Remove MFA" (a reset_mfa run) and nothing else, `finalize` deletes a run's journal as
`keymig finalize --run` does, `status` returns what `keymig status --json` prints; and
every request's `requested_by` and `reason` reach its result, serve's log and /status,
scrubbed. Fixtures are made by Python's `cryptography`; the secrets they hold are checked
against every output of keymig (serve's log included)."""

import json
import unittest

from keymig_testlib import (DbTestCase, Keymig, KeySet, UserFixture, http_get, new_db, psql,
                            query, scalar, start_serve, wait_request, write_config)


def enqueue_audited(dsn, kind, params=None, requested_by=None, reason=None,
                    target="public.users"):
    """As the admin UI queues a request: with who asked and why, and the NOTIFY."""
    def lit(value):
        return "NULL" if value is None else "'%s'" % value.replace("'", "''")
    p = "NULL" if params is None else lit(json.dumps(params)) + "::jsonb"
    out = psql(dsn, "BEGIN; INSERT INTO keymig.requests (kind, params, target, requested_by, "
               "reason) VALUES (%s, %s, %s, %s, %s) RETURNING id; NOTIFY keymig_requests; "
               "COMMIT" % (lit(kind), p, lit(target), lit(requested_by), lit(reason)))
    return int([l for l in out.splitlines() if l.strip().isdigit()][0])


def secrets_of(dsn):
    return {int(r[0]): (r[1], r[2]) for r in
            query(dsn, "SELECT id, mfa_secret, mfa_fernet_active::text FROM public.users")}


class ServeAdminKindsTest(DbTestCase):
    def test_rollback_finalize_and_status_requests_with_their_audit_trail(self):
        dsn = new_db("h5_serve_admin_kinds")
        keys = KeySet(rolling=1)
        fx = UserFixture(keys, {"active": 40, "rolling0": 30, "empty": 5})
        fx.load(dsn)
        config = write_config(self.tmp, keys.active, keys.rolling)
        serve = start_serve(self, config, dsn, fx.secrets, extra_args=["--poll-interval", "60"])
        before = secrets_of(dsn)

        # Remove MFA for two users, then undo it from the admin UI.
        victims = fx.by_kind("active")[:2]
        pasted = fx.by_kind("rolling")[0].token  # an admin pastes a secret into the reason
        rid = enqueue_audited(dsn, "reset_mfa", {"usernames": [u.username for u in victims]},
                              requested_by="admin:alice", reason="lost phone " + pasted)
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["request"]["requested_by"], "admin:alice")
        self.assertTrue(result["request"]["reason"].startswith("lost phone "), result)
        self.assertNotIn(pasted, json.dumps(result))
        reset_run = result["run_id"]
        for u in victims:
            self.assertIn(secrets_of(dsn)[u.id][0], (None, ""))

        rid = enqueue_audited(dsn, "rollback", {"run_id": reset_run},
                              requested_by="admin:bob", reason="reset by mistake")
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["restored"], 2, result)
        self.assertEqual(result["state"], "rolled_back", result)
        self.assertEqual(result["request"], {"id": rid, "requested_by": "admin:bob",
                                             "reason": "reset by mistake"})
        self.assertEqual(secrets_of(dsn), before)
        self.assertEqual(scalar(dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'"
                                % reset_run), "rolled_back")

        # A migrate run is the operator's to roll back, not the admin UI's.
        rid = enqueue_audited(dsn, "migrate", requested_by="admin:carol", reason="rotation")
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "done", result)
        migrate_run = result["run_id"]
        rotated = secrets_of(dsn)
        rid = enqueue_audited(dsn, "rollback", {"run_id": migrate_run})
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "failed", result)
        self.assertEqual(result["exit_code"], 2, result)
        self.assertIn("reset_mfa runs only", result["error"])
        self.assertEqual(result["request"]["requested_by"], "")
        self.assertEqual(secrets_of(dsn), rotated)

        # finalize: the run's journal goes, as with `keymig finalize --run`.
        rid = enqueue_audited(dsn, "finalize", requested_by="admin:carol", reason="verified")
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "failed", result)
        self.assertIn("needs params.run_id", result["error"])
        self.assertEqual(result["exit_code"], 2)
        self.assertGreater(int(scalar(dsn, "SELECT count(*) FROM keymig.journal WHERE "
                                      "run_id = '%s'" % migrate_run)), 0)
        rid = enqueue_audited(dsn, "finalize", {"run_id": migrate_run},
                              requested_by="admin:carol", reason="verified")
        state, result, _ = wait_request(dsn, rid)
        self.assertEqual(state, "done", result)
        self.assertTrue(result["finalized"], result)
        self.assertTrue(result["rolling_key_retirable"], result)
        self.assertEqual(result["request"]["reason"], "verified")
        self.assertIn("reason", result)  # finalize's own, beside the request's
        self.assertEqual(scalar(dsn, "SELECT count(*) FROM keymig.journal WHERE run_id = '%s'"
                                % migrate_run), "0")
        self.assertEqual(scalar(dsn, "SELECT state FROM keymig.runs WHERE run_id = '%s'"
                                % migrate_run), "finalized")

        # status: what `keymig status --json` prints, whole table and selected.
        cli = Keymig(self, config, dsn, fx.secrets)
        for params, args in ((None, []), ({"usernames": [victims[0].username]},
                                          ["--usernames", victims[0].username])):
            rid = enqueue_audited(dsn, "status", params, requested_by="admin:dave",
                                  reason="audit")
            state, result, _ = wait_request(dsn, rid)
            self.assertEqual(state, "done", result)
            expected = cli.run("status", "--json", *args, expect=0).json
            for field in ("seconds", "succeeded", "exit_code", "claimed_by", "request"):
                result.pop(field, None)
                expected.pop(field, None)
            self.assertEqual(result, expected)
        self.assertEqual(result["users_total"], 1, result)

        # A long reason is cut, even inside a multi-byte character, and still written.
        rid = enqueue_audited(dsn, "status", {"ids": [victims[0].id]},
                              requested_by="admin:erin", reason="\u20ac" * 100)
        state, result, _ = wait_request(dsn, rid, timeout=15)
        self.assertEqual(state, "done", result)
        self.assertTrue(result["request"]["reason"].startswith("\u20ac" * 66), result)
        self.assertTrue(result["request"]["reason"].endswith("..."), result)
        self.assertLess(len(result["request"]["reason"].encode()), 220)

        # The audit trail in serve's log and /status, scrubbed.
        claimed = serve.events("request_claimed")
        self.assertEqual([e["requested_by"] for e in claimed][:3],
                         ["admin:alice", "admin:bob", "admin:carol"])
        self.assertNotIn(pasted, serve.stderr())
        status = json.loads(http_get(serve.port, "/status")[1])
        self.assertEqual(status["last"]["status"]["request"]["requested_by"], "admin:erin")
        self.assertEqual(status["last"]["rollback"]["request"]["requested_by"], "")
        self.assertEqual(status["last"]["finalize"]["request"]["reason"], "verified")


if __name__ == "__main__":
    unittest.main()
