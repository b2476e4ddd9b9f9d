"""Strict config where keymig reads (secretStore, userLogin.mfa), several and optional
rolling key files, and the warning for a values file holding keys that others can read,
driven through the binary as an operator would (docs/DESIGN.md section 1).

Every output is searched for every key and token the test made (keymig_testlib.Keymig)."""

import os
import stat
import unittest

import keymig_testlib as kt


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask must not decide the mode under test
    return path


class ConfigStrict(kt.DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = kt.KeySet(rolling=2)
        cls.secrets = kt.Secrets()
        for k in [cls.keys.active] + cls.keys.rolling:
            cls.secrets.add_key(k)
        cls.key_dir = os.path.join(cls.tmp, "keys")
        os.mkdir(cls.key_dir, 0o700)
        cls.active_file = write(os.path.join(cls.key_dir, "activeKey"), cls.keys.active + "\n")
        cls.rolling_files = [
            write(os.path.join(cls.key_dir, "rolling%d" % i), k + "\n")
            for i, k in enumerate(cls.keys.rolling)]

    def keymig(self, config, dsn=None):
        return kt.Keymig(self, config, dsn, self.secrets)

    def values(self, name, text, mode=0o600):
        return write(os.path.join(self.tmp, name), text, mode)

    # --- unknown keys ----------------------------------------------------------------

    def test_a_typo_under_secret_store_is_exit_2_naming_file_line_and_key(self):
        config = self.values("typo-store.yaml", (
            "secretStore:\n"
            "  activeKeyFile: %s\n"
            "  rolingKeyFile: %s\n" % (self.active_file, self.rolling_files[0])))
        r = self.keymig(config).run("check-config", expect=kt.EXIT_USAGE)
        self.assertIn(config + ":3 secretStore.rolingKeyFile: unknown key", r.stderr)
        self.assertIn("rollingKeyFile", r.stderr)  # the hint names the real key
        self.assertEqual(r.stdout, "")

    def test_a_typo_under_user_login_mfa_is_exit_2(self):
        config = self.values("typo-mfa.yaml", (
            "userLogin:\n"
            "  mfa:\n"
            "    enabled: true\n"
            "    mandatry: true\n"
            "secretStore:\n"
            "  activeKeyFile: %s\n" % self.active_file))
        r = self.keymig(config).run("check-config", "--json", expect=kt.EXIT_USAGE)
        self.assertFalse(r.json["ok"])
        self.assertEqual(r.json["exit_code"], kt.EXIT_USAGE)
        self.assertIn(config + ":4 userLogin.mfa.mandatry: unknown key", r.json["error"])

    def test_the_charts_own_keys_stay_ignored(self):
        config = self.values("chart.yaml", (
            "replicaCount: 2\n"
            "image: {repository: example/app, tag: '1.0'}\n"
            "userLogin:\n"
            "  passwordPolicy: {minLength: 12}\n"
            "  mfa: {enabled: true, mandatory: true}\n"
            "secretStore:\n"
            "  activeKeyFile: %s\n" % self.active_file))
        r = self.keymig(config).run("check-config", "--json", expect=kt.EXIT_OK)
        self.assertTrue(r.json["mfa"]["mandatory"])

    # --- rollingKeyFiles and optional key files ----------------------------------------

    def test_rolling_key_files_are_read_in_order(self):
        config = self.values("files.yaml", (
            "secretStore:\n"
            "  activeKeyFile: %s\n"
            "  rollingKeyFiles:\n"
            "    - %s\n"
            "    - {path: %s, optional: true}\n" % (self.active_file, *self.rolling_files)))
        r = self.keymig(config).run("check-config", "--json", expect=kt.EXIT_OK)
        keys = r.json["keys"]
        self.assertEqual([k["key"] for k in keys], ["active", "rolling[0]", "rolling[1]"])
        self.assertEqual([k.get("key_file") for k in keys],
                         [self.active_file] + self.rolling_files)
        self.assertEqual(r.json["warnings"], [])

    def test_a_missing_optional_rolling_key_file_is_a_warning_and_the_command_runs(self):
        gone = os.path.join(self.key_dir, "retired")  # the Secret item was deleted
        config = self.values("optional.yaml", (
            "secretStore:\n"
            "  activeKeyFile: %s\n"
            "  rollingKeyFile: {path: %s, optional: true}\n" % (self.active_file, gone)))
        r = self.keymig(config).run("check-config", "--json", expect=kt.EXIT_OK)
        self.assertEqual([k["key"] for k in r.json["keys"]], ["active"])
        self.assertTrue(any("optional key file " + gone + " does not exist" in w
                            for w in r.json["warnings"]), r.json["warnings"])

        # A real command against the database: rows under the active key alone, so the
        # retired key is not needed; keymig says the file is absent and does its job.
        db = kt.new_db("keymig_cfg_optional")
        self.addCleanup(kt.drop_db, "keymig_cfg_optional")
        fx = kt.UserFixture(self.keys, {"active": 20, "empty": 3})
        fx.load(db)
        r = self.keymig(config, db).run("scan", "--json", expect=kt.EXIT_OK)
        self.assertEqual(r.json["rows_scanned"], 23)
        self.assertIn("optional key file", r.stderr)

    def test_a_missing_key_file_not_marked_optional_is_exit_2_and_touches_nothing(self):
        gone = os.path.join(self.key_dir, "retired")
        config = self.values("required.yaml", (
            "secretStore:\n"
            "  activeKeyFile: %s\n"
            "  rollingKeyFiles: [%s]\n" % (self.active_file, gone)))
        db = kt.new_db("keymig_cfg_required")
        self.addCleanup(kt.drop_db, "keymig_cfg_required")
        kt.UserFixture(self.keys, {"active": 5}).load(db)
        r = self.keymig(config, db).run("migrate", expect=kt.EXIT_USAGE)
        self.assertIn(config + ":3 secretStore.rollingKeyFiles[0]: cannot read key file", r.stderr)
        self.assertIn("optional: true", r.stderr)
        self.assertEqual(kt.scalar(db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'keymig'"),
                         "0")

    # --- values files holding keys ------------------------------------------------------

    def test_a_values_file_with_inline_keys_readable_by_others_is_warned_about(self):
        text = 'secretStore:\n  activeKey: "%s"\n  rollingKeys: ["%s"]\n' % (
            self.keys.active, self.keys.rolling[0])
        config = self.values("inline-open.yaml", text, 0o644)
        self.assertTrue(os.stat(config).st_mode & stat.S_IROTH)
        r = self.keymig(config).run("check-config", expect=kt.EXIT_OK)
        self.assertIn(config + ": holds keys (secretStore) and is readable by others (mode 0644)",
                      r.stdout)

        closed = self.values("inline-closed.yaml", text, 0o600)
        r = self.keymig(closed).run("check-config", "--json", expect=kt.EXIT_OK)
        self.assertEqual(r.json["warnings"], [])

        # Key files only: a world-readable values file holds nothing secret.
        files_only = self.values("files-open.yaml", "secretStore:\n  activeKeyFile: %s\n" %
                                 self.active_file, 0o644)
        r = self.keymig(files_only).run("check-config", "--json", expect=kt.EXIT_OK)
        self.assertEqual([w for w in r.json["warnings"] if "readable" in w], [])


if __name__ == "__main__":
    unittest.main()
