"""The keymig process, seen from outside: no key in /proc/PID/environ once read, no core
file, not dumpable (so not ptrace-able by the same user), unless the operator opts in."""

import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from keymig_testlib import BINARY, UNDER_ASAN, Fernet, clean_env, new_key, wait_until


def read(path):
    with open(path, "rb") as f:
        return f.read()


# Execs argv[2:] with the environment given as argv[1], one entry a line, kept as it is:
# os.execve takes a mapping, which cannot hold a name twice.
EXEC_RAW_ENV = """
import ctypes, sys
strings = lambda xs: (ctypes.c_char_p * (len(xs) + 1))(*[x.encode() for x in xs], None)
ctypes.CDLL(None).execve(sys.argv[2].encode(), strings(sys.argv[2:]),
                         strings(sys.argv[1].split("\\n")))
sys.exit(127)
"""


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

    def start(self, extra_env=None, user=None, raw_env=None):
        """`keymig inspect -`, keys from the environment, waiting on its stdin. raw_env:
        the environment as a list of NAME=value entries, exactly as execve gets it."""
        env = clean_env({"KEYMIG_ACTIVE_KEY": self.active,
                         "KEYMIG_ROLLING_KEYS": ",".join(self.rolling)})
        env.update(extra_env or {})
        if UNDER_ASAN:
            # ASan would turn the signal into its own report and abort, and it sets the
            # core limit to 0 itself; these tests are about what keymig does.
            env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":handle_segv=0:disable_coredump=0"
        cmd = [self.binary, "inspect", "-"]
        if raw_env is not None:
            cmd = ["python3", "-c", EXEC_RAW_ENV, "\n".join(raw_env)] + cmd
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
        # setpriv and EXEC_RAW_ENV exec keymig in the same process: the pid is keymig's
        # once it runs.
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

    def test_a_key_variable_given_twice_leaves_the_environment_in_every_copy(self):
        # execve may pass a name twice (getenv reads the first); the kernel shows both.
        second = new_key()
        raw_env = ["PATH=" + os.environ.get("PATH", "/usr/bin:/bin"),
                   "KEYMIG_ACTIVE_KEY=" + self.active,
                   "KEYMIG_ROLLING_KEYS=" + ",".join(self.rolling),
                   "KEYMIG_ACTIVE_KEY=" + second, "KEYMIG_ROLLING_KEYS=" + second]
        proc = self.start(raw_env=raw_env)
        keys = {"active": self.active, "second copy": second, "rolling[0]": self.rolling[0],
                "rolling[1]": self.rolling[1]}
        shown = lambda: [name for name, k in keys.items()
                         if k.encode() in read("/proc/%d/environ" % proc.pid)]
        self.assertTrue(wait_until(lambda: not shown(), 10), "still in environ: %s" % shown())
        # The first of each is the one keymig uses, as getenv would have read it.
        self.finish(proc)

    def test_a_crash_leaves_no_core_file_unless_the_operator_opts_in(self):
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
        if pattern.startswith("|") or "/" in pattern:
            raise unittest.SkipTest("core_pattern %r does not write into the cwd" % pattern)
        for opt_in, dumped in (({}, False), ({"KEYMIG_ALLOW_CORE_DUMPS": "1"}, True)):
            for f in os.listdir(self.tmp):
                if f.startswith("core"):
                    os.unlink(os.path.join(self.tmp, f))
            proc = self.start(opt_in)
            # Started up: its keys have left the environment.
            wait_until(lambda: self.active.encode() not in read("/proc/%d/environ" % proc.pid),
                       10)
            proc.send_signal(signal.SIGSEGV)
            proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, -signal.SIGSEGV)
            cores = [f for f in os.listdir(self.tmp) if f.startswith("core")]
            # The opt-in is the control: the kernel does write a core here when allowed.
            self.assertEqual(bool(cores), dumped, (opt_in, cores))
            for f in cores:
                os.unlink(os.path.join(self.tmp, f))

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
