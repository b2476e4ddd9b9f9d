"""Where keymig keeps its keys, seen from outside the process: in pages the kernel leaves
out of core dumps (MADV_DONTDUMP) and locks in RAM (mlock), with a warning when the limit
forbids locking. A core the operator allowed (KEYMIG_ALLOW_CORE_DUMPS=1), taken with gdb's
gcore from a `keymig serve` that has just migrated rows, holds no key: neither its text nor
its 32 bytes nor either 16-byte half."""

import base64
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

from keymig_testlib import (BINARY, UNDER_ASAN, DbTestCase, Fernet, KeySet, UserFixture,
                            check_all_rotated, clean_env, enqueue, new_db, new_key,
                            start_serve, wait_request, wait_until)

MARKER = "keymig-core-control-7d1f3a"


def mappings(pid):
    """(start, end, VmFlags set) for each mapping in /proc/PID/smaps."""
    out, current = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                current = [int(m.group(1), 16), int(m.group(2), 16), set()]
                out.append(current)
            elif line.startswith("VmFlags:") and current is not None:
                current[2] = set(line.split()[1:])
    return out


def key_needles(key_text):
    """Every form a key could be found in: its text with and without '=', its bytes, and
    each half (signing key, encryption key)."""
    raw = base64.urlsafe_b64decode(key_text)
    return {"text": key_text.encode(), "unpadded text": key_text.rstrip("=").encode(),
            "32 bytes": raw, "signing key": raw[:16], "encryption key": raw[16:]}


def write_key_file(directory, name, key):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return path


def gcore(pid, directory):
    prefix = os.path.join(directory, "core")
    done = subprocess.run(["gcore", "-o", prefix, str(pid)], capture_output=True, text=True,
                          timeout=300)
    path = "%s.%d" % (prefix, pid)
    if done.returncode != 0 or not os.path.exists(path):
        raise AssertionError("gcore failed: %s" % (done.stdout + done.stderr)[-2000:])
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def key_pages(pid):
    """keymig's own dump-excluded mappings: private, writable memory (the kernel's vvar
    and vdso pages are excluded too, but they are I/O or PFN mappings)."""
    return [(lo, hi, flags) for lo, hi, flags in mappings(pid)
            if "dd" in flags and "wr" in flags and not flags & {"io", "pf"}]


@unittest.skipIf(UNDER_ASAN, "AddressSanitizer makes mlock a no-op and maps terabytes of its own "
                             "memory; the Release build runs these")
class KeyMemoryTest(DbTestCase):

    def start_inspect(self, env_keys, user=None, memlock=None):
        """`keymig inspect -` waiting on its stdin, keys from the environment."""
        cmd = [self.binary, "inspect", "-"]
        if user is not None:
            cmd = ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid),
                   "--clear-groups", "--"] + cmd
        if memlock is not None:
            cmd = ["prlimit", "--memlock=%d:%d" % (memlock, memlock), "--"] + cmd
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=clean_env(env_keys), cwd=self.run_dir)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        # prlimit and setpriv exec keymig in the same process.
        self.assertTrue(wait_until(lambda: self.cmdline(proc.pid).startswith(
            self.binary.encode() + b"\0") and self.has_key_pages(proc.pid), 10))
        return proc

    @staticmethod
    def cmdline(pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                return f.read()
        except OSError:
            return b""

    @staticmethod
    def has_key_pages(pid):
        try:
            return bool(key_pages(pid))
        except OSError:
            return False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        os.chmod(cls.tmp, 0o755)
        # A copy anyone may run: the memlock case runs it as another user.
        # Its own directory: keymig reads ./values.yaml, and the serve case writes one.
        cls.run_dir = os.path.join(cls.tmp, "inspect")
        os.mkdir(cls.run_dir, 0o755)
        cls.binary = os.path.join(cls.run_dir, "keymig")
        shutil.copy2(BINARY, cls.binary)
        os.chmod(cls.binary, 0o755)

    def test_key_pages_are_left_out_of_dumps_and_locked(self):
        active = new_key()
        proc = self.start_inspect({"KEYMIG_ACTIVE_KEY": active, "KEYMIG_ROLLING_KEYS": new_key()})
        dd = key_pages(proc.pid)
        self.assertTrue(dd, "no mapping of keymig is excluded from core dumps")
        if os.geteuid() == 0:  # root may lock memory whatever RLIMIT_MEMLOCK says
            self.assertTrue(all("lo" in flags for _, _, flags in dd), dd)
        out, err = proc.communicate(Fernet(active.encode()).encrypt(b"JBSWY3DPEHPK3PXP") + b"\n",
                                    timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn(b"active", out)
        self.assertNotIn(b"key_memory_not_locked", err)

    def test_a_memlock_limit_that_forbids_locking_gets_a_warning_and_the_keys_still_work(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to run keymig as another user")
        active, rolling = new_key(), new_key()
        token = Fernet(rolling.encode()).encrypt(b"JBSWY3DPEHPK3PXP")
        proc = self.start_inspect({"KEYMIG_ACTIVE_KEY": active, "KEYMIG_ROLLING_KEYS": rolling},
                                  user=pwd.getpwnam("nobody"), memlock=0)
        dd = key_pages(proc.pid)
        self.assertTrue(dd)
        self.assertFalse(any("lo" in flags for _, _, flags in dd), dd)
        out, err = proc.communicate(token + b"\n", timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn(b"rolling", out)
        self.assertIn(b"key_memory_not_locked", err)
        self.assertIn(b"RLIMIT_MEMLOCK", err)
        self.assertEqual(err.count(b"key_memory_not_locked"), 1, err)
        for secret in (active, rolling):
            self.assertNotIn(secret.encode(), out + err)

    def test_a_core_of_serve_after_a_migration_holds_no_key(self):
        dsn = new_db("key_memory_core")
        keys = KeySet(rolling=2)
        fx = UserFixture(keys, {"rolling0": 300, "rolling1": 200, "active": 50})
        fx.load(dsn)
        # The active key from the environment (as a Kubernetes Secret arrives), the
        # rolling keys from key files: both ways keymig reads a key.
        files = [write_key_file(self.tmp, "rolling%d.key" % i, k)
                 for i, k in enumerate(keys.rolling)]
        config = os.path.join(self.tmp, "values.yaml")
        with open(config, "w") as f:
            f.write("secretStore:\n  rollingKeyFile: %s\n" % files[0])
        os.chmod(config, 0o600)
        # The second rolling key: KEYMIG_ROLLING_KEYS replaces the files' list.
        env = {"KEYMIG_ACTIVE_KEY": keys.active, "KEYMIG_ROLLING_KEYS": ",".join(keys.rolling),
               "KEYMIG_ALLOW_CORE_DUMPS": "1"}
        serve = start_serve(self, config, dsn, fx.secrets,
                            extra_args=["--instance", MARKER, "--poll-interval", "60"], env=env)
        rid = enqueue(dsn, "migrate")
        state, result, _ = wait_request(dsn, rid, timeout=120)
        self.assertEqual(state, "done", result)
        self.assertEqual(result["rotated"], 500, result)
        check_all_rotated(self, dsn, keys, fx, result["run_id"])

        core = gcore(serve.proc.pid, tempfile.mkdtemp(dir=self.tmp))
        # The control: the dump holds the process's own memory (its argv, its heap).
        self.assertIn(MARKER.encode(), core)
        self.assertGreater(len(core), 4 << 20)
        found = []
        for name, key in [("active", keys.active)] + [
                ("rolling[%d]" % i, k) for i, k in enumerate(keys.rolling)]:
            for form, needle in key_needles(key).items():
                if needle in core:
                    found.append("%s %s at %d" % (name, form, core.index(needle)))
        self.assertEqual(found, [], "key material in the core of keymig serve")


if __name__ == "__main__":
    unittest.main()
