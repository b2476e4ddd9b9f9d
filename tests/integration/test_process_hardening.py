"""The keymig process, seen from outside: no key in /proc/PID/environ once read, no core
file, not dumpable (so not ptrace-able by the same user), unless the operator opts in."""

import os
import pwd
import resource
import shutil
import subprocess
import tempfile
import time
import unittest

from keymig_testlib import BINARY, Fernet, clean_env, new_key, wait_until


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ProcessHardeningTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.active, cls.rolling = new_key(), [new_key(), new_key()]
        cls.token = Fernet(cls.rolling[1].encode()).encrypt(b"JBSWY3DPEHPK3PXP").decode()
        # A copy anyone may run: the dumpable check runs it as another user.
        cls.tmp = tempfile.mkdtemp(prefix="keymig-proc-")
        os.chmod(cls.tmp, 0o755)
        cls.binary = os.path.join(cls.tmp, "keymig")
        shutil.copy2(BINARY, cls.binary)
        os.chmod(cls.binary, 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def start(self, extra_env=None, user=None):
        """`keymig inspect -`, keys from the environment, waiting on its stdin."""
        env = clean_env({"KEYMIG_ACTIVE_KEY": self.active,
                         "KEYMIG_ROLLING_KEYS": ",".join(self.rolling)})
        env.update(extra_env or {})
        cmd = [self.binary, "inspect", "-"]
        if user is not None:
            cmd = ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid),
                   "--clear-groups", "--"] + cmd

        def allow_cores():
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                                      resource.RLIM_INFINITY))

        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=self.tmp,
                                preexec_fn=allow_cores)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        # setpriv execs keymig in the same process: the pid is keymig's once it runs.
        wait_until(lambda: read("/proc/%d/cmdline" % proc.pid).startswith(
            self.binary.encode() + b"\0"), 10)
        return proc

    def finish(self, proc):
        out, err = proc.communicate((self.token + "\n").encode(), timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        # The keys were still there to use after they left the environment.
        self.assertIn(b"rolling", out)
        for secret in [self.active, self.token] + self.rolling:
            self.assertNotIn(secret.encode(), out + err)
        return err

    def test_the_keys_leave_the_environment_and_no_core_file_is_allowed(self):
        proc = self.start()
        pid = proc.pid
        # Read once keymig has started up (it moves the keys out before anything else).
        keys = [k.encode() for k in [self.active] + self.rolling]
        self.assertTrue(wait_until(
            lambda: not any(k in read("/proc/%d/environ" % pid) for k in keys), 10),
            "a key is still in /proc/PID/environ")
        limits = read("/proc/%d/limits" % pid).decode()
        core = [l for l in limits.splitlines() if l.startswith("Max core file size")][0]
        self.assertEqual(core.split()[4:6], ["0", "0"], core)
        self.finish(proc)
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith("core")], [])

    def test_core_dumps_only_when_the_operator_opts_in(self):
        proc = self.start({"KEYMIG_ALLOW_CORE_DUMPS": "1"})
        wait_until(lambda: self.active.encode() not in read("/proc/%d/environ" % proc.pid), 10)
        limits = read("/proc/%d/limits" % proc.pid).decode()
        core = [l for l in limits.splitlines() if l.startswith("Max core file size")][0]
        self.assertEqual(core.split()[4], "unlimited", core)
        err = self.finish(proc)
        self.assertIn(b"core dumps allowed", err)

    def test_not_dumpable_so_its_proc_files_are_roots(self):
        # The kernel gives a non-dumpable process's /proc files to root: run keymig as
        # another user (as root) or as ourselves, and look at who owns its environ.
        user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        for opt_in, owner in (({}, 0), ({"KEYMIG_ALLOW_CORE_DUMPS": "1"}, user.pw_uid)):
            proc = self.start(opt_in, user if os.geteuid() == 0 else None)
            environ = "/proc/%d/environ" % proc.pid
            self.assertTrue(wait_until(lambda: os.stat(environ).st_uid == owner, 10),
                            "%s is owned by %d, not %d (%s)" % (
                                environ, os.stat(environ).st_uid, owner, opt_in))
            time.sleep(0.2)
            self.assertEqual(os.stat(environ).st_uid, owner, opt_in)
            self.finish(proc)


if __name__ == "__main__":
    unittest.main()
