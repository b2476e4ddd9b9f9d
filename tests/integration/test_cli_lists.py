"""The user-list flags (--ids, --usernames) of migrate, scan, verify, status and reset-mfa
share one rule: comma-separated, repeatable, spaces around an item ignored, an empty item
refused at parse time (exit 2) before any configuration or database is read."""

import os
import subprocess
import tempfile
import unittest

BINARY = os.environ.get("KEYMIG_BINARY", "build/keymig")
EXIT_USAGE = 2
COMMANDS = [("migrate",), ("scan",), ("verify",), ("status",), ("reset-mfa", "--yes")]
RULE = "an empty item is an error"


class ListFlags(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(BINARY, os.X_OK):
            raise unittest.SkipTest(f"KEYMIG_BINARY {BINARY} is not built")
        cls.dir = tempfile.TemporaryDirectory(prefix="keymig-lists-")

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def run_keymig(self, *args):
        # No config, no key, no database: whatever gets past parsing stops at the config.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KEYMIG_") and not k.startswith("PG")}
        return subprocess.run([BINARY, *args], capture_output=True, text=True, env=env,
                              cwd=self.dir.name, timeout=60)

    def commands_with(self, flag):
        for command in COMMANDS:
            help_text = self.run_keymig(command[0], "--help").stdout
            if flag in help_text:
                yield command, help_text

    def test_every_list_flag_states_the_rule_in_its_help(self):
        seen = 0
        for flag in ("--ids", "--usernames"):
            for command, help_text in self.commands_with(flag):
                with self.subTest(command=command[0], flag=flag):
                    line = next(l for l in help_text.splitlines() if l.strip().startswith(flag))
                    rest = help_text[help_text.index(line):]
                    self.assertIn(RULE, " ".join(rest.split()[:40]))
                    seen += 1
        self.assertGreaterEqual(seen, 6)

    def test_empty_items_are_usage_errors_before_anything_is_read(self):
        for flag in ("--ids", "--usernames"):
            for command, _ in self.commands_with(flag):
                for value in ("", ",", "a,", ",a", "a,,b", "a, ,b", " ", "\t"):
                    with self.subTest(command=command[0], flag=flag, value=value):
                        proc = self.run_keymig(*command, flag, value)
                        self.assertEqual(proc.returncode, EXIT_USAGE, proc.stderr)
                        self.assertIn("empty item", proc.stderr)
                        self.assertIn(flag, proc.stderr)
                        self.assertNotIn("configuration", proc.stderr)

    def test_items_with_spaces_around_them_and_repeated_flags_parse(self):
        for flag in ("--ids", "--usernames"):
            for command, _ in self.commands_with(flag):
                for args in ([flag, " 1 , 2 "], [flag, "1", flag, "2,3"], [flag, "\ta\t"]):
                    with self.subTest(command=command[0], args=args):
                        proc = self.run_keymig(*command, *args)
                        # Past the parser: it now wants a configuration (reset-mfa, which
                        # needs no keys, wants a database).
                        self.assertEqual(proc.returncode, EXIT_USAGE, proc.stderr)
                        self.assertNotIn("empty item", proc.stderr)
                        self.assertRegex(proc.stderr, "configuration|no database configured")

    def test_items_are_separated_by_commas_not_by_arguments(self):
        for command, _ in self.commands_with("--ids"):
            with self.subTest(command=command[0]):
                proc = self.run_keymig(*command, "--ids", "1", "2")
                self.assertEqual(proc.returncode, EXIT_USAGE, proc.stderr)
                self.assertNotIn("configuration", proc.stderr)


if __name__ == "__main__":
    unittest.main()
