"""Several targets in one run (issue 17): `keyMigration.targets`, `onlyWhere`, `--target`,
run groups ("G" made of one run "G/name" per target).

The fixture has four tables of different shapes in one database: `mfa_users` (bigint id,
text secret, a flag, a username), `devices` (uuid id, bytea secret, no flag), an
Airflow-shaped `connection` with two encrypted columns, each behind its own
`is_encrypted`-style column (two targets on one table), and `variable` (one column behind
`is_encrypted`). The rows outside a target's `onlyWhere` (flag false or NULL) hold
plaintext, some of it token-shaped and one of them a real rolling-key token: keymig must
not read, count or write any of them.
"""

import json
import os
import random
import subprocess
import unittest
import uuid

from keymig_testlib import (_brief, EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_USAGE, DbTestCase,
                            Keymig, KeySet, Row, Secrets, copy_in, drop_db, journal_count,
                            journal_of, kill_hard, log_events, make_token, new_db, psql, query,
                            scalar, snapshot, totp_secret, wait_until, write_config)

COUNT_FIELDS = ("rows_scanned", "rotated", "already_active", "flag_fixed", "empty",
                "undecryptable", "conflicts")

DDL = """
CREATE TABLE public.mfa_users (
  id bigint PRIMARY KEY,
  username text NOT NULL UNIQUE,
  mfa_secret text,
  mfa_fernet_active boolean NOT NULL DEFAULT false
);
CREATE TABLE public.devices (id uuid PRIMARY KEY, label text NOT NULL, secret bytea);
CREATE TABLE public.connection (
  id serial PRIMARY KEY,
  conn_id text NOT NULL UNIQUE,
  conn_type text,
  password text,
  extra text,
  is_encrypted boolean,
  is_extra_encrypted boolean
);
CREATE TABLE public.variable (
  id serial PRIMARY KEY,
  key text NOT NULL UNIQUE,
  val text,
  is_encrypted boolean
);
"""

# Plaintext that rows outside a target's onlyWhere hold (the application stored it in clear).
PLAINTEXTS = ["hunter2", '{"a": 1}', "", "correct horse battery staple",
              "gAAAAA-looks-like-a-token-but-is-plaintext"]


class Target:
    """One target of the fixture: its config entry and what each row holds (Row.token is
    the stored value as text; Row.flag the flag column's value for mfa_users, the
    onlyWhere column's for the filtered ones; Row.kind 'rolling', 'active',
    'active_flag_false', 'empty' or 'outside' for a row outside onlyWhere)."""

    def __init__(self, name, table, secret_column, flag_column="", username_column="",
                 only_where=None, bytea=False, explicit_name=False):
        self.name, self.table, self.secret_column = name, table, secret_column
        self.flag_column, self.username_column = flag_column, username_column
        self.only_where, self.bytea, self.explicit_name = only_where, bytea, explicit_name
        self.rows = {}  # id text -> Row

    def config(self, name=None, **changes):
        d = {"table": self.table, "idColumn": "id", "secretColumn": self.secret_column,
             "activeFlagColumn": self.flag_column, "usernameColumn": self.username_column,
             "sysAdminColumns": []}
        if self.only_where:
            d["onlyWhere"] = {"column": self.only_where[0], "equals": self.only_where[1]}
        if name or self.explicit_name:
            d["name"] = name or self.name
        d.update(changes)
        return d

    def by(self, *kinds):
        return [r for r in self.rows.values() if r.kind in kinds]

    def expected(self):
        """The counts one full migrate of the fixture reports for this target."""
        inside = [r for r in self.rows.values() if r.kind != "outside"]
        return {"rows_scanned": len(inside), "rotated": len(self.by("rolling")),
                "already_active": len(self.by("active", "active_flag_false")),
                "flag_fixed": len(self.by("active_flag_false")) if self.flag_column else 0,
                "empty": len(self.by("empty")), "undecryptable": 0, "conflicts": 0}

    def current(self, dsn):
        expr = ("convert_from(%s, 'UTF8')" % self.secret_column if self.bytea
                else self.secret_column)
        return dict(query(dsn, "SELECT id::text, %s FROM public.%s" % (
            expr, self.table.split(".")[-1])))

    def flags(self, dsn):
        return {i: f == "t" for i, f in query(dsn, "SELECT id::text, %s FROM public.%s" % (
            self.flag_column, self.table.split(".")[-1]))}


class World:
    """The four tables and their five targets, made by Python's `cryptography`."""

    def __init__(self, keys, seed, sizes):
        self.keys = keys
        self.rng = random.Random(seed)
        self.secrets = Secrets()
        for k in [keys.active] + keys.rolling + [keys.unknown]:
            self.secrets.add_key(k)
        for p in PLAINTEXTS:
            self.secrets.add(p)
        self.users = Target("mfa_users", "public.mfa_users", "mfa_secret", "mfa_fernet_active",
                            "username")
        self.devices = Target("devices", "devices", "secret", bytea=True)
        self.password = Target("connection.password", "connection", "password",
                               only_where=("is_encrypted", True), explicit_name=True)
        self.extra = Target("connection.extra", "connection", "extra",
                            only_where=("is_extra_encrypted", True), explicit_name=True)
        self.variable = Target("variable", "variable", "val", only_where=("is_encrypted", True))
        self.targets = [self.users, self.devices, self.password, self.extra, self.variable]
        self.by_name = {t.name: t for t in self.targets}
        self.n = 0
        self.sizes = sizes
        self._users, self._devices, self._connections, self._variables = [], [], [], []
        for t in self.targets:
            plan = []
            for kind, n in sizes.get(t.name, {}).items():
                plan += [kind] * n
            self.rng.shuffle(plan)
            t.plan = plan
        self._make_users()
        self._make_devices()
        self._make_connections()
        self._make_variables()

    def _plain(self, t):
        h = "%032x" % self.rng.getrandbits(128)
        self.secrets.add(h)
        if t is self.extra:
            return json.dumps({"api_token": h, "region": "eu"})
        if t is self.password:
            return "pw-" + h
        if t is self.variable:
            return "val-" + h
        return totp_secret(self.rng, short=self.rng.random() < 0.3)

    def cell(self, t, rid, kind):
        """(Row, filter/flag value) for one secret cell of kind `kind`."""
        self.n += 1
        ts = self.rng.randrange(1_500_000_000, 1_700_000_000)
        plain, token = None, None
        inside = t.only_where[1] if t.only_where else None
        flag = inside
        if kind == "rolling":
            plain = self._plain(t)
            token = make_token(self.keys.rolling[self.n % len(self.keys.rolling)], plain, ts)
            if t.flag_column:
                flag = self.n % 5 == 0  # a stale true flag must not stop the rotation
        elif kind in ("active", "active_flag_false"):
            plain = self._plain(t)
            token = make_token(self.keys.active, plain, ts)
            if t.flag_column:
                flag = kind == "active"
        elif kind == "empty":
            token = None if (t.bytea or self.n % 2) else ""
            if t.flag_column:
                flag = False
        elif kind == "outside":
            # Outside onlyWhere: the column is the other boolean, or NULL.
            flag = (not inside) if self.n % 3 else None
            variant = self.n % 4
            if variant == 0:
                # Token-shaped, and readable by the rolling key: still not the target's.
                plain = self._plain(t)
                token = make_token(self.keys.rolling[0], plain, ts)
            elif variant == 1:
                token = None
            else:
                token = PLAINTEXTS[self.n % len(PLAINTEXTS)]
            plain = None
        else:
            raise ValueError(kind)
        self.secrets.add(token, plain)
        row = Row(rid, None, token, flag, plain, ts, kind)
        t.rows[str(rid)] = row
        return row

    def _make_users(self):
        for i, kind in enumerate(self.users.plan):
            rid = 1000 + 3 * i
            row = self.cell(self.users, rid, kind)
            self._users.append((rid, "user%06d" % rid, row.token, bool(row.flag)))

    def _make_devices(self):
        for i, kind in enumerate(self.devices.plan):
            rid = str(uuid.UUID(int=self.rng.getrandbits(128)))
            row = self.cell(self.devices, rid, kind)
            self._devices.append((rid, "device-%d" % i,
                                  None if row.token is None else row.token.encode()))

    def _make_connections(self):
        pw, ex = list(self.password.plan), list(self.extra.plan)
        n = max(len(pw), len(ex))
        pw += ["outside"] * (n - len(pw))
        ex += ["outside"] * (n - len(ex))
        for i in range(n):
            rid = i + 1
            p = self.cell(self.password, rid, pw[i])
            e = self.cell(self.extra, rid, ex[i])
            self._connections.append((rid, "conn_%04d" % rid, ["postgres", "http", "aws"][i % 3],
                                      p.token, e.token, p.flag, e.flag))

    def _make_variables(self):
        for i, kind in enumerate(self.variable.plan):
            rid = i + 1
            row = self.cell(self.variable, rid, kind)
            self._variables.append((rid, "var_%04d" % rid, row.token, row.flag))

    def load(self, dsn):
        psql(dsn, DDL)
        copy_in(dsn, "public.mfa_users", "id, username, mfa_secret, mfa_fernet_active",
                self._users)
        copy_in(dsn, "public.devices", "id, label, secret", self._devices)
        copy_in(dsn, "public.connection",
                "id, conn_id, conn_type, password, extra, is_encrypted, is_extra_encrypted",
                self._connections)
        copy_in(dsn, "public.variable", "id, key, val, is_encrypted", self._variables)
        psql(dsn, "SELECT setval('public.connection_id_seq', (SELECT max(id) FROM public.connection));"
             "SELECT setval('public.variable_id_seq', (SELECT max(id) FROM public.variable));"
             "ANALYZE")

    def config(self, tmp, name, targets=None, **migration):
        entries = [t.config() for t in self.targets] if targets is None else targets
        return write_config(tmp, self.keys.active, self.keys.rolling, name=name,
                            migration=dict(migration, targets=entries))


def all_tables(dsn):
    """Every row of the fixture's tables, byte for byte."""
    return {t: snapshot(dsn, "public." + t) for t in ("mfa_users", "devices", "connection",
                                                       "variable")}


def fixed_columns(dsn):
    """The columns no target may write (all but the secrets and mfa_users' flag)."""
    return {
        "mfa_users": query(dsn, "SELECT id::text, username FROM public.mfa_users ORDER BY 1"),
        "devices": query(dsn, "SELECT id::text, label FROM public.devices ORDER BY 1"),
        "connection": query(dsn, "SELECT id::text, conn_id, conn_type, is_encrypted::text,"
                            " is_extra_encrypted::text FROM public.connection ORDER BY 1"),
        "variable": query(dsn, "SELECT id::text, key, is_encrypted::text FROM public.variable"
                          " ORDER BY 1"),
    }


def group_parts(dsn, group):
    """{run_id: state} of the runs whose run_group is `group`."""
    if scalar(dsn, "SELECT to_regclass('keymig.runs') IS NOT NULL") != "t":
        return {}
    return dict(query(dsn, "SELECT run_id::text, state FROM keymig.runs WHERE run_group = '%s'"
                      % group))


def running_group(dsn):
    if scalar(dsn, "SELECT to_regclass('keymig.runs') IS NOT NULL") != "t":
        return None
    return scalar(dsn, "SELECT run_group FROM keymig.runs WHERE run_group IS NOT NULL"
                  " AND state = 'running' ORDER BY started_at LIMIT 1") or None


def keymig_sessions(dsn):
    return int(scalar(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                      " 'keymig' AND datname = current_database()"))


class MultiTargetCase(DbTestCase):
    """Checks shared by the tests: each builds its own database and World."""

    DB = None

    def make_world(self, sizes, seed, rolling=2):
        self.keys = KeySet(rolling=rolling)
        self.world = World(self.keys, seed, sizes)
        self.dsn = new_db(self.DB)
        self.addCleanup(drop_db, self.DB)
        self.world.load(self.dsn)
        return self.world

    def report_of(self, summary, name):
        by = [t for t in summary.get("targets", []) if t.get("name") == name]
        self.assertEqual(len(by), 1, "targets[] of the report has no single %r: %s" % (
            name, _brief(summary)))
        return by[0]

    def assert_counts(self, report, expected, context):
        for field, value in expected.items():
            self.assertEqual(report.get(field), value, "%s: %s (report %s)" % (
                context, field, _brief(report)))

    def assert_totals_are_sums(self, summary, names):
        self.assertEqual([t.get("name") for t in summary.get("targets", [])], names,
                         "targets[] must list every target in config order")
        for field in COUNT_FIELDS:
            self.assertEqual(summary.get(field), sum(t[field] for t in summary["targets"]),
                             "total %s is not the sum of the targets' (%s)" % (
                                 field, _brief(summary)))

    def assert_migrated(self, t, context=""):
        """Every rolling row of `t` moved to the active key alone (same plaintext and
        timestamp); every other row, outside onlyWhere included, byte-identical; mfa_users'
        flag true on every readable row."""
        now = t.current(self.dsn)
        self.assertEqual(set(now), set(t.rows), "rows of %s" % t.table)
        flags = t.flags(self.dsn) if t.flag_column else None
        for rid, row in t.rows.items():
            where = "(target %s%s)" % (t.name, context)
            if row.kind == "rolling":
                self.assertNotEqual(now[rid], row.token, "row %s not rotated %s" % (rid, where))
                self.assert_rotated(self.keys, row, now[rid], where)
            else:
                self.assertEqual(now[rid], row.token, "row %s (%s) changed %s" % (
                    rid, row.kind, where))
            if flags is not None:
                want = row.kind in ("rolling", "active", "active_flag_false") or bool(row.flag)
                self.assertEqual(flags[rid], want, "row %s (%s): flag %s" % (rid, row.kind, where))

    def assert_untouched(self, t, context=""):
        now = t.current(self.dsn)
        for rid, row in t.rows.items():
            self.assertEqual(now[rid], row.token, "row %s (%s) of %s changed %s" % (
                rid, row.kind, t.name, context))

    def assert_journal(self, t, run_id):
        """Each rotated row of `t` journaled exactly once under `run_id` with its original
        token and what it holds now; flag fixes once with their token; nothing else."""
        journal = journal_of(self.dsn, run_id)
        now = t.current(self.dsn)
        for row in t.by("rolling"):
            self.assertEqual(journal.get(str(row.id)), [(row.token, now[str(row.id)])],
                             "journal of %s, row %s: must be there exactly once with its "
                             "original token" % (run_id, row.id))
        fixed = {str(r.id) for r in t.by("active_flag_false")} if t.flag_column else set()
        for rid in fixed:
            entries = journal.get(rid)
            self.assertTrue(entries and len(entries) == 1 and entries[0][0] == t.rows[rid].token,
                            "journal of %s, flag-fixed row %s: %r" % (run_id, rid, entries))
        want = {str(r.id) for r in t.by("rolling")} | fixed
        self.assertEqual(set(journal) - want, set(), "journal of %s has rows it must not have"
                         % run_id)
        self.assertEqual(set(journal), want, "journal of %s misses rows" % run_id)


class ShapesTest(MultiTargetCase):
    """1. Four table shapes, five targets, one migrate."""

    DB = "kmt_multi_shapes"
    SIZES = {
        "mfa_users": {"rolling": 180, "active": 60, "active_flag_false": 25, "empty": 35},
        "devices": {"rolling": 140, "active": 40, "empty": 20},
        "connection.password": {"rolling": 70, "active": 20, "empty": 6, "outside": 64},
        "connection.extra": {"rolling": 50, "active": 15, "empty": 5, "outside": 90},
        "variable": {"rolling": 60, "active": 20, "empty": 4, "outside": 40},
    }

    def test_one_migrate_over_four_shapes_then_finalize(self):
        w = self.make_world(self.SIZES, seed=1701)
        names = [t.name for t in w.targets]
        km = Keymig(self, w.config(self.tmp, "shapes.yaml"), self.dsn, w.secrets)
        fixed = fixed_columns(self.dsn)

        s = km.run("migrate", "--json", "--batch-size", "40", "--threads", "2",
                   expect=EXIT_OK).json
        group = s["run_id"]
        self.assertTrue(group and "/" not in group, "run id of the group: %r" % group)
        self.assert_totals_are_sums(s, names)
        for t in w.targets:
            r = self.report_of(s, t.name)
            self.assert_counts(r, t.expected(), "migrate, target " + t.name)
            self.assertEqual(r.get("run_id"), group + "/" + t.name, _brief(r))
        total = {f: sum(t.expected()[f] for t in w.targets) for f in COUNT_FIELDS}
        self.assert_counts(s, total, "migrate totals")

        for t in w.targets:
            self.assert_migrated(t)
            self.assert_journal(t, group + "/" + t.name)
        self.assertEqual(fixed_columns(self.dsn), fixed, "a column no target names changed")
        self.assertEqual(group_parts(self.dsn, group),
                         {group + "/" + n: "completed" for n in names})

        for args in ((), ("--run", group)):
            v = km.run("verify", "--json", *args, expect=EXIT_OK).json
            self.assert_totals_are_sums(v, names)
            for field in ("needs_rolling", "mismatched", "undecryptable"):
                self.assertEqual(v.get(field), 0, "verify %s: %s" % (args, _brief(v)))
            for t in w.targets:
                r = self.report_of(v, t.name)
                e = t.expected()
                self.assertEqual((r.get("ok"), r.get("needs_rolling"), r.get("undecryptable")),
                                 (e["rotated"] + e["already_active"], 0, 0),
                                 "verify %s, target %s: %s" % (args, t.name, _brief(r)))
                if args:
                    self.assertEqual(r.get("journal_failed"), 0, _brief(r))

        # A node with a stale config writes a new rolling-key token into `variable`.
        plain = "val-late-%032x" % w.rng.getrandbits(128)
        late = make_token(self.keys.rolling[1], plain, 1_690_000_000)
        w.secrets.add(late, plain)
        late_id = int(scalar(self.dsn, "INSERT INTO public.variable (key, val, is_encrypted)"
                             " VALUES ('late', '%s', true) RETURNING id" % late).split()[0])
        v = km.run("verify", "--json", expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(v.get("targets_needing_rolling"), ["variable"], _brief(v))
        self.assertIs(v.get("rolling_key_retirable"), False, _brief(v))
        journals = {n: journal_count(self.dsn, group + "/" + n) for n in names}
        r = km.run("finalize", "--json", "--run", group)
        self.assertEqual(r.returncode, EXIT_NEEDS_ROLLING, r.describe())
        f = r.json
        self.assertIs(f.get("rolling_key_retirable"), False, _brief(f))
        self.assertEqual(f.get("targets_needing_rolling"), ["variable"], _brief(f))
        self.assertEqual({n: journal_count(self.dsn, group + "/" + n) for n in names}, journals,
                         "a refused finalize deleted journal rows")
        self.assertNotIn("finalized", group_parts(self.dsn, group).values())

        again = km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertNotEqual(again["run_id"], group, "a completed group was resumed")
        self.assertEqual(again["rotated"], 1, _brief(again))
        self.assertEqual(self.report_of(again, "variable")["rotated"], 1)
        now = w.variable.current(self.dsn)[str(late_id)]
        self.assert_rotated(self.keys, Row(late_id, None, late, True, plain, 1_690_000_000,
                                           "rolling"), now)

        f = km.run("finalize", "--json", "--run", group, expect=EXIT_OK).json
        self.assertIs(f.get("rolling_key_retirable"), True, _brief(f))
        self.assertEqual(f.get("targets_needing_rolling"), [], _brief(f))
        for n in names:
            self.assertEqual(journal_count(self.dsn, group + "/" + n), 0,
                             "finalize kept the journal of " + n)
        self.assertEqual(set(group_parts(self.dsn, group).values()), {"finalized"})
        km.run("finalize", "--json", "--run", again["run_id"], expect=EXIT_OK)
        self.assertEqual(journal_count(self.dsn), 0)


class KilledInTheSecondTargetTest(MultiTargetCase):
    """2. kill -9 while the second target's part is under way; a plain re-run resumes."""

    DB = "kmt_multi_kill"
    SIZES = {
        "mfa_users": {"rolling": 40, "active": 10, "empty": 10},
        "devices": {"rolling": 2200, "active": 50, "empty": 50},
    }

    def test_kill_nine_mid_second_target_then_resume_the_group(self):
        w = self.make_world(self.SIZES, seed=1702, rolling=1)
        targets = [w.users, w.devices]
        config = w.config(self.tmp, "kill.yaml", targets=[t.config() for t in targets])
        km = Keymig(self, config, self.dsn, w.secrets)
        proc = km.start("migrate", "--json", "--batch-size", "50", "--threads", "1",
                        "--max-rows-per-second", "450")
        group = wait_until(lambda: "exited" if proc.poll() is not None else
                           running_group(self.dsn), 30)
        if not group or group == "exited":
            kill_hard(proc)
            self.fail("no running group appeared: %s" % km.finish(proc).describe())
        second = group + "/devices"
        progressed = wait_until(lambda: proc.poll() is not None or (
            group_parts(self.dsn, group).get(second) == "running" and
            journal_count(self.dsn, second) >= 200), 60)
        self.assertTrue(progressed, "the second part did not progress: %s" %
                        group_parts(self.dsn, group))
        self.assertIsNone(proc.poll(), "keymig finished before the test could kill it")
        kill_hard(proc)
        self.assertEqual(km.finish(proc).returncode, -9)
        wait_until(lambda: keymig_sessions(self.dsn) == 0, 10)

        self.assertEqual(group_parts(self.dsn, group),
                         {group + "/mfa_users": "completed", second: "running"})
        self.assert_migrated(w.users)
        self.assert_journal(w.users, group + "/mfa_users")
        # What the killed process left of the second part: whole batches only.
        at_kill = journal_count(self.dsn, second)
        n_rolling = len(w.devices.by("rolling"))
        self.assertLess(at_kill, n_rolling, "killed after the end")
        now, journal = w.devices.current(self.dsn), journal_of(self.dsn, second)
        moved = 0
        for rid, row in w.devices.rows.items():
            if now[rid] == row.token:
                self.assertIsNone(journal.get(rid), "row %s journaled but not rotated" % rid)
            else:
                moved += 1
                self.assertEqual(row.kind, "rolling")
                self.assertEqual(journal.get(rid), [(row.token, now[rid])], "journal of " + rid)
        self.assertEqual(moved, at_kill)

        again = km.run("migrate", "--json", "--batch-size", "500", expect=EXIT_OK).json
        self.assertEqual(again["run_id"], group, "the re-run did not resume the group")
        self.assertEqual([t.get("run_id") for t in again.get("targets", [])],
                         [group + "/mfa_users", second], _brief(again))
        self.assertEqual(self.report_of(again, "mfa_users")["rotated"], 0,
                         "the completed part was migrated again")
        self.assertEqual(self.report_of(again, "devices")["rotated"], n_rolling - at_kill,
                         _brief(self.report_of(again, "devices")))
        for t in targets:
            self.assert_migrated(t, " after the resume")
            self.assert_journal(t, group + "/" + t.name)
        self.assertEqual(group_parts(self.dsn, group),
                         {group + "/mfa_users": "completed", second: "completed"})
        v = km.run("verify", "--json", "--run", group, expect=EXIT_OK).json
        self.assertEqual((v["needs_rolling"], v["mismatched"]), (0, 0), _brief(v))


class ConfigErrorTest(MultiTargetCase):
    """3. One bad target fails every command before anything is written anywhere."""

    DB = "kmt_multi_typo"
    SIZES = {
        "mfa_users": {"rolling": 40, "active": 5, "empty": 5},
        "devices": {"rolling": 40, "empty": 5},
        "connection.password": {"rolling": 10, "outside": 5},
        "connection.extra": {"rolling": 10, "outside": 5},
        "variable": {"rolling": 20, "outside": 5},
    }

    def test_a_typo_in_one_target_writes_nothing_in_any(self):
        w = self.make_world(self.SIZES, seed=1703)
        before = all_tables(self.dsn)
        good = [w.users.config(), w.devices.config()]
        cases = [
            ("unknown secret column", good + [w.variable.config(
                name="airflow-vars", secretColumn="vaal")], "airflow-vars", "vaal"),
            ("missing table", [w.users.config(), w.devices.config(
                name="gone-devices", table="public.devices_gone"), w.variable.config()],
             "gone-devices", "devices_gone"),
            ("unknown onlyWhere column", good + [w.variable.config(
                name="airflow-vars", onlyWhere={"column": "is_encryptd", "equals": True})],
             "airflow-vars", "is_encryptd"),
            ("unknown flag column", good + [w.password.config(
                name="conn-pw", activeFlagColumn="pw_active")], "conn-pw", "pw_active"),
        ]
        for i, (what, entries, name, word) in enumerate(cases):
            config = w.config(self.tmp, "typo%d.yaml" % i, targets=entries)
            km = Keymig(self, config, self.dsn, w.secrets)
            for command in ("migrate", "scan", "verify"):
                r = km.run(command, "--json", "--batch-size", "10")
                self.assertEqual(r.returncode, EXIT_USAGE, "%s: %s" % (what, r.describe()))
                self.assertIn(name, r.stderr, "%s: the error must name the target\n%s" % (
                    what, r.describe()))
                self.assertIn(word, r.stderr, "%s: the error must name %r\n%s" % (
                    what, word, r.describe()))
            self.assertTrue(all_tables(self.dsn) == before, "%s: a row changed" % what)
            self.assertEqual(journal_count(self.dsn), 0, "%s: keymig.journal has rows" % what)


class SelectTargetsTest(MultiTargetCase):
    """4. --target limits a command to some targets."""

    DB = "kmt_multi_select"
    SIZES = {
        "mfa_users": {"rolling": 60, "active": 10, "active_flag_false": 5, "empty": 5},
        "devices": {"rolling": 60, "active": 10, "empty": 5},
        "connection.password": {"rolling": 30, "active": 5, "empty": 3, "outside": 12},
        "connection.extra": {"rolling": 20, "active": 5, "outside": 25},
        "variable": {"rolling": 30, "active": 5, "outside": 15},
    }

    def test_target_flag(self):
        w = self.make_world(self.SIZES, seed=1704)
        # The connection targets without a name: "table.secretColumn" by default.
        entries = [t.config() for t in w.targets]
        for e in entries:
            e.pop("name", None)
        names = [t.name for t in w.targets]
        km = Keymig(self, w.config(self.tmp, "select.yaml", targets=entries), self.dsn,
                    w.secrets)

        s = km.run("scan", "--json", "--target", "variable", expect=EXIT_OK).json
        self.assertEqual((s["rows_scanned"], s.get("rolling")),
                         (w.variable.expected()["rows_scanned"], len(w.variable.by("rolling"))),
                         _brief(s))

        before = all_tables(self.dsn)
        s = km.run("migrate", "--json", "--target", "devices", expect=EXIT_OK).json
        self.assert_counts(s, w.devices.expected(), "migrate --target devices")
        self.assert_migrated(w.devices)
        after = all_tables(self.dsn)
        for table in ("mfa_users", "connection", "variable"):
            self.assertTrue(after[table] == before[table], "migrate --target devices changed "
                            + table)
        run = s["run_id"]

        r = km.run("finalize", "--json", "--run", run, "--target", "devices")
        self.assertIn(r.returncode, (EXIT_OK, EXIT_NEEDS_ROLLING), r.describe())
        self.assertIsNot(r.json.get("rolling_key_retirable"), True,
                         "finalize --target devices called the rolling key retirable: %s"
                         % _brief(r.json))

        # Unknown names: exit 2, naming the configured targets, nothing written.
        before = all_tables(self.dsn)
        for command in (("migrate",), ("scan",), ("verify",), ("rollback", "--run", run),
                        ("finalize", "--run", run)):
            r = km.run(command[0], "--json", "--target", "nosuch", *command[1:])
            self.assertEqual(r.returncode, EXIT_USAGE, r.describe())
            self.assertIn("nosuch", r.stderr, r.describe())
            for n in names:
                self.assertIn(n, r.stderr, "the error must list the configured target %r\n%s"
                              % (n, r.describe()))
        self.assertTrue(all_tables(self.dsn) == before, "an unknown --target changed rows")

        # Two of them, given out of config order: reported in config order.
        s = km.run("migrate", "--json", "--target", "variable", "--target", "connection.extra",
                   expect=EXIT_OK).json
        self.assertEqual([t.get("name") for t in s.get("targets", [])],
                         ["connection.extra", "variable"], _brief(s))
        self.assert_migrated(w.extra)
        self.assert_migrated(w.variable)
        self.assert_untouched(w.users, "by migrate --target variable --target connection.extra")
        self.assert_untouched(w.password, "by migrate --target variable --target connection.extra")

        # Everything migrated now; still, a finalize of some targets cannot know the rest.
        s = km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(self.report_of(s, "mfa_users")["rotated"], len(w.users.by("rolling")))
        self.assertEqual(self.report_of(s, "connection.password")["rotated"],
                         len(w.password.by("rolling")))
        self.assertEqual(s["rotated"], len(w.users.by("rolling")) + len(w.password.by("rolling")))
        for t in w.targets:
            self.assert_migrated(t, " after the full migrate")
        r = km.run("finalize", "--json", "--run", s["run_id"], "--target", "mfa_users",
                   "--target", "devices")
        self.assertIn(r.returncode, (EXIT_OK, EXIT_NEEDS_ROLLING), r.describe())
        self.assertIsNot(r.json.get("rolling_key_retirable"), True,
                         "finalize with two of five targets called the rolling key retirable:"
                         " %s" % _brief(r.json))


class SharedRunTest(MultiTargetCase):
    """5. Two workers given the same --run-id share every target's chunks."""

    DB = "kmt_multi_workers"
    SIZES = {
        "mfa_users": {"rolling": 400, "active": 20, "empty": 10},
        "devices": {"rolling": 400, "active": 20},
        "variable": {"rolling": 400, "active": 10, "outside": 30},
    }

    def test_two_workers_one_group(self):
        w = self.make_world(self.SIZES, seed=1705)
        targets = [w.users, w.devices, w.variable]
        config = w.config(self.tmp, "workers.yaml", targets=[t.config() for t in targets])
        km = Keymig(self, config, self.dsn, w.secrets)
        group = "mt-shared-1"
        args = ("migrate", "--json", "--run-id", group, "--batch-size", "20", "--threads", "1",
                "--max-rows-per-second", "250")
        procs = [km.start(*args), km.start(*args)]
        results = [km.finish(p, timeout=120) for p in procs]
        for r in results:
            self.assertEqual(r.returncode, EXIT_OK, r.describe())
            self.assertEqual(r.json["run_id"], group, _brief(r.json))
        reports = [r.json for r in results]
        for t in targets:
            got = [self.report_of(s, t.name)["rotated"] for s in reports]
            self.assertEqual(sum(got), len(t.by("rolling")),
                             "target %s: the workers rotated %s rows between them" % (t.name, got))
            self.assert_migrated(t)
            self.assert_journal(t, group + "/" + t.name)
        print("\ntwo workers, rotated per target: %s" % [
            [self.report_of(s, t.name)["rotated"] for t in targets] for s in reports])
        for s in reports:
            self.assertGreater(s["rotated"], 0, "a worker did no work: %s" % _brief(s))
        self.assertEqual(group_parts(self.dsn, group),
                         {group + "/" + t.name: "completed" for t in targets})


class EqualsFalseAndRollbackTest(MultiTargetCase):
    """onlyWhere {equals: false} (NULL excluded too), and rollback --run G of every part."""

    DB = "kmt_multi_rollback"
    SIZES = {
        "mfa_users": {"rolling": 50, "active": 10, "active_flag_false": 10, "empty": 5},
        "variable": {"rolling": 40, "active": 5, "empty": 3, "outside": 20},
    }

    def test_equals_false_and_rollback_of_the_group(self):
        w = self.make_world(self.SIZES, seed=1706)
        # A table that marks its plaintext rows instead: is_plain false holds tokens.
        legacy = Target("legacy", "legacy", "secret", only_where=("is_plain", False))
        for i, kind in enumerate(["rolling"] * 30 + ["active"] * 5 + ["outside"] * 15):
            w.cell(legacy, i + 1, kind)
        psql(self.dsn, "CREATE TABLE public.legacy (id int PRIMARY KEY, secret text,"
             " is_plain boolean)")
        copy_in(self.dsn, "public.legacy", "id, secret, is_plain",
                [(r.id, r.token, r.flag) for r in legacy.rows.values()])
        self.assertTrue(any(r.flag is None for r in legacy.by("outside")))
        self.assertTrue(any(r.flag is True for r in legacy.by("outside")))
        targets = [w.users, legacy, w.variable]
        config = w.config(self.tmp, "rollback.yaml", targets=[t.config() for t in targets])
        km = Keymig(self, config, self.dsn, w.secrets)
        before = all_tables(self.dsn)
        before_legacy = snapshot(self.dsn, "public.legacy")

        s = km.run("migrate", "--json", "--batch-size", "16", expect=EXIT_OK).json
        group = s["run_id"]
        self.assert_totals_are_sums(s, [t.name for t in targets])
        for t in targets:
            self.assert_counts(self.report_of(s, t.name), t.expected(), "target " + t.name)
            self.assert_migrated(t)
            self.assert_journal(t, group + "/" + t.name)

        # A completed run's journals are finalize's to delete: purge refuses the group whole.
        p = km.run("journal purge", "--run-id", group, expect=EXIT_USAGE)
        self.assertIn("finalize", p.stderr)
        self.assertIn("nothing was deleted", p.stderr)
        for t in targets:
            self.assertGreater(journal_count(self.dsn, group + "/" + t.name), 0)

        r = km.run("rollback", "--json", "--run", group, expect=EXIT_OK).json
        e = [t.expected() for t in targets]
        self.assertEqual(r.get("restored"), sum(x["rotated"] + x["flag_fixed"] for x in e),
                         _brief(r))
        self.assertTrue(all_tables(self.dsn) == before, "rollback did not restore every row")
        self.assertTrue(snapshot(self.dsn, "public.legacy") == before_legacy,
                        "rollback did not restore legacy")
        self.assertEqual(set(group_parts(self.dsn, group).values()), {"rolled_back"})

        # Rolled back, every part's journal holds only old-key ciphertext: purge drops all.
        p = km.run("journal purge", "--run-id", group, "--json", expect=EXIT_OK).json
        self.assertEqual(p.get("runs"), len(targets), p)
        for t in targets:
            self.assertEqual(journal_count(self.dsn, group + "/" + t.name), 0)



class ProgressCountsTest(MultiTargetCase):
    """Rows outside onlyWhere are not counted: not in the progress a run reports either."""

    DB = "kmt_multi_progress"
    SIZES = {
        "variable": {"rolling": 300, "active": 20, "outside": 500},
        "mfa_users": {"rolling": 10, "active": 5},
    }

    def test_progress_counts_only_the_targets_rows(self):
        w = self.make_world(self.SIZES, seed=1707, rolling=1)
        targets = [w.variable, w.users]
        config = w.config(self.tmp, "progress.yaml", targets=[t.config() for t in targets])
        km = Keymig(self, config, self.dsn, w.secrets)
        r = km.run("migrate", "--json", "--log-format", "json", "--progress-interval", "1",
                   "--batch-size", "20", "--threads", "1", "--max-rows-per-second", "200",
                   expect=EXIT_OK)
        self.assert_counts(self.report_of(r.json, "variable"), w.variable.expected(), "variable")
        events = log_events(r.stderr)
        inside = w.variable.expected()["rows_scanned"]
        end = next(i for i, e in enumerate(events) if e["event"] == "run_completed")
        progress = [e for e in events[:end] if e["event"] == "progress"]
        self.assertTrue(progress, "no progress event in a run of ~2 s:\n" + r.stderr[-3000:])
        for e in progress:
            self.assertEqual(int(e["rows_total"]), inside,
                             "progress of variable counts rows outside onlyWhere: %s" % e)
        started = [e for e in events if e["event"] == "run_started" and
                   str(e.get("run_id", "")).endswith("/variable")]
        self.assertEqual(len(started), 1, r.stderr[-3000:])
        self.assertEqual(int(started[0].get("rows")), inside,
                         "run_started of variable counts rows outside onlyWhere: %s" % started[0])


class KilledBetweenTargetsTest(MultiTargetCase):
    """kill -9 after the first target's part completed and before the second's run was
    made (its planning waits on a lock the test holds): a plain re-run resumes the group."""

    DB = "kmt_multi_gap"
    SIZES = {
        "mfa_users": {"rolling": 400, "active": 10},
        "devices": {"rolling": 100, "active": 10},
    }

    def test_kill_nine_between_two_parts_then_resume_the_group(self):
        w = self.make_world(self.SIZES, seed=1708, rolling=1)
        targets = [w.users, w.devices]
        config = w.config(self.tmp, "gap.yaml", targets=[t.config() for t in targets],
                          lockTimeout="60s")
        km = Keymig(self, config, self.dsn, w.secrets)
        proc = km.start("migrate", "--json", "--batch-size", "20", "--threads", "1",
                        "--max-rows-per-second", "200")
        locker = None
        try:
            group = wait_until(lambda: "exited" if proc.poll() is not None else
                               running_group(self.dsn), 30)
            self.assertTrue(group and group != "exited", "no running group appeared")
            first, second = group + "/mfa_users", group + "/devices"
            # The second part's planning reads devices: make it wait.
            locker = subprocess.Popen(
                ["psql", "-X", "-q", "-d", self.dsn, "-c",
                 "BEGIN; LOCK TABLE public.devices IN ACCESS EXCLUSIVE MODE; "
                 "SELECT pg_sleep(120)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, PGAPPNAME="kmt_locker"))
            self.assertTrue(wait_until(lambda: scalar(self.dsn, (
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = 'kmt_locker' AND l.granted"
                " AND l.relation = 'public.devices'::regclass")) == "1", 10))
            self.assertEqual(group_parts(self.dsn, group).get(first), "running",
                             "the first part ended before the lock was taken: make it slower")
            waiting = wait_until(lambda: proc.poll() is not None or (
                group_parts(self.dsn, group).get(first) == "completed" and scalar(self.dsn, (
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keymig'"
                    " AND wait_event_type = 'Lock'")) != "0"), 30)
            self.assertTrue(waiting and proc.poll() is None,
                            "keymig did not wait on the lock between the parts")
            self.assertNotIn(second, group_parts(self.dsn, group),
                             "the second part's run exists already")
            kill_hard(proc)
            self.assertEqual(km.finish(proc).returncode, -9)
        finally:
            if proc.poll() is None:
                kill_hard(proc)
            if locker is not None:
                psql(self.dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'kmt_locker'")
                locker.wait(timeout=30)
        self.assertTrue(wait_until(lambda: keymig_sessions(self.dsn) == 0, 30))
        self.assertEqual(group_parts(self.dsn, group), {first: "completed"})

        again = km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(again["run_id"], group,
                         "the re-run did not resume the group the killed process left "
                         "unfinished (its second part never started): %s" % _brief(again))
        for t in targets:
            self.assert_migrated(t)
        self.assertEqual(group_parts(self.dsn, group), {first: "completed", second: "completed"})
        self.assert_journal(w.devices, second)
        self.assert_journal(w.users, first)




class ReportsPerTargetTest(MultiTargetCase):
    """status, check-config --with-db and the metrics report every target."""

    DB = "kmt_multi_reports"
    SIZES = {
        "mfa_users": {"rolling": 30, "active": 10},
        "devices": {"rolling": 20, "empty": 5},
        "variable": {"rolling": 15, "outside": 25},
    }

    def test_status_check_config_and_metrics_per_target(self):
        w = self.make_world(self.SIZES, seed=1709, rolling=1)
        targets = [w.users, w.devices, w.variable]
        config = w.config(self.tmp, "reports.yaml", targets=[t.config() for t in targets])
        km = Keymig(self, config, self.dsn, w.secrets)

        c = km.run("check-config", "--with-db", "--json", expect=EXIT_OK).json
        counted = {t["name"]: t for t in c["preflight"]["targets"]}
        self.assertEqual(list(counted), ["mfa_users", "devices", "variable"])
        self.assertEqual(counted["variable"]["rows"], 15)  # the 25 outside are not counted
        self.assertEqual(counted["devices"]["unreadable"], 0)
        # A config that lost the rolling key: deploying it makes every target unreadable.
        short = w.config(self.tmp, "short.yaml", targets=[t.config() for t in targets])
        with open(short) as f:
            doc = json.load(f)
        doc["secretStore"].pop("rollingKeys", None)
        doc["secretStore"].pop("rollingKey", None)
        with open(short, "w") as f:
            json.dump(doc, f)
        r = Keymig(self, short, self.dsn, w.secrets).run("check-config", "--with-db", "--json",
                                                         expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual([t["unreadable"] for t in r["preflight"]["targets"]], [30, 20, 15])

        s = km.run("status", "--json", expect=EXIT_OK).json
        self.assertEqual([t["name"] for t in s["targets"]], ["mfa_users", "devices", "variable"])
        by_key = {t["name"]: {k["key"]: k["rows"] for k in t["by_key"]} for t in s["targets"]}
        self.assertEqual(by_key["devices"]["rolling_0"], 20)
        self.assertEqual(by_key["variable"]["rolling_0"], 15)

        textfile = os.path.join(self.tmp, "keymig.prom")
        km.run("migrate", "--metrics-textfile", textfile, expect=EXIT_OK)
        with open(textfile) as f:
            text = f.read()
        for label, n in (("public.mfa_users.mfa_secret", 30), ("public.devices.secret", 20),
                         ("public.variable.val", 15)):
            line = 'keymig_rows_total{outcome="rotated",target="%s"}' % label
            self.assertIn(line + " %d" % n, text, text[-3000:])
        promtool = "/usr/bin/promtool"
        if os.path.exists(promtool):
            check = subprocess.run([promtool, "check", "metrics"], input=text,
                                   capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


if __name__ == "__main__":
    unittest.main()
