"""Checks deploy/kubernetes: valid YAML, non-root, read-only root filesystem, keys only
from the Secret as files, the commands and probes the runbooks rely on.
Usage: python3 check_manifests.py <source dir>. Prints problems, exits 1 if any."""
import glob
import os
import re
import sys

import yaml

FERNET_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=$")
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def pod_spec(doc):
    kind = doc["kind"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in ("Job", "Deployment"):
        return doc["spec"]["template"]["spec"]
    return None


def check_workload(where, doc, config):
    spec = pod_spec(doc)
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot is not true")
    if not psc.get("runAsUser"):
        problem(where, "pod runs as uid 0 or unset")
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "service account token is mounted")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    secret_volumes = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "keymig-keys"]
    if len(secret_volumes) != 1:
        problem(where, "keys are not a volume from the Secret keymig-keys")
    for c in spec["containers"]:
        cw = f"{where} container {c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problem(cw, "root filesystem is not read-only")
        if csc.get("allowPrivilegeEscalation") is not False:
            problem(cw, "privilege escalation allowed")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            problem(cw, "capabilities not all dropped")
        for e in c.get("env", []):
            name, value = e["name"], e.get("value")
            if name.startswith("KEYMIG_") and "KEY" in name:
                problem(cw, f"key passed in env {name}")
            if value is not None and FERNET_KEY.match(str(value)):
                problem(cw, f"env {name} holds a literal Fernet key")
            if name == "PGPASSWORD" and value is not None:
                problem(cw, "database password is a literal value")
        words = " ".join(c.get("command", []) + c.get("args", []))
        if any(FERNET_KEY.match(w) for w in words.split()):
            problem(cw, "a Fernet key on the command line")
        if "keymig" not in words:
            problem(cw, "does not run keymig")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        key_dir = os.path.dirname(config["secretStore"].get("activeKeyFile", "/etc/keymig/keys/activeKey"))
        if key_dir not in mounts or mounts[key_dir]["name"] not in secret_volumes:
            problem(cw, f"{key_dir} is not the mounted key Secret")
        elif mounts[key_dir].get("readOnly") is not True:
            problem(cw, "key mount is not read-only")
        for path, m in mounts.items():
            if path.endswith(".yaml") and volumes.get(m["name"], {}).get("configMap", {}).get("name") != "keymig-config":
                problem(cw, f"{path} does not come from the ConfigMap keymig-config")
        if "/tmp" not in mounts:
            problem(cw, "no writable /tmp with a read-only root")
    return spec


def main(source):
    docs = {}
    files = sorted(glob.glob(os.path.join(source, "deploy", "kubernetes", "*.yaml")))
    if not files:
        problem("deploy/kubernetes", "no manifests")
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                for field in ("apiVersion", "kind"):
                    if field not in doc:
                        problem(path, f"a document without {field}")
                docs.setdefault(doc["kind"], []).append((os.path.basename(path), doc))

    cms = {d["metadata"]["name"]: d for _, d in docs.get("ConfigMap", [])}
    config = yaml.safe_load(cms["keymig-config"]["data"]["values.yaml"])
    store = config["secretStore"]
    for inline in ("activeKey", "rollingKey", "rollingKeys"):
        if inline in store:
            problem("keymig-config values.yaml", f"secretStore.{inline} inline: keys belong in the Secret")
    for key in ("activeKeyFile", "rollingKeyFile"):
        if not store.get(key, "").startswith("/etc/keymig/keys/"):
            problem("keymig-config values.yaml", f"secretStore.{key} is not under the key mount")
    push = yaml.safe_load(cms["keymig-config"]["data"]["push.yaml"])
    if not push["keyMigration"]["metrics"]["pushGateway"].startswith("http"):
        problem("push.yaml", "no Pushgateway URL")
    serve = yaml.safe_load(cms["keymig-config"]["data"]["serve.yaml"])
    if not serve["keyMigration"]["metrics"]["listen"].endswith(":9464"):
        problem("serve.yaml", "serve does not listen on 9464")

    kinds = {k: len(v) for k, v in docs.items()}
    for kind, count in (("CronJob", 1), ("Job", 2), ("Deployment", 1), ("Service", 1)):
        if kinds.get(kind) != count:
            problem("deploy/kubernetes", f"expected {count} {kind}, found {kinds.get(kind, 0)}")

    for kind in ("CronJob", "Job", "Deployment"):
        for name, doc in docs.get(kind, []):
            spec = check_workload(f"{name} {kind}", doc, config)
            words = " ".join(spec["containers"][0].get("command", []) + spec["containers"][0].get("args", []))
            if kind == "CronJob":
                if doc["spec"].get("concurrencyPolicy") != "Forbid":
                    problem(name, "overlapping scheduled runs allowed")
                if not re.search(r"keymig migrate .*&&\s*keymig verify", words):
                    problem(name, "does not run migrate then verify")
                if "push.yaml" not in words:
                    problem(name, "does not push metrics")
            if kind == "Job" and "incident" in name:
                if not re.search(r"keymig check-config .*keymig migrate .*keymig verify", words):
                    problem(name, "does not run check-config, migrate, verify")
            if kind == "Job" and "finalize" in name and "keymig finalize --run" not in words:
                problem(name, "does not run finalize --run")
            if kind == "Deployment":
                c = spec["containers"][0]
                if c.get("args", [None])[0] != "serve":
                    problem(name, "does not run keymig serve")
                if [p["containerPort"] for p in c.get("ports", [])] != [9464]:
                    problem(name, "metrics port is not 9464")
                if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                    problem(name, "liveness probe is not /healthz")
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    problem(name, "readiness probe is not /readyz")

    for p in problems:
        print(p)
    print(f"checked {len(files)} files, {sum(kinds.values())} documents, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
