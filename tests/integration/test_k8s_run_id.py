"""The Kubernetes Jobs' command lines, run as their pods would run them.

Each test reads the container's command out of its manifest in deploy/kubernetes, so it
follows the manifest: /bin/sh -c, the environment the pod gets from the downward API
(JOB_NAME from the `job-name` label, JOB_COMPLETION_INDEX in an Indexed Job), the
ConfigMap's values.yaml with its paths moved under a temporary /etc/keymig. A retried pod
is the same command started again after a kill -9 of the first: it must resume the Job's
run, named after the Job, so that there is one run, complete, each row journaled once.
"""

import json
import os
import signal
import subprocess
import tempfile
import unittest

import yaml

from keymig_testlib import (BINARY, SOURCE_DIR, EXIT_OK, DbTestCase, KeySet, UserFixture,
                            check_all_rotated, clean_env, drop_db, journal_count, new_db, query,
                            scalar, wait_until)

ROWS = 20_000
MANIFESTS = os.path.join(SOURCE_DIR, "deploy", "kubernetes")
JOB_NAME_LABEL = "metadata.labels['job-name']"


def manifest_docs(name):
    with open(os.path.join(MANIFESTS, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_spec(doc):
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def container(name, kind):
    docs = [d for d in manifest_docs(name) if d["kind"] == kind]
    if len(docs) != 1:
        raise AssertionError("%s: expected one %s, found %d" % (name, kind, len(docs)))
    return pod_spec(docs[0])["containers"][0]


class Pod:
    """One pod's command: /bin/sh -c SCRIPT with the pod's downward-API environment."""

    def __init__(self, tc, c, etc, job_name, index=None):
        argv = c.get("command", []) + c.get("args", [])
        tc.assertEqual(argv[:2], ["/bin/sh", "-c"], "the test runs shell command lines")
        self.tc = tc
        self.script = argv[2].replace("/etc/keymig/", etc + "/")
        env = {"PATH": os.path.dirname(os.path.abspath(BINARY)) + os.pathsep +
               os.environ.get("PATH", "/usr/bin:/bin")}
        for e in c.get("env", []):
            field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field == JOB_NAME_LABEL:
                env[e["name"]] = job_name
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        self.env = clean_env(env)
        self.proc = None

    def start(self):
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        # Its own process group, so that kill -9 takes the shell and keymig together, as
        # the kubelet does with a pod.
        self.proc = subprocess.Popen(["/bin/sh", "-c", self.script], stdout=self.out,
                                     stderr=self.err, env=self.env, start_new_session=True)
        return self

    def kill_hard(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.out.close()
        self.err.close()

    def finish(self, timeout=600):
        self.proc.wait(timeout=timeout)
        self.out.seek(0)
        self.err.seek(0)
        self.stdout, self.stderr = self.out.read(), self.err.read()
        self.out.close()
        self.err.close()
        for stream, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            leaks = self.tc.fx.secrets.leaks(text)
            self.tc.assertFalse(leaks, "the pod leaked %s on %s" % (leaks, stream))
        return self.proc.returncode

    def summaries(self):
        """The JSON objects on stdout, one per keymig command that ran with --json (the
        others print text)."""
        out, text, at = [], self.stdout, 0
        decoder = json.JSONDecoder()
        while True:
            at = text.find("{", at)
            if at < 0:
                return out
            if at == 0 or text[at - 1] == "\n":
                doc, at = decoder.raw_decode(text, at)
                out.append(doc)
            else:
                at += 1

    def describe(self):
        return "exit %s\nstdout: %s\nstderr: %s" % (
            self.proc.returncode, self.stdout[-2000:], self.stderr[-3000:])


class JobRunIdTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = KeySet(rolling=1)
        cls.fx = UserFixture(cls.keys, {"rolling0": ROWS - 300, "active": 100, "empty": 200},
                             seed=19)
        cls.etc = os.path.join(cls.tmp, "etc", "keymig")
        os.makedirs(os.path.join(cls.etc, "keys"))
        for name, key in (("activeKey", cls.keys.active), ("rollingKey", cls.keys.rolling[0])):
            fd = os.open(os.path.join(cls.etc, "keys", name), os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")  # a mounted Secret item usually ends in a newline
        # No Pushgateway here: the metrics go nowhere.
        with open(os.path.join(cls.etc, "push.yaml"), "w") as f:
            f.write("keyMigration: {}\n")

    def setUp(self):
        self.dsn = new_db("kmt_k8s")
        self.fx.load(self.dsn)
        self.addCleanup(drop_db, "kmt_k8s")
        self.write_values()

    def write_values(self):
        """The ConfigMap's values.yaml, pointed at the test database and throttled so that
        the kill lands mid-run."""
        cm = [d for d in manifest_docs("configmap.yaml") if d["metadata"]["name"] ==
              "keymig-config"][0]
        values = yaml.safe_load(cm["data"]["values.yaml"])
        for k, v in values["secretStore"].items():
            if isinstance(v, str) and v.startswith("/etc/keymig/"):
                values["secretStore"][k] = v.replace("/etc/keymig/", self.etc + "/")
            elif isinstance(v, dict) and v.get("path", "").startswith("/etc/keymig/"):
                v["path"] = v["path"].replace("/etc/keymig/", self.etc + "/")  # optional: true
        km = values["keyMigration"]
        km["database"]["dsn"] = self.dsn
        km["batchSize"] = 500
        km["maxRowsPerSecond"] = 4000
        with open(os.path.join(self.etc, "values.yaml"), "w") as f:
            json.dump(values, f)

    def runs(self):
        return query(self.dsn, "SELECT run_id::text, state FROM keymig.runs ORDER BY 1")

    def assert_one_completed_run(self, job_name):
        self.assertEqual(self.runs(), [(job_name, "completed")],
                         "the Job's pods must share one run, named after the Job")
        check_all_rotated(self, self.dsn, self.keys, self.fx, job_name)

    def processes_holding_chunks(self):
        if scalar(self.dsn, "SELECT to_regclass('keymig.chunks') IS NOT NULL") != "t":
            return 0
        # leased_by is host:pid:lane
        return int(scalar(self.dsn, "SELECT count(DISTINCT split_part(leased_by, ':', 2))"
                          " FROM keymig.chunks WHERE state = 'leased'"))

    def kill_mid_run(self, pod, holders=1):
        pod.start()
        moved = wait_until(lambda: pod.proc.poll() is not None or (
            journal_count(self.dsn) >= 2000 and self.processes_holding_chunks() >= holders), 120)
        self.assertTrue(moved, "the first pod made no progress")
        self.assertIsNone(pod.proc.poll(), "the first pod ended before the test could kill it")
        pod.kill_hard()
        self.assertLess(journal_count(self.dsn), len(self.fx.by_kind("rolling")),
                        "killed after the end")

    def check_retry_resumes(self, manifest, kind, job_name):
        c = container(manifest, kind)
        self.kill_mid_run(Pod(self, c, self.etc, job_name))
        retry = Pod(self, c, self.etc, job_name).start()
        self.assertEqual(retry.finish(), EXIT_OK, retry.describe())
        self.assertIn("run_resumed", retry.stderr, "the retried pod did not resume a run")
        self.assert_one_completed_run(job_name)
        return retry

    def test_a_retried_cronjob_pod_resumes_the_jobs_run(self):
        self.check_retry_resumes("cronjob.yaml", "CronJob", "keymig-rotation-29000000")

    def test_a_retried_incident_pod_resumes_the_jobs_run(self):
        retry = self.check_retry_resumes("job-incident.yaml", "Job", "keymig-incident-x7k2p")
        migrate, verify = retry.summaries()
        self.assertEqual(migrate["run_id"], "keymig-incident-x7k2p")
        self.assertEqual(verify["needs_rolling"], 0, retry.describe())

    def test_the_indexed_jobs_pods_share_one_run_and_a_retry_rejoins_it(self):
        c = container("job-workers.yaml", "Job")
        job = "keymig-workers-q4m8z"
        first = Pod(self, c, self.etc, job, index=0).start()
        # Pod 1 is killed mid-run and retried while pod 0 works on.
        self.kill_mid_run(Pod(self, c, self.etc, job, index=1), holders=2)
        retry = Pod(self, c, self.etc, job, index=1).start()
        self.assertEqual(retry.finish(), EXIT_OK, retry.describe())
        self.assertEqual(first.finish(), EXIT_OK, first.describe())
        self.assert_one_completed_run(job)
        # Pod 0 verifies once the run is complete; the others do not verify.
        self.assertEqual(len(retry.summaries()), 1, retry.describe())
        migrate, verify = first.summaries()
        self.assertEqual(migrate["run_id"], job)
        self.assertEqual(verify["needs_rolling"], 0, first.describe())
        self.assertEqual(verify["ok"], len(self.fx.by_kind("rolling")) +
                         len(self.fx.by_kind("active")), first.describe())


if __name__ == "__main__":
    unittest.main()
