"""A fleet for tests and benchmarks: Debian's PostgreSQL started in a directory of ours (initdb, a Unix socket and
127.0.0.1 of this private namespace, run as `postgres` through setpriv, stopped by PID), and Portcullis nodes each
in a network namespace of their own (`unshare -n`: their own nftables tables), reaching PostgreSQL through its Unix
socket (a path, which crosses network namespaces). Used by cluster_scenario.py and bench/cluster_bench.py; both run
under `unshare -n -m --propagation private`.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

T0 = time.monotonic()
PROCS = []
PGBIN = next((d for d in ("/usr/lib/postgresql/%d/bin" % v for v in range(30, 9, -1)) if os.path.exists(d + "/initdb")), None)
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
PASSWORD = "a-fleet-password-for-the-test"


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


def check(condition, what, detail=""):
    if not condition:
        print("FAIL", what, str(detail)[-6000:], flush=True)
        cleanup()
        sys.exit(1)
    print("ok  ", what, f"({time.monotonic() - T0:.1f} s)", flush=True)


def wait(condition, timeout=30, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


def private_namespace():
    links = [l.split(":")[1].strip() for l in run("ip", "-o", "link").stdout.splitlines()]
    check(links == ["lo"] and not run("nft", "list", "tables").stdout.strip(), "a private network namespace", links)
    run("ip", "link", "set", "lo", "up")


class Postgres:
    """A PostgreSQL cluster of our own in `work`, with the fleet's database, the daemons' role and the schema made by
    `portcullis cluster-schema` (as the issue's set-up says: by the owner, the daemons' role granted what it uses)."""

    PORT = 54329

    def __init__(self, work, binary):
        check(PGBIN is not None, "PostgreSQL's server is installed (apt-get install postgresql)")
        os.chmod(work, 0o755)
        self.work = work
        self.data, self.sock = os.path.join(work, "pgdata"), os.path.join(work, "pgsock")
        for d in (self.data, self.sock):
            os.makedirs(d)
            shutil.chown(d, "postgres", "postgres")
        r = run(*AS_POSTGRES, PGBIN + "/initdb", "-D", self.data, "--auth-local=peer", "--auth-host=scram-sha-256", "-U", "postgres")
        check(r.returncode == 0, "initdb", r.stderr)
        # The superuser by peer (this script, as postgres); the daemons' role by password, on the socket and on TCP.
        self.hba("local all postgres peer\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.proc = None
        self.start()
        self.psql("CREATE ROLE portcullis LOGIN PASSWORD '%s'" % PASSWORD, db="postgres")
        self.psql("CREATE DATABASE fleet", db="postgres")
        schema = run(binary, "cluster-schema", "--role", "portcullis")
        check(schema.returncode == 0 and "GRANT SELECT, INSERT ON portcullis_bans TO portcullis" in schema.stdout, "portcullis cluster-schema",
              schema.stderr)
        self.psql(schema.stdout)
        self.password_file = self.secret("pg.password", PASSWORD)

    def secret(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    def hba(self, text):
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write(text)

    def start(self, extra=()):
        self.proc = subprocess.Popen(
            AS_POSTGRES + [PGBIN + "/postgres", "-D", self.data, "-k", self.sock, "-p", str(self.PORT), "-c", "listen_addresses=127.0.0.1",
                           "-c", "fsync=off", *extra],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, "postgres.log"), "a"))
        PROCS.append(self.proc)
        check(wait(lambda: run(PGBIN + "/pg_isready", "-h", self.sock, "-p", str(self.PORT)).returncode == 0), "PostgreSQL answers",
              open(os.path.join(self.work, "postgres.log")).read())

    def stop(self):
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: sessions are ended
        self.proc.wait(30)

    def psql(self, sql, db="fleet"):
        r = run(*AS_POSTGRES, PGBIN + "/psql", "-h", self.sock, "-p", str(self.PORT), "-d", db, "-U", "postgres", "-At", "-v", "ON_ERROR_STOP=1",
                "-c", sql)
        check(r.returncode == 0, "psql: " + sql.splitlines()[0][:60], r.stderr)
        return r.stdout.strip()

    @property
    def conninfo(self):
        return "host=%s port=%d dbname=fleet user=portcullis" % (self.sock, self.PORT)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


class Node:
    """A Portcullis daemon with a dovecot jail (maxretry 1) on a log of its own; `conninfo` None: no [cluster]."""

    def __init__(self, binary, config, work, name, conninfo, password_file=None, own_namespace=True, follow=True, jail_extra=""):
        self.binary, self.name = binary, name
        self.dir = os.path.join(work, name)
        self.conf = os.path.join(self.dir, "conf")
        self.log = os.path.join(self.dir, "mail.log")
        self.sock = os.path.join(self.dir, "api.sock")
        self.own_namespace = own_namespace
        self.follows = follow
        shutil.copytree(config, self.conf)
        open(self.log, "w").close()
        with open(os.path.join(self.conf, "portcullis.local"), "w") as f:
            f.write("[Definition]\ndbfile = %s/db.sqlite3\n[api]\nlisten =\nsocket = %s\nmetrics_kernel_interval = 0\nevents_buffer = 67108864\n"
                    % (self.dir, self.sock))
            if conninfo:
                f.write("[cluster]\nconninfo = %s\npassword_file = %s\nnode = %s\n" % (conninfo, password_file, name))
        with open(os.path.join(self.conf, "jail.d", "test.local"), "w") as f:
            f.write("[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\n%s" % (self.log, jail_extra))
        self.proc = None
        self.events = []  # (monotonic time, type, ip)
        self.seen = {}  # (type, ip): when first told
        self.start()

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.err = open(os.path.join(self.dir, "serve.log"), "a")
        wrapper = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] if self.own_namespace else []
        self.proc = subprocess.Popen(wrapper + [self.binary, "serve", "--config", self.conf], stderr=self.err, stdout=subprocess.DEVNULL)
        PROCS.append(self.proc)
        check(wait(lambda: os.path.exists(self.sock) or self.proc.poll() is not None) and self.proc.poll() is None,
              "node %s started" % self.name, self.output())
        if self.follows:
            threading.Thread(target=self.follow, daemon=True).start()

    def output(self):
        self.err.flush()
        with open(os.path.join(self.dir, "serve.log")) as f:
            return f.read()

    def api(self, method, path, body=None):
        c = UnixHTTP(self.sock)
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read().decode()
        c.close()
        return r.status, (json.loads(data) if data.startswith("{") else data)

    def cluster(self):
        return self.api("GET", "/cluster")[1]

    def follow(self):
        """Records the ban and unban events of GET /events as they arrive (the propagation figures)."""
        proc = self.proc
        while proc.poll() is None:
            try:
                c = UnixHTTP(self.sock)
                c.request("GET", "/events")
                r = c.getresponse()
                kind = None
                while True:
                    line = r.readline()
                    if not line:
                        break
                    line = line.decode().rstrip("\r\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind in ("ban", "unban"):
                        event = (time.monotonic(), kind, json.loads(line[6:])["ip"])
                        self.events.append(event)
                        self.seen.setdefault((kind, event[2]), event[0])
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)

    def first(self, kind, ip):
        return self.seen.get((kind, ip))

    def failures(self, ips):
        stamp = time.strftime("%b %d %H:%M:%S")
        with open(self.log, "a") as f:
            for i, ip in enumerate(ips):
                f.write("%s pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=%s, "
                        "lip=127.0.0.1, session=<c%d>\n" % (stamp, ip, i))

    def nft(self, *args):
        prefix = ["nsenter", "-t", str(self.proc.pid), "-n"] if self.own_namespace else []
        return run(*prefix, "nft", *args)

    def kernel(self):
        """The addresses in the dovecot jail's sets of this node's own table."""
        found = set()
        for family in ("v4", "v6"):
            r = self.nft("-j", "list", "set", "inet", "portcullis", "dovecot-" + family)
            if r.returncode != 0:
                continue
            for item in json.loads(r.stdout)["nftables"]:
                for e in item.get("set", {}).get("elem", []):
                    v = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                    found.add(v if isinstance(v, str) else "%s/%d" % (v["prefix"]["addr"], v["prefix"]["len"]))
        return found

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def connected(*nodes, timeout=30):
    return wait(lambda: all(n.cluster().get("connected") for n in nodes), timeout)
