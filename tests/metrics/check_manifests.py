"""Checks deploy/kubernetes and the Dockerfile: valid YAML, non-root, read-only root
filesystem, keys only from the Secret as files (the rolling key item optional), a CA for
PGSSLMODE=verify-full, Jobs whose retried pods resume their run, an Indexed Job of N
workers, not both scheduled serve and the CronJob in the kustomization, the commands and
probes the runbooks rely on, and an image on Debian 12 that the manifests name.
Usage: python3 check_manifests.py <source dir> [<keymig binary>]. With the binary, every
shared library it needs must come from a package the image installs.
Prints problems, exits 1 if any."""
import glob
import os
import re
import shlex
import subprocess
import sys

import yaml

FERNET_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=$")
# The downward API labels that name a pod's Job (job-name on every version,
# batch.kubernetes.io/job-name since 1.27).
JOB_NAME_FIELDS = ("metadata.labels['job-name']", "metadata.labels['batch.kubernetes.io/job-name']")
# In every Debian 12 image: what the essential packages need.
BASE_PACKAGES = {"libc6", "libgcc-s1"}
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


def words_of(c):
    return " ".join(c.get("command", []) + c.get("args", []))


def secret_items(volume, secret_name):
    """(key, path, optional) of each item a volume takes from the Secret, or None when
    it takes nothing from it. A plain secret volume or a projected one."""
    sources = []
    if "secret" in volume:
        s = volume["secret"]
        sources.append((s.get("secretName"), s))
    for src in volume.get("projected", {}).get("sources", []):
        if "secret" in src:
            sources.append((src["secret"].get("name"), src["secret"]))
    items = None
    for name, s in sources:
        if name != secret_name:
            continue
        items = items or []
        for item in s.get("items", []):
            items.append((item["key"], item["path"], s.get("optional") is True))
    return items


def provided_files(volume):
    """The file names a configMap, secret or projected volume provides (items only)."""
    out = set()
    for src in [volume] + volume.get("projected", {}).get("sources", []):
        for kind in ("configMap", "secret"):
            for item in src.get(kind, {}).get("items", []):
                out.add(item["path"])
    return out


def container_env(c, cms):
    env = {}
    for ref in c.get("envFrom", []):
        name = ref.get("configMapRef", {}).get("name")
        if name in cms:
            env.update({k: str(v) for k, v in cms[name].get("data", {}).items()})
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def job_name_vars(c):
    return {e["name"] for e in c.get("env", [])
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") in JOB_NAME_FIELDS}


def uses_job_name(words, flag, names):
    return any(re.search(rf"{flag} (\"\$\{{?{n}\}}?\"|\$\{{?{n}\}}?|\$\({n}\))(\s|;|$)", words)
               for n in names)


def key_file_path(setting):
    """A key file setting's path: `PATH` or `{path: PATH, optional: true}`."""
    if isinstance(setting, dict):
        return setting.get("path") or ""
    return setting or ""


def check_keys(where, spec, c, config):
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    key_volumes = {n: secret_items(v, "keymig-keys") for n, v in volumes.items()
                   if secret_items(v, "keymig-keys") is not None}
    if len(key_volumes) != 1:
        problem(where, "keys are not a volume from the Secret keymig-keys")
        return
    (volume, items), = key_volumes.items()
    store = config["secretStore"]
    active = store.get("activeKeyFile", "/etc/keymig/keys/activeKey")
    rolling = key_file_path(store.get("rollingKeyFile"))
    key_dir = os.path.dirname(active)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    if key_dir not in mounts or mounts[key_dir]["name"] != volume:
        problem(where, f"{key_dir} is not the mounted key Secret")
    elif mounts[key_dir].get("readOnly") is not True:
        problem(where, "key mount is not read-only")
    by_path = {path: (key, optional) for key, path, optional in items}
    name = os.path.basename(active)
    if name not in by_path:
        problem(where, f"the key Secret has no item {name} (secretStore.activeKeyFile)")
    elif by_path[name][1]:
        problem(where, "the active key item is optional: a pod without it cannot work")
    if rolling:
        if os.path.dirname(rolling) != key_dir:
            problem(where, "secretStore.rollingKeyFile is not in the key mount")
        name = os.path.basename(rolling)
        if name not in by_path:
            problem(where, f"the key Secret has no item {name} (secretStore.rollingKeyFile)")
        elif not by_path[name][1]:
            problem(where, "the rolling key item is not optional: once the old key is retired"
                    " and its item deleted, the pod does not start")
        elif not (isinstance(store.get("rollingKeyFile"), dict)
                  and store["rollingKeyFile"].get("optional") is True):
            problem(where, "secretStore.rollingKeyFile is not optional: once the old key is"
                    " retired and its item deleted, keymig refuses the missing file")


def check_ca(where, spec, c, cms):
    env = container_env(c, cms)
    if env.get("PGSSLMODE") != "verify-full":
        problem(where, "PGSSLMODE is not verify-full")
    ca = env.get("PGSSLROOTCERT")
    if not ca:
        problem(where, "no PGSSLROOTCERT: no CA for PGSSLMODE=verify-full")
        return
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    m = mounts.get(os.path.dirname(ca))
    if m is None or os.path.basename(ca) not in provided_files(volumes.get(m["name"], {})):
        problem(where, f"PGSSLROOTCERT {ca} is not a mounted ConfigMap or Secret item")


def check_workload(where, doc, config, cms):
    spec = pod_spec(doc)
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot is not true")
    if not psc.get("runAsUser"):
        problem(where, "pod runs as uid 0 or unset")
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "service account token is mounted")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
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
        words = words_of(c)
        if any(FERNET_KEY.match(w) for w in words.split()):
            problem(cw, "a Fernet key on the command line")
        if "keymig" not in words:
            problem(cw, "does not run keymig")
        check_keys(cw, spec, c, config)
        check_ca(cw, spec, c, cms)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for path, m in mounts.items():
            if path.endswith(".yaml") and volumes.get(m["name"], {}).get("configMap", {}).get("name") != "keymig-config":
                problem(cw, f"{path} does not come from the ConfigMap keymig-config")
        if "/tmp" not in mounts:
            problem(cw, "no writable /tmp with a read-only root")
        # A Job's pods and its retries share the Job's name: as the run id, a retried pod
        # resumes its run and the pods of an Indexed Job share one.
        if doc["kind"] in ("Job", "CronJob") and "keymig migrate" in words:
            names = job_name_vars(c)
            if not uses_job_name(words, "--run-id", names):
                problem(cw, "migrate without --run-id of the Job's name (the job-name label):"
                        " a retried pod does not resume the Job's run")
            if "keymig verify" in words and not uses_job_name(words, "--run", names):
                problem(cw, "verify without --run of the Job's name")
    return spec


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def config_files(c):
    """The --config files a container names, as /etc/keymig/<item> of keymig-config."""
    args = c.get("command", []) + c.get("args", [])
    words = shlex.split(" ".join(args)) if args[:1] == ["/bin/sh"] else args
    return [os.path.basename(words[i + 1]) for i, w in enumerate(words[:-1]) if w == "--config"]


def applied_docs(kdir, where, seen=None):
    """The documents `kubectl apply -k kdir` applies (resources and components)."""
    seen = seen or set()
    path = next((os.path.join(kdir, n) for n in ("kustomization.yaml", "kustomization.yml",
                                                  "Kustomization") if os.path.exists(os.path.join(kdir, n))), None)
    if path is None or path in seen:
        return []
    seen.add(path)
    k = load_docs(path)[0]
    out = []
    for entry in (k.get("resources") or []) + (k.get("components") or []):
        target = os.path.normpath(os.path.join(kdir, entry))
        if os.path.isdir(target):
            out += applied_docs(target, where, seen)
        elif os.path.isfile(target):
            out += [(os.path.basename(target), d) for d in load_docs(target)]
        else:
            problem(where, f"lists {entry}, which does not exist")
    return out


def check_kustomizations(source, cms):
    kdir = os.path.join(source, "deploy", "kubernetes")
    for path in sorted(glob.glob(os.path.join(kdir, "**", "kustomization.yaml"), recursive=True)):
        where = os.path.relpath(path, source)
        docs = applied_docs(os.path.dirname(path), where)
        data = cms.get("keymig-config", {}).get("data", {})
        scheduled_serve = False
        for _, d in docs:
            if d["kind"] != "Deployment":
                continue
            for c in pod_spec(d)["containers"]:
                if "serve" not in words_of(c).split():
                    continue
                for item in config_files(c):
                    cfg = yaml.safe_load(data.get(item, "")) or {}
                    if (cfg.get("keyMigration") or {}).get("schedule"):
                        scheduled_serve = True
        cronjob = any("keymig migrate" in words_of(c) for _, d in docs if d["kind"] == "CronJob"
                      for c in pod_spec(d)["containers"])
        if scheduled_serve and cronjob:
            problem(where, "applies both keymig serve with a schedule and the CronJob:"
                    " the nightly migrate runs twice")
        if not docs:
            problem(where, "applies nothing")


def dockerfile_stages(text):
    """[(FROM image, [instructions])] with continuation lines joined and comments gone."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    stages = []
    for line in lines:
        word = line.split()[0].upper()
        if word == "FROM":
            stages.append((line.split()[1], []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def installed_packages(instructions):
    out = set()
    for line in instructions:
        if not line.upper().startswith("RUN"):
            continue
        for part in re.split(r"&&|;", line[3:]):
            w = part.split()
            if "apt-get" in w and "install" in w:
                out.update(x for x in w[w.index("install") + 1:] if not x.startswith("-"))
    return out


def package_of(lib_path):
    for path in (lib_path, os.path.realpath(lib_path)):
        for p in (path, re.sub(r"^/usr/lib/", "/lib/", path)):
            r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":")[0].strip()
    return None


SANITIZER_RUNTIMES = ("libasan.", "libubsan.", "libtsan.", "liblsan.")


def check_binary_libraries(binary, packages):
    """Every library the binary needs directly comes from a package the image installs."""
    needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if needed.returncode != 0 or ldd.returncode != 0:
        problem(binary, "readelf or ldd failed: " + needed.stderr + ldd.stderr)
        return
    paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", ldd.stdout, re.M))
    for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed.stdout):
        # A sanitizer build (make test-asan, test-tsan) is never what the image ships.
        if lib.startswith(SANITIZER_RUNTIMES):
            continue
        if lib not in paths:
            problem(binary, f"needs {lib}, which ldd does not find")
            continue
        pkg = package_of(paths[lib])
        if pkg is None:
            problem(binary, f"needs {lib} ({paths[lib]}), which no Debian package holds")
        elif pkg.split(":")[0] not in packages | BASE_PACKAGES:
            problem("Dockerfile", f"the image does not install {pkg} (keymig needs {lib})")


def check_dockerfile(source, images, uids, binary):
    path = os.path.join(source, "Dockerfile")
    if not os.path.exists(path):
        problem("Dockerfile", "missing: nothing builds the image the manifests name")
        return
    with open(path) as f:
        text = f.read()
    stages = dockerfile_stages(text)
    if not stages:
        problem("Dockerfile", "no FROM")
        return
    for base, _ in stages:
        if not re.fullmatch(r"(docker\.io/(library/)?)?debian:(12|bookworm)([-.][\w.-]*)?(@sha256:[0-9a-f]{64})?", base):
            problem("Dockerfile", f"base {base} is not Debian 12")
    final = stages[-1][1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problem("Dockerfile", "the image runs as root")
    elif not users[-1].split(":")[0].isdigit() or {int(users[-1].split(":")[0])} != uids:
        problem("Dockerfile", f"USER {users[-1]} is not the manifests' runAsUser {sorted(uids)}")
    built = re.findall(r"docker build -t (\S+) \.", text)
    if len(built) != 1:
        problem("Dockerfile", "does not say which image it builds (`docker build -t IMAGE .`)")
    else:
        for image in sorted(images):
            if image != built[0]:
                problem("deploy/kubernetes", f"image {image} is not {built[0]}, the one the Dockerfile builds")
        with open(os.path.join(source, "CMakeLists.txt")) as f:
            version = re.search(r"project\(keymig VERSION (\S+)", f.read()).group(1)
        label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', text)
        if not built[0].endswith(":" + version) or not label or label.group(1) != version:
            problem("Dockerfile", f"the image's tag and version label are not keymig's version {version}")
    packages = installed_packages(final)
    if binary:
        check_binary_libraries(binary, packages)


def main(source, binary=None):
    docs = {}
    files = sorted(glob.glob(os.path.join(source, "deploy", "kubernetes", "*.yaml")))
    if not files:
        problem("deploy/kubernetes", "no manifests")
    for path in files:
        for doc in load_docs(path):
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
        if not key_file_path(store.get(key)).startswith("/etc/keymig/keys/"):
            problem("keymig-config values.yaml", f"secretStore.{key} is not under the key mount")
    push = yaml.safe_load(cms["keymig-config"]["data"]["push.yaml"])
    if not push["keyMigration"]["metrics"]["pushGateway"].startswith("http"):
        problem("push.yaml", "no Pushgateway URL")
    serve = yaml.safe_load(cms["keymig-config"]["data"]["serve.yaml"])
    if not serve["keyMigration"]["metrics"]["listen"].endswith(":9464"):
        problem("serve.yaml", "serve does not listen on 9464")

    kinds = {k: len(v) for k, v in docs.items()}
    for kind, count in (("CronJob", 1), ("Job", 3), ("Deployment", 1), ("Service", 1)):
        if kinds.get(kind) != count:
            problem("deploy/kubernetes", f"expected {count} {kind}, found {kinds.get(kind, 0)}")

    images, uids = set(), set()
    indexed = []
    for kind in ("CronJob", "Job", "Deployment"):
        for name, doc in docs.get(kind, []):
            spec = check_workload(f"{name} {kind}", doc, config, cms)
            images.update(c["image"] for c in spec["containers"])
            uids.add(spec.get("securityContext", {}).get("runAsUser"))
            words = words_of(spec["containers"][0])
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
            if kind == "Job" and doc["spec"].get("completionMode") == "Indexed":
                indexed.append((name, doc, words))
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

    if not indexed:
        problem("deploy/kubernetes", "no Indexed Job (completionMode: Indexed) of N workers on one run")
    for name, doc, words in indexed:
        spec = doc["spec"]
        n = spec.get("completions")
        if not isinstance(n, int) or n < 2 or spec.get("parallelism") != n:
            problem(name, "parallelism and completions are not one N of at least 2")
        if "keymig migrate" not in words:
            problem(name, "the workers do not run keymig migrate")
        if "keymig verify" in words and not re.search(
                r"JOB_COMPLETION_INDEX\"?\s*=\s*\"?0\"?\s*\]\s*;?\s*then\s+keymig verify", words):
            problem(name, "every worker verifies: only pod 0 should, once the run is complete")

    check_kustomizations(source, cms)
    check_dockerfile(source, images, uids, binary)

    for p in problems:
        print(p)
    print(f"checked {len(files)} files, {sum(kinds.values())} documents, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
