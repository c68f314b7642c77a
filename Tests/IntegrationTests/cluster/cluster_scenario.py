#!/usr/bin/env python3
"""A fleet on a real PostgreSQL: Debian's PostgreSQL started here (initdb in a temporary directory, a Unix socket
and 127.0.0.1 of this private namespace, stopped by PID), and Portcullis daemons each in a network namespace of
its own (`unshare -n`: their nftables tables are theirs), reaching PostgreSQL through the Unix socket.

usage: cluster_scenario.py BINARY CONFIG_DIR WORKDIR STORM
Run it under `unshare -n -m --propagation private` (it refuses otherwise). Prints one line per check and the
figures; exits non-zero at the first check that fails.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BINARY, CONFIG, WORK, STORM = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
PGBIN = next((d for d in ("/usr/lib/postgresql/%d/bin" % v for v in range(30, 9, -1)) if os.path.exists(d + "/initdb")), None)
T0 = time.monotonic()
PROCS = []


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


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


# MARK: the namespace and PostgreSQL

links = [l.split(":")[1].strip() for l in run("ip", "-o", "link").stdout.splitlines()]
check(links == ["lo"] and not run("nft", "list", "tables").stdout.strip(), "a private network namespace", links)
run("ip", "link", "set", "lo", "up")
check(PGBIN is not None, "PostgreSQL's server is installed (apt-get install postgresql)")

os.chmod(WORK, 0o755)
pgdata, pgsock = os.path.join(WORK, "pgdata"), os.path.join(WORK, "pgsock")
for d in (pgdata, pgsock):
    os.makedirs(d)
    shutil.chown(d, "postgres", "postgres")
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
r = run(*AS_POSTGRES, PGBIN + "/initdb", "-D", pgdata, "--auth-local=peer", "--auth-host=scram-sha-256", "-U", "postgres")
check(r.returncode == 0, "initdb", r.stderr)
with open(os.path.join(pgdata, "pg_hba.conf"), "w") as f:
    # The superuser by peer (this script, as postgres); the daemons' role by password, on the socket and on TCP.
    f.write("local all postgres peer\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
PORT = 54329
pg = None


def start_postgres(extra=()):
    global pg
    pg = subprocess.Popen(AS_POSTGRES + [PGBIN + "/postgres", "-D", pgdata, "-k", pgsock, "-p", str(PORT), "-c", "listen_addresses=127.0.0.1",
                                         "-c", "fsync=off", *extra],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "postgres.log"), "a"))
    PROCS.append(pg)
    check(wait(lambda: run(PGBIN + "/pg_isready", "-h", pgsock, "-p", str(PORT)).returncode == 0), "PostgreSQL answers",
          open(os.path.join(WORK, "postgres.log")).read())


def stop_postgres():
    pg.send_signal(signal.SIGINT)  # fast shutdown: sessions are ended
    pg.wait(30)


def psql(sql, db="fleet"):
    r = run(*AS_POSTGRES, PGBIN + "/psql", "-h", pgsock, "-p", str(PORT),
            "-d", db, "-U", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql)
    check(r.returncode == 0, "psql: " + sql[:60], r.stderr)
    return r.stdout.strip()


start_postgres()
PASSWORD = "a-fleet-password-for-the-test"
psql("CREATE ROLE portcullis LOGIN PASSWORD '%s'" % PASSWORD, db="postgres")
psql("CREATE DATABASE fleet", db="postgres")
schema = run(BINARY, "cluster-schema", "--role", "portcullis")
check(schema.returncode == 0 and "GRANT SELECT, INSERT ON portcullis_bans TO portcullis" in schema.stdout, "portcullis cluster-schema", schema.stderr)
psql(schema.stdout)
# Least privilege: the daemons' role may read and append bans, not rewrite or erase them.
check(psql("SELECT has_table_privilege('portcullis', 'portcullis_bans', 'UPDATE') OR has_table_privilege('portcullis', 'portcullis_bans', 'DELETE')")
      == "f", "the daemons' role cannot update or delete bans")

with open(os.path.join(WORK, "pg.password"), "w") as f:
    f.write(PASSWORD + "\n")
os.chmod(os.path.join(WORK, "pg.password"), 0o600)
with open(os.path.join(WORK, "wrong.password"), "w") as f:
    f.write("not-the-password\n")


# MARK: the nodes

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


class Node:
    def __init__(self, name, conninfo=None, password_file=None, own_namespace=True):
        self.name = name
        self.dir = os.path.join(WORK, name)
        self.conf = os.path.join(self.dir, "conf")
        self.log = os.path.join(self.dir, "mail.log")
        self.sock = os.path.join(self.dir, "api.sock")
        self.own_namespace = own_namespace
        shutil.copytree(CONFIG, self.conf)
        open(self.log, "w").close()
        conninfo = conninfo or "host=%s port=%d dbname=fleet user=portcullis" % (pgsock, PORT)
        with open(os.path.join(self.conf, "portcullis.local"), "w") as f:
            f.write("[Definition]\ndbfile = %s/db.sqlite3\n[api]\nlisten =\nsocket = %s\nmetrics_kernel_interval = 0\nevents_buffer = 67108864\n"
                    "[cluster]\nconninfo = %s\npassword_file = %s\nnode = %s\n"
                    % (self.dir, self.sock, conninfo, password_file or os.path.join(WORK, "pg.password"), name))
        with open(os.path.join(self.conf, "jail.d", "test.local"), "w") as f:
            f.write("[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\n" % self.log)
        self.proc = None
        self.events = []  # (monotonic time, type, ip)
        self.start()

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.err = open(os.path.join(self.dir, "serve.log"), "a")
        wrapper = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] if self.own_namespace else []
        self.proc = subprocess.Popen(wrapper + [BINARY, "serve", "--config", self.conf], stderr=self.err, stdout=subprocess.DEVNULL)
        PROCS.append(self.proc)
        check(wait(lambda: os.path.exists(self.sock) or self.proc.poll() is not None) and self.proc.poll() is None,
              "node %s started" % self.name, self.output())
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
                        self.events.append((time.monotonic(), kind, json.loads(line[6:])["ip"]))
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)

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


def connected(*nodes):
    return wait(lambda: all(n.cluster().get("connected") for n in nodes), 30)


a, b, c = Node("mx1"), Node("mx2"), Node("mx3")
check(connected(a, b, c), "three nodes connected", [n.cluster() for n in (a, b, c)])
check(wait(lambda: {p["node"] for p in a.cluster()["peers"]} >= {"mx2", "mx3"}, 40), "mx1 sees its peers", a.cluster())
status = run(BINARY, "status", "--config", a.conf)
check("Cluster:\tconnected as mx1" in status.stdout and "mx2" in status.stdout, "portcullis status shows the cluster", status.stdout + status.stderr)

# MARK: propagation, one ban at a time

singles = ["198.51.100.%d" % i for i in range(1, 101)]
for ip in singles:
    a.failures([ip])
    time.sleep(0.02)
check(wait(lambda: set(singles) <= b.kernel() and set(singles) <= c.kernel()), "100 bans of mx1 in the kernel sets of mx2 and mx3",
      len(set(singles) & b.kernel()))
check(set(singles) <= a.kernel(), "and in mx1's own")


def first(node, kind, ip):
    return next((t for t, k, i in node.events if k == kind and i == ip), None)


delays = sorted((first(n, "ban", ip) - first(a, "ban", ip)) * 1000 for n in (b, c) for ip in singles)
p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1]
print("figure: propagation mx1 -> mx2/mx3 over %d bans: p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (len(delays), p50, p99, delays[-1]), flush=True)
log_b = b.output()
check("Ban 198.51.100.1 " in log_b and "(from node mx1)" in log_b, "mx2 logs the ban with its origin")
check(psql("SELECT count(*) FROM portcullis_bans WHERE origin = 'mx1' AND kind = 'ban'") == "100", "100 rows in the shared table, none twice")

# MARK: an unban anywhere is an unban everywhere

st, _ = c.api("DELETE", "/bans/198.51.100.7")
check(st == 200, "DELETE /bans/198.51.100.7 on mx3")
check(wait(lambda: "198.51.100.7" not in a.kernel() and "198.51.100.7" not in b.kernel()), "gone from mx1 and mx2")
check(a.api("GET", "/bans/198.51.100.7")[0] == 404, "mx1 has no ban of it", a.api("GET", "/bans/198.51.100.7"))
check("Unban 198.51.100.7 (from node mx3)" in a.output(), "mx1 logs the unban with its origin")
time.sleep(0.5)
check(psql("SELECT count(*) FROM portcullis_bans WHERE kind = 'unban'") == "1", "one unban row: the others did not send it again")

# MARK: a storm

storm = ["2001:db8:5::%x" % i for i in range(1, STORM + 1)]
t = time.monotonic()
a.failures(storm)
wanted = set(storm)
check(wait(lambda: wanted <= a.kernel(), 120), "%d bans on mx1" % STORM)
t_a = max(first(a, "ban", ip) or 0 for ip in storm[-50:])
check(wait(lambda: wanted <= b.kernel() and wanted <= c.kernel(), 120), "%d bans replicated to mx2 and mx3" % STORM)
done = [max(t for t, k, i in n.events if k == "ban") for n in (b, c)]
first_a = min(first(a, "ban", ip) for ip in storm[:50])
print("figure: storm of %d bans: on mx1 in %.2f s after the lines were written; on mx2 and mx3 %.2f s after mx1's first ban "
      "(%.2f s after its last)" % (STORM, t_a - t, max(done) - first_a, max(done) - t_a), flush=True)

# MARK: PostgreSQL down

stop_postgres()
check(wait(lambda: not a.cluster()["connected"]), "mx1 notices PostgreSQL is gone")
outage = ["203.0.113.%d" % i for i in range(1, 51)]
a.failures(outage)
check(wait(lambda: set(outage) <= a.kernel()), "mx1 still bans on its own")
check(wait(lambda: a.cluster()["queued"] == 50), "50 changes queued on mx1", a.cluster())
health = a.api("GET", "/health")[1]
check(health["status"] == "degraded" and any("cluster" in p for p in health.get("problems", [])), "/health says why", health)
start_postgres()
check(wait(lambda: set(outage) <= b.kernel() and set(outage) <= c.kernel(), 60), "after PostgreSQL is back, mx2 and mx3 catch up")
check(a.cluster()["queued"] == 0, "mx1's queue is empty")
check(psql("SELECT count(*) FROM (SELECT token FROM portcullis_bans GROUP BY origin, token HAVING count(*) > 1) d") == "0", "no row twice")
banned_b = [e for e in b.events if e[1] == "ban" and e[2] in set(outage)]
check(len(banned_b) == 50, "each caught-up ban applied once on mx2", len(banned_b))

# MARK: a node away, and a node that starts fresh

c.stop(signal.SIGKILL)
away = ["198.51.100.%d" % i for i in range(201, 221)]
b.failures(away)
check(wait(lambda: set(away) <= a.kernel()), "bans of mx2 reach mx1 while mx3 is down")
c.events = []
c.start()
check(wait(lambda: set(away) <= c.kernel(), 60), "mx3, restarted, has what it missed")
check("198.51.100.7" not in c.kernel(), "and not the address unbanned before")
d = Node("mx4")
in_force = set(singles) - {"198.51.100.7"} | wanted | set(outage) | set(away)
check(wait(lambda: in_force <= d.kernel(), 120), "a fresh node loads the %d bans in force" % len(in_force), len(in_force - d.kernel()))
check("198.51.100.7" not in d.kernel(), "but not the one lifted")
check("first synchronisation" in d.output(), "and says so")

# MARK: an address mx3 allowlists

st, _ = c.api("POST", "/allowlist", {"ip": "192.0.2.77", "comment": "our office"})
check(st == 201, "192.0.2.77 allowlisted on mx3", st)
a.failures(["192.0.2.77"])
check(wait(lambda: "192.0.2.77" in b.kernel()), "mx1's ban of 192.0.2.77 reaches mx2")
check(wait(lambda: "not applied here: protected by" in c.output()), "mx3 says it does not apply it")
check("192.0.2.77" not in c.kernel(), "and its set does not hold it")

# MARK: a wrong password, TLS required: clear errors, local banning unaffected

e = Node("mx5", password_file=os.path.join(WORK, "wrong.password"))
check(wait(lambda: "password authentication failed" in (e.cluster().get("error") or "")), "a wrong password: libpq's error in /cluster",
      e.cluster())
check("password authentication failed" in e.output(), "and in the log")
e.failures(["198.51.100.250"])
check(wait(lambda: "198.51.100.250" in e.kernel()), "and it still bans on its own")
e.stop()
for n in (a, b, c, d):
    n.stop()
stop_postgres()

# TLS: a server certificate for 127.0.0.1 from a CA made here; TCP only with TLS (hostssl).
tls = os.path.join(WORK, "tls")
os.makedirs(tls)
def ossl(*args):
    r = run("openssl", *args, cwd=tls)
    check(r.returncode == 0, "openssl " + args[0], r.stderr)
ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Portcullis test CA")
ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
with open(os.path.join(tls, "ext.cnf"), "w") as f:
    f.write("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
for fn in ("server.key", "server.pem"):
    shutil.chown(os.path.join(tls, fn), "postgres", "postgres")
os.chmod(os.path.join(tls, "server.key"), 0o600)
with open(os.path.join(pgdata, "pg_hba.conf"), "w") as f:
    f.write("local all postgres peer\nlocal all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
start_postgres(["-c", "ssl=on", "-c", "ssl_cert_file=" + os.path.join(tls, "server.pem"), "-c", "ssl_key_file=" + os.path.join(tls, "server.key")])
verified = Node("mx6", conninfo="host=127.0.0.1 port=%d dbname=fleet user=portcullis sslmode=verify-full sslrootcert=%s" % (PORT, os.path.join(tls, "ca.pem")),
                own_namespace=False)
check(connected(verified), "sslmode=verify-full against the test CA: connected", verified.cluster())
check(psql("SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'portcullis'") == "t", "over TLS")
check(wait(lambda: "2001:db8:5::1" in verified.kernel(), 60), "and it loaded the fleet's bans")
verified.stop()
plain = Node("mx7", conninfo="host=127.0.0.1 port=%d dbname=fleet user=portcullis sslmode=disable" % PORT, own_namespace=False)
check(wait(lambda: "no encryption" in (plain.cluster().get("error") or "")), "TLS required by the server, sslmode=disable: a clear error",
      plain.cluster())
plain.failures(["198.51.100.251"])
check(wait(lambda: "198.51.100.251" in plain.kernel()), "and it still bans on its own")
plain.stop()
stop_postgres()
print("all passed", flush=True)
