"""A real Docker engine for one test, confined to the namespaces the test runs in.

The caller runs under `unshare -n -m --propagation private`: the engine's bridge, veths, iptables rules and
mounts exist only there. This module refuses to run in the host's network or mount namespace, hides the paths
dockerd and containerd insist on writing (/etc/docker/key.json, /run/docker/plugins, /run/containerd/s) under
tmpfs mounts of that private mount namespace, keeps every other file under one temporary directory, puts the
containers' cgroups under the test's own cgroup, and stops everything by PID at the end, also on failure.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
# Paths the engine writes whatever its options say; each gets a tmpfs in the private mount namespace.
HIDDEN = ["/etc/docker", "/run/docker", "/run/containerd"]


def private_namespaces():
    """Why this process is not in a fresh network namespace and a private mount namespace, or None. A fresh
    network namespace has no interface but lo; in a private mount namespace no mount propagates (no `shared:`)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if line.strip()]
    if names != ["lo"]:
        return f"this network namespace has interfaces besides lo ({', '.join(names)})"
    for line in open("/proc/self/mountinfo"):
        if " shared:" in line.split(" - ")[0]:
            return "mounts here propagate to other namespaces (shared:)"
    return None


def own_cgroup():
    """The test's cgroup: the memory controller's path on cgroup v1, the unified one on v2."""
    unified, memory = None, None
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            unified = path
        elif "memory" in controllers.split(","):
            memory = path
    path = memory if memory is not None else unified or "/"
    return path.rstrip("/")


def cgroup_mounts():
    """Every cgroup hierarchy's mount point (v1 controllers and the unified one)."""
    out = []
    for line in open("/proc/self/mounts"):
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            out.append(fields[1])
    return out


class Engine:
    def __init__(self, log=print):
        why = private_namespaces()
        if why:
            raise SystemExit(f"engine.py must run under unshare -n -m --propagation private: {why}")
        self.log = log
        self.work = tempfile.mkdtemp(prefix="portcullis-docker-")
        self.sock = f"{self.work}/docker.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.created_dirs = []
        self.cgroup_parent = f"{own_cgroup()}/portcullis-docker-{os.getpid()}"
        self.cgroup_existing = set()
        self.pid = None

    # Setting up and tearing down

    def start(self):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for d in HIDDEN:
            if not os.path.isdir(d):
                os.makedirs(d)
                self.created_dirs.append(d)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", d], check=True)
        # Which directories of the cgroup parent's path exist already (left alone at the end).
        for mount in cgroup_mounts():
            parts = self.cgroup_parent.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                p = os.path.join(mount, *parts[:i])
                if os.path.isdir(p):
                    self.cgroup_existing.add(p)
        args = [DOCKERD, "--data-root", f"{self.work}/data", "--exec-root", f"{self.work}/exec",
                "-H", f"unix://{self.sock}", "--pidfile", f"{self.work}/docker.pid",
                "--cgroup-parent", self.cgroup_parent, "--log-level", "warn"]
        self.dockerd_log = open(f"{self.work}/dockerd.log", "w")
        proc = subprocess.Popen(args, stdout=self.dockerd_log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = proc.pid
        self.proc = proc
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({proc.returncode}):\n{self.tail_log()}")
            r = subprocess.run([DOCKER, "version", "--format", "{{.Server.Version}}"], env=self.env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                self.version = r.stdout.strip()
                return
            time.sleep(0.5)
        raise RuntimeError(f"dockerd did not answer within 60 s:\n{self.tail_log()}")

    def tail_log(self, n=40):
        try:
            return "".join(open(f"{self.work}/dockerd.log").readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        """Removes every container, stops dockerd by PID, kills what is left in this mount namespace, removes
        the cgroups and files it made. Safe to call twice and after a failed start."""
        if self.pid is not None:
            ids = subprocess.run([DOCKER, "ps", "-aq"], env=self.env, capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run([DOCKER, "rm", "-f", *ids], env=self.env, capture_output=True, timeout=120)
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
            self.pid = None
        # containerd and its shims stop with dockerd; anything still in this mount namespace is ours.
        me = os.stat("/proc/self/ns/mnt").st_ino
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    if os.stat(f"/proc/{entry}/ns/mnt").st_ino == me:
                        os.kill(int(entry), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        self.remove_cgroups()
        # The engine's mounts under the work directory (overlays, nsfs files under exec/netns), deepest first;
        # the directory itself is no mount point, so `umount -R` on it would do nothing.
        mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
        for m in sorted((m for m in mounts if m.startswith(self.work + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        if os.path.exists(self.work):
            self.log(f"could not remove {self.work} entirely")
        for d in HIDDEN:
            subprocess.run(["umount", "-l", d], capture_output=True)
        for d in self.created_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.created_dirs = []

    def remove_cgroups(self):
        parts = self.cgroup_parent.strip("/").split("/")
        for mount in cgroup_mounts():
            base = os.path.join(mount, *parts)
            if not os.path.isdir(base):
                continue
            for root, dirs, _ in os.walk(base, topdown=False):
                for d in dirs:
                    try:
                        os.rmdir(os.path.join(root, d))
                    except OSError:
                        pass
            for i in range(len(parts), 0, -1):
                p = os.path.join(mount, *parts[:i])
                if p in self.cgroup_existing:
                    break
                try:
                    os.rmdir(p)
                except OSError:
                    break

    # Using it

    def docker(self, *args, check=True, timeout=600, input=None):
        r = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def inspect(self, name):
        return json.loads(self.docker("inspect", name).stdout)[0]

    def import_image(self, tarball, tag, changes=()):
        args = ["import"]
        for c in changes:
            args += ["--change", c]
        self.docker(*args, tarball, tag, timeout=1200)
