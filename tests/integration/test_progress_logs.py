"""Progress where there is no terminal (issue 19): with stderr not a terminal (a Job's
log), scan, migrate and verify log a `progress` line every --progress-interval seconds
(default 30; 0: none); on a terminal the redrawn progress line ends with its pass, so the
log line that follows starts on a line of its own.
"""

import os
import pty
import re
import subprocess
import unittest

from keymig_testlib import (BINARY, EXIT_OK, EXIT_USAGE, DbTestCase, Keymig, KeySet,
                            UserFixture, clean_env, drop_db, log_events, new_db,
                            write_config)

COUNTS = {"active": 100, "rolling0": 1900}
# A log line in text format starts with its timestamp.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class ProgressLogsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, COUNTS, seed=1919)
        cls.config = write_config(cls.tmp, cls.keys.active, cls.keys.rolling)

    def setUp(self):
        self.dbname = "kmt_progress_logs"
        self.dsn = new_db(self.dbname)
        self.fx.load(self.dsn)
        self.km = Keymig(self, self.config, self.dsn, self.fx.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def test_without_a_terminal_a_throttled_migrate_logs_progress_every_interval(self):
        # 2000 rows at 500 rows/s: about 4 s, so 1 s gives a few lines.
        r = self.km.run("migrate", "--json", "--log-format", "json", "--batch-size", "100",
                        "--max-rows-per-second", "500", "--progress-interval", "1",
                        expect=EXIT_OK)
        lines = log_events(r.stderr, "progress")
        self.assertGreaterEqual(len(lines), 2, r.stderr[-3000:])
        done = [line["rows_done"] for line in lines]
        self.assertEqual(done, sorted(done), "rows_done goes backwards: %s" % done)
        self.assertLess(done[0], len(self.fx.rows))
        for line in lines:
            self.assertEqual(line["rows_total"], len(self.fx.rows))
            self.assertTrue(0 <= line["percent"] <= 100, line)
            self.assertIn("rows_per_second", line)
            self.assertIn("eta_seconds", line)
        # Without a terminal nothing is redrawn in place.
        self.assertNotIn("\r", r.stderr)

    def test_the_interval_is_a_flag_with_bounds_and_0_turns_the_lines_off(self):
        r = self.km.run("scan", "--log-format", "json", "--max-rows-per-second", "1000",
                        "--progress-interval", "0", expect=EXIT_OK)
        self.assertEqual(log_events(r.stderr, "progress"), [])
        r = self.km.run("verify", "--log-format", "json", "--max-rows-per-second", "1000",
                        "--batch-size", "100", "--progress-interval", "1",
                        expect=(EXIT_OK, 4))
        self.assertGreaterEqual(len(log_events(r.stderr, "progress")), 1, r.stderr[-3000:])
        for bad in ("-1", "86401", "soon"):
            self.km.run("migrate", "--progress-interval", bad, expect=EXIT_USAGE)
        self.assertIn("--progress-interval", self.km.run("migrate", "--help").stdout)

    def test_on_a_terminal_the_progress_line_ends_before_the_next_log_line(self):
        master, slave = pty.openpty()
        args = [BINARY, "migrate", "--config", self.config, "--dsn", self.dsn,
                "--batch-size", "200", "--max-rows-per-second", "4000"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave,
                                env=clean_env())
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        stdout = proc.stdout.read().decode()
        proc.stdout.close()
        self.assertEqual(proc.wait(timeout=120), EXIT_OK)
        stderr = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        for text in (stdout, stderr):
            self.assertEqual(self.fx.secrets.leaks(text), [])
        self.assertIn("rows/s", stderr, "no progress line on the terminal")
        # Each redraw starts with \r; the log lines after the last one must start a line.
        last_redraw = stderr.rindex("\r")
        tail = stderr[last_redraw + 1:]
        self.assertIn("\n", tail, "the last progress line never ends: %r" % tail[-300:])
        after = tail[tail.index("\n") + 1:]
        self.assertRegex(after, LOG_LINE, "no log line after the progress: %r" % tail)
        for line in after.splitlines():
            if line:
                self.assertRegex(line, "^" + LOG_LINE.pattern, "glued: %r" % line)
        # A terminal shows the redrawn line, not the periodic log lines.
        self.assertNotIn("progress rows_done", stderr)


if __name__ == "__main__":
    unittest.main()
