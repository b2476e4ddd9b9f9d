"""keymig serve over keyMigration.targets: a queued migrate covers every target, or those
params.targets names; a request naming any configured table is this serve's; finalize of a
run over several targets; /status names the targets. Fixtures are made by Python's
`cryptography`, which also judges every rotated row."""

import json
import unittest

from keymig_testlib import (DbTestCase, KeySet, UserFixture, copy_in, decrypt_with, enqueue,
                            http_get, make_serve_schema, make_token, new_db, psql, query,
                            start_serve, totp_secret, wait_request, write_config)

DEVICES_DDL = "CREATE TABLE public.devices (id int PRIMARY KEY, secret text, encrypted boolean)"


class ServeTargetsTest(DbTestCase):
    def setUp(self):
        self.dsn = new_db("h17_serve_targets")
        self.keys = KeySet(rolling=1)
        self.fx = UserFixture(self.keys, {"rolling0": 60, "active": 10, "empty": 5}, seed=17)
        self.fx.load(self.dsn)
        psql(self.dsn, DEVICES_DDL)
        self.devices = {}
        rows = []
        for i in range(1, 41):
            if i % 4 == 0:
                rows.append((i, "plain-%d" % i, False))  # not Fernet data: left alone
                continue
            plain = totp_secret(self.fx.rng)
            token = make_token(self.keys.rolling[0], plain, 1_600_000_000 + i)
            self.fx.secrets.add(token, plain)
            self.devices[i] = plain
            rows.append((i, token, True))
        copy_in(self.dsn, "public.devices", "id, secret, encrypted", rows)
        self.config = write_config(self.tmp, self.keys.active, self.keys.rolling, migration={
            "targets": [{"table": "users"},
                        {"table": "devices", "secretColumn": "secret", "activeFlagColumn": "",
                         "usernameColumn": "", "sysAdminColumns": [],
                         "onlyWhere": {"column": "encrypted", "equals": True}}]})
        make_serve_schema(self.config, self.dsn, self.fx.secrets)

    def device_rows(self):
        return {int(r[0]): r[1] for r in query(self.dsn, "SELECT id, secret FROM public.devices")}

    def user_tokens(self):
        return {int(r[0]): r[1] for r in query(self.dsn, "SELECT id, mfa_secret FROM public.users")}

    def check_devices_rotated(self):
        now = self.device_rows()
        for i, secret in now.items():
            if i % 4 == 0:
                self.assertEqual(secret, "plain-%d" % i, "plaintext row %d changed" % i)
            else:
                self.assertEqual(decrypt_with(self.keys.active, secret)[0], self.devices[i],
                                 "device %d" % i)

    def test_a_queued_migrate_covers_the_targets_it_names_then_all_and_finalize_clears_the_key(
            self):
        serve = start_serve(self, self.config, self.dsn, self.fx.secrets,
                            extra_args=["--poll-interval", "60"])
        status = json.loads(http_get(serve.port, "/status")[1])
        self.assertEqual(status["config"]["targets"], ["users", "devices"])

        users_before = self.user_tokens()
        # Named by its table, the second target's: this serve's request too.
        rid = enqueue(self.dsn, "migrate", {"targets": ["devices"]}, target="public.devices")
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "done", result)
        self.check_devices_rotated()
        self.assertEqual(self.user_tokens(), users_before, "users were not selected")
        self.assertEqual([t["name"] for t in result["targets"]], ["devices"])
        self.assertEqual(result["rotated"], 30)

        # A finalize of that run cannot clear the key: users still need it.
        fid = enqueue(self.dsn, "finalize", {"run_id": result["run_id"]})
        state, fresult, _ = wait_request(self.dsn, fid)
        self.assertEqual(state, "failed", fresult)
        self.assertEqual(fresult["targets_needing_rolling"], ["users"])
        self.assertFalse(fresult["rolling_key_retirable"])

        rid = enqueue(self.dsn, "migrate")
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "done", result)
        summary = result
        self.assertEqual([t["name"] for t in summary["targets"]], ["users", "devices"])
        self.assertEqual(summary["targets"][0]["rotated"], 60)
        self.assertEqual(summary["targets"][1]["rotated"], 0)
        for row in self.fx.rows:
            if row.kind.startswith("rolling"):
                self.assertEqual(decrypt_with(self.keys.active, self.user_tokens()[row.id])[0],
                                 row.plaintext)

        fid = enqueue(self.dsn, "finalize", {"run_id": summary["run_id"]})
        state, fresult, _ = wait_request(self.dsn, fid)
        self.assertEqual(state, "done", fresult)
        self.assertTrue(fresult["finalized"])
        self.assertTrue(fresult["rolling_key_retirable"])
        self.assertEqual(fresult["targets_needing_rolling"], [])

    def test_a_request_naming_an_unknown_target_fails_naming_the_configured_ones(self):
        start_serve(self, self.config, self.dsn, self.fx.secrets,
                    extra_args=["--poll-interval", "60"])
        before = (self.user_tokens(), self.device_rows())
        rid = enqueue(self.dsn, "migrate", {"targets": ["devcies"]})
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "failed", result)
        self.assertIn("no target named 'devcies'", result["error"])
        self.assertIn("users, devices", result["error"])
        rid = enqueue(self.dsn, "migrate", {"targets": ["a/b"]})
        state, result, _ = wait_request(self.dsn, rid)
        self.assertEqual(state, "failed", result)
        self.assertIn("params.targets", result["error"])
        self.assertEqual((self.user_tokens(), self.device_rows()), before)


if __name__ == "__main__":
    unittest.main()
