"""Operator mistakes with keys, and known undecryptable rows (docs/DESIGN.md sections 3, 4
and 6; docs/operations.md, "Undecryptable rows").

- Active and rolling key swapped: migrate refuses (exit 2, nothing written) instead of
  moving every row back under the key an earlier run rotated away from; --force writes.
- A rolling key left out of the config: migrate's own pre-flight finds more undecryptable
  rows than the last scan did, refuses before writing and names the missing key's
  fingerprint; --force writes.
- Acknowledged rows (`keymig acknowledge`): reported, but scan, migrate, verify and
  check-config --with-db no longer fail on them; a new undecryptable row still does.
- keymig_last_run_success says the same in a one-shot push and in serve for the same
  outcome, and serve's `succeeded` agrees with it.

Fixtures are made by Python's `cryptography`; every keymig run is checked for leaks.
"""

import json
import os
import unittest

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_UNDECRYPTABLE, EXIT_USAGE,
                            DbTestCase, Keymig, KeySet, UserFixture, current_secrets,
                            decrypt_with, drop_db, http_get, journal_count, new_db, psql,
                            metric_sample as sample, scalar, snapshot, start_serve, wait_until,
                            write_config)


def fingerprints(km):
    """{label: fingerprint} of a config, as check-config prints them."""
    keys = km.run("check-config", "--json", expect=EXIT_OK).json["keys"]
    return {k["key"]: k["fingerprint"] for k in keys}


def run_count(dsn):
    if scalar(dsn, "SELECT to_regclass('keymig.runs') IS NOT NULL") != "t":
        return 0
    return int(scalar(dsn, "SELECT count(*) FROM keymig.runs"))


class SwappedKeysTest(DbTestCase):
    """Rotated from A to B; then a config with B and A swapped."""

    def setUp(self):
        self.dbname = "kmt_operator_swapped"
        self.dsn = new_db(self.dbname)
        self.keys = KeySet(rolling=1)  # active B, rolling A
        self.fx = UserFixture(self.keys, {"rolling0": 300, "active": 20, "empty": 5}, seed=19)
        self.fx.load(self.dsn)
        self.right = write_config(self.tmp, self.keys.active, self.keys.rolling, name="right.yaml")
        self.swapped = write_config(self.tmp, self.keys.rolling[0], [self.keys.active],
                                    name="swapped.yaml")
        self.km = Keymig(self, self.right, self.dsn, self.fx.secrets)
        self.km_swapped = Keymig(self, self.swapped, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def test_migrate_refuses_a_swapped_config_and_force_overrides(self):
        first = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(first["rotated"], 300)
        before, runs, journal = snapshot(self.dsn), run_count(self.dsn), journal_count(self.dsn)

        # Before: exit 0, and 320 rows rotated back under A without a word.
        r = self.km_swapped.run("migrate", "--json", expect=EXIT_USAGE)
        self.assertFalse(r.json["ok"])
        self.assertIn("swapped", r.json["error"])
        fp = fingerprints(self.km_swapped)
        self.assertIn(fp["active"], r.json["error"])
        self.assertIn(first["run_id"], r.json["error"])
        self.assertIn("--force", r.json["error"])
        self.assertEqual(snapshot(self.dsn), before, "a refused migrate changed rows")
        self.assertEqual(run_count(self.dsn), runs, "a refused migrate made a run")
        self.assertEqual(journal_count(self.dsn), journal)

        # check-config --with-db says the same before deployment (exit 2).
        c = self.km_swapped.run("check-config", "--with-db", "--json", expect=EXIT_USAGE)
        self.assertIn("swapped", c.json["preflight"]["swapped_keys"])
        # The right config passes.
        self.km.run("check-config", "--with-db", expect=EXIT_OK)

        forced = self.km_swapped.run("migrate", "--force", "--json", expect=EXIT_OK).json
        self.assertEqual(forced["rotated"], 320)
        self.assertTrue(forced["preflight"]["forced"])
        now = current_secrets(self.dsn)
        for row in self.fx.by_kind("rolling") + self.fx.by_kind("active"):
            self.assertIsNotNone(decrypt_with(self.keys.rolling[0], now[row.id][0]),
                                 "row %d is not under the forced active key" % row.id)


class ForgottenKeyTest(DbTestCase):
    """Two rolling keys; the config that goes out has only the newer one."""

    COUNTS = {"rolling0": 200, "rolling1": 150, "active": 30, "corrupt": 4, "empty": 6}

    def setUp(self):
        self.dbname = "kmt_operator_forgotten"
        self.dsn = new_db(self.dbname)
        self.keys = KeySet(rolling=2)
        self.fx = UserFixture(self.keys, self.COUNTS, seed=23)
        self.fx.load(self.dsn)
        self.full = write_config(self.tmp, self.keys.active, self.keys.rolling, name="full.yaml")
        self.short = write_config(self.tmp, self.keys.active, self.keys.rolling[:1],
                                  name="short.yaml")
        self.km = Keymig(self, self.full, self.dsn, self.fx.secrets)
        self.km_short = Keymig(self, self.short, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def test_migrate_without_a_rolling_key_refuses_and_names_it(self):
        # A first run of one user makes schema keymig; the last scan (with every key) is
        # then the baseline: 4 undecryptable rows.
        self.km.run("migrate", "--ids", str(self.fx.by_kind("active")[0].id), expect=EXIT_OK)
        scan = self.km.run("scan", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(scan["undecryptable"], 4)
        missing = fingerprints(self.km)["rolling[1]"]
        before = snapshot(self.dsn)
        runs = run_count(self.dsn)

        # Before: exit 3, "completed", 150 rows left unreadable and no hint.
        r = self.km_short.run("migrate", "--json", expect=EXIT_USAGE)
        err = r.json["error"]
        self.assertIn("154 rows", err)
        self.assertIn("more than the 4", err)
        self.assertIn(missing, err, "the refusal does not name the missing key")
        self.assertIn("rolling_1 of the last scan", err)
        self.assertEqual(snapshot(self.dsn), before, "a refused migrate changed rows")
        self.assertEqual(run_count(self.dsn), runs, "a refused migrate made a run")
        self.assertTrue(scan["recorded_as_baseline"])

        # --force writes: the rows under the newer rolling key move, the others stay.
        forced = self.km_short.run("migrate", "--force", "--json",
                                   expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(forced["rotated"], 200)
        self.assertEqual(forced["undecryptable"], 154)
        self.assertTrue(forced["preflight"]["forced"])

        # With the key back, the rest moves and nothing is refused.
        self.km.run("migrate", "--json", expect=EXIT_UNDECRYPTABLE)
        now = current_secrets(self.dsn)
        for row in self.fx.by_kind("rolling"):
            self.assert_rotated(self.keys, row, now[row.id][0])

    def test_a_first_migrate_without_any_baseline_is_not_refused(self):
        # Nothing to compare with (no scan, no earlier run): the run reports, as before.
        r = self.km_short.run("migrate", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(r["undecryptable"], 154)
        self.assertEqual(r["preflight"]["baseline"], None)


class AcknowledgedRowsTest(DbTestCase):
    """Nine orphans no key will ever read, acknowledged; then a tenth appears."""

    def setUp(self):
        self.dbname = "kmt_operator_acknowledged"
        self.dsn = new_db(self.dbname)
        self.keys = KeySet(rolling=1)
        self.fx = UserFixture(self.keys, {"rolling0": 120, "active": 10, "corrupt": 5,
                                          "unknown_key": 4}, seed=29)
        self.fx.load(self.dsn)
        self.config = write_config(self.tmp, self.keys.active, self.keys.rolling)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)
        self.orphans = sorted(r.id for r in self.fx.by_kind("bad:"))
        self.assertEqual(len(self.orphans), 9)

    def tearDown(self):
        drop_db(self.dbname)

    def ids(self, rows):
        return ",".join(str(i) for i in rows)

    def test_acknowledged_rows_are_reported_but_fail_no_run_and_new_ones_still_do(self):
        textfile = os.path.join(self.tmp, "ack.prom")
        # Before: exit 3 for scan, migrate and verify, exit 4 for check-config --with-db,
        # and keymig_rows_by_key{key="undecryptable"} 9 forever.
        self.km.run("scan", expect=EXIT_UNDECRYPTABLE)
        self.km.run("check-config", "--with-db", expect=EXIT_NEEDS_ROLLING)

        # Only undecryptable rows can be acknowledged, all or nothing.
        readable = self.fx.by_kind("active")[0].id
        bad = self.km.run("acknowledge", "--ids", self.ids(self.orphans + [readable]),
                          "--reason", "orphans of a lost key", "--json", expect=EXIT_USAGE)
        self.assertIn(str(readable), bad.json["error"])
        self.km.run("acknowledge", "--ids", "999999", "--reason", "x", expect=EXIT_USAGE)
        self.km.run("acknowledge", "--ids", self.ids(self.orphans), expect=EXIT_USAGE)  # no reason
        listed = self.km.run("acknowledge", "--list", "--json", expect=EXIT_OK).json
        self.assertEqual(listed["rows"], [])

        added = self.km.run("acknowledge", "--ids", self.ids(self.orphans), "--reason",
                            "orphans of a lost key (INC-42)", "--by", "alice", "--json",
                            expect=EXIT_OK).json
        self.assertEqual(len(added["rows"]), 9)
        rows = scalar(self.dsn, "SELECT string_agg(row_id || ':' || acknowledged_by, ',' ORDER BY"
                      " row_id::bigint) FROM keymig.acknowledged WHERE target ="
                      " 'public.users.mfa_secret'")
        self.assertEqual(rows, ",".join("%d:alice" % i for i in self.orphans))
        self.assertEqual(scalar(self.dsn, "SELECT count(*) FROM keymig.acknowledged WHERE"
                                " acknowledged_at > now() - interval '1 hour'"), "9")
        listed = self.km.run("acknowledge", "--list", "--json", expect=EXIT_OK).json
        self.assertEqual(sorted(int(r["id"]) for r in listed["rows"]), self.orphans)
        self.assertEqual({r["acknowledged_by"] for r in listed["rows"]}, {"alice"})

        scan = self.km.run("scan", "--json", "--metrics-textfile", textfile, expect=EXIT_OK).json
        self.assertEqual(scan["undecryptable"], 9)
        self.assertEqual(scan["acknowledged"], 9)
        self.assertTrue(all(r["acknowledged"] for r in scan["undecryptable_rows"]))
        with open(textfile) as f:
            text = f.read()
        self.assertEqual(sample(text, "keymig_rows_by_key", key="undecryptable"), 0)
        self.assertEqual(sample(text, "keymig_rows_by_key", key="acknowledged"), 9)
        self.km.run("check-config", "--with-db", expect=EXIT_OK)
        m = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual((m["rotated"], m["undecryptable"], m["acknowledged"]), (120, 9, 9))
        v = self.km.run("verify", "--run", m["run_id"], "--json", expect=EXIT_OK).json
        self.assertEqual((v["undecryptable"], v["acknowledged"]), (9, 9))

        # A new undecryptable row still fails the run (and is not acknowledged).
        psql(self.dsn, "INSERT INTO public.users (id, username, mfa_secret) VALUES"
                       " (900001, 'newcomer', 'not a token at all')")
        m = self.km.run("migrate", "--json", "--metrics-textfile", textfile,
                        expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual((m["undecryptable"], m["acknowledged"]), (10, 9))
        new = [r for r in m["undecryptable_rows"] if not r["acknowledged"]]
        self.assertEqual([r["id"] for r in new], ["900001"])
        with open(textfile) as f:
            self.assertEqual(sample(f.read(), "keymig_rows_by_key", key="undecryptable"), 1)
        self.km.run("check-config", "--with-db", expect=EXIT_NEEDS_ROLLING)

        # Forgetting brings the failure back.
        gone = self.km.run("acknowledge", "--remove", "--ids", self.ids(self.orphans[:2]) +
                           ",424242", "--json", expect=EXIT_OK).json
        self.assertEqual(sorted(int(i) for i in gone["removed"]), self.orphans[:2])
        self.assertEqual(gone["not_acknowledged"], ["424242"])
        scan = self.km.run("scan", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(scan["acknowledged"], 7)

    def test_success_means_the_same_in_a_push_and_in_serve(self):
        # The same outcome twice: a migrate that completes with undecryptable rows left
        # (exit 3), once one-shot, once scheduled in serve.
        textfile = os.path.join(self.tmp, "oneshot.prom")
        one = self.km.run("migrate", "--json", "--metrics-textfile", textfile,
                          expect=EXIT_UNDECRYPTABLE).json
        with open(textfile) as f:
            pushed = sample(f.read(), "keymig_last_run_success", command="migrate")
        self.assertEqual(pushed, 1)

        config = write_config(self.tmp, self.keys.active, self.keys.rolling, name="serve.yaml",
                              migration={"schedule": {"every": "1h"}})
        serve = start_serve(self, config, self.dsn, self.fx.secrets)

        def status():
            return json.loads(http_get(serve.port, "/status")[1])

        self.assertTrue(wait_until(lambda: "verify" in status()["last"], 60),
                        serve.stderr()[-2000:])
        last = status()["last"]["migrate"]
        self.assertEqual(last["exit_code"], EXIT_UNDECRYPTABLE)
        scraped = sample(http_get(serve.port, "/metrics")[1], "keymig_last_run_success",
                         command="migrate")
        self.assertEqual(scraped, pushed)
        # Before: the metric said 1 while serve's own result said the run failed.
        self.assertEqual(last["succeeded"], scraped == 1, last)
        self.assertEqual(one["succeeded"], pushed == 1)


if __name__ == "__main__":
    unittest.main()
