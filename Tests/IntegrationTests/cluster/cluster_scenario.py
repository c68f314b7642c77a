#!/usr/bin/env python3
"""A fleet on a real PostgreSQL (fleet.py: PostgreSQL started here, Portcullis nodes each in a network namespace of
its own): propagation, a storm, an unban anywhere, PostgreSQL stopped and started, a node away and a fresh one, an
allowlisted address, a wrong password, TLS.

usage: cluster_scenario.py BINARY CONFIG_DIR WORKDIR STORM
Run it under `unshare -n -m --propagation private` (it refuses otherwise). Prints one line per check and the
figures; exits non-zero at the first check that fails.
"""
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import Node as FleetNode, Postgres, check, cleanup, connected, private_namespace, run, wait  # noqa: E402

BINARY, CONFIG, WORK, STORM = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
T0 = time.monotonic()

private_namespace()
pg = Postgres(WORK, BINARY)
psql = pg.psql
# Least privilege: the daemons' role may read and append bans, not rewrite or erase them.
check(psql("SELECT has_table_privilege('portcullis', 'portcullis_bans', 'UPDATE') OR has_table_privilege('portcullis', 'portcullis_bans', 'DELETE')")
      == "f", "the daemons' role cannot update or delete bans")
wrong_password = pg.secret("wrong.password", "not-the-password")


def Node(name, conninfo=None, password_file=None, own_namespace=True, jail_extra=""):
    return FleetNode(BINARY, CONFIG, WORK, name, conninfo or pg.conninfo, password_file or pg.password_file, own_namespace, jail_extra=jail_extra)


a, b, c = Node("mx1"), Node("mx2", jail_extra="ignoreip = 192.0.2.88\n"), Node("mx3")
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


delays = sorted((n.first("ban", ip) - a.first("ban", ip)) * 1000 for n in (b, c) for ip in singles)
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
check(wait(lambda: all(n.first("ban", ip) for n in (a, b, c) for ip in storm), 60), "every node's event feed told every ban of the storm")
t_a = max(a.first("ban", ip) for ip in storm)
check(wait(lambda: wanted <= b.kernel() and wanted <= c.kernel(), 120), "%d bans replicated to mx2 and mx3" % STORM)
done = [max(n.first("ban", ip) for ip in storm) for n in (b, c)]
first_a = min(a.first("ban", ip) for ip in storm)
print("figure: storm of %d bans: on mx1 in %.2f s after the lines were written; on mx2 and mx3 %.2f s after mx1's first ban "
      "(%.2f s after its last)" % (STORM, t_a - t, max(done) - first_a, max(done) - t_a), flush=True)

# MARK: PostgreSQL down

pg.stop()
check(wait(lambda: not a.cluster()["connected"]), "mx1 notices PostgreSQL is gone")
outage = ["203.0.113.%d" % i for i in range(1, 51)]
a.failures(outage)
check(wait(lambda: set(outage) <= a.kernel()), "mx1 still bans on its own")
check(wait(lambda: a.cluster()["queued"] == 50), "50 changes queued on mx1", a.cluster())
health = a.api("GET", "/health")[1]
check(health["status"] == "degraded" and any("cluster" in p for p in health.get("problems", [])), "/health says why", health)
pg.start()
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
c.events, c.seen = [], {}
c.start()
check(wait(lambda: set(away) <= c.kernel(), 60), "mx3, restarted, has what it missed")
check("198.51.100.7" not in c.kernel(), "and not the address unbanned before")
d = Node("mx4")
in_force = set(singles) - {"198.51.100.7"} | wanted | set(outage) | set(away)
check(wait(lambda: in_force <= d.kernel(), 120), "a fresh node loads the %d bans in force" % len(in_force), len(in_force - d.kernel()))
check("198.51.100.7" not in d.kernel(), "but not the one lifted")
check(wait(lambda: "first synchronisation" in d.output()), "and says so")

# MARK: an address mx3 allowlists

st, _ = c.api("POST", "/allowlist", {"ip": "192.0.2.77", "comment": "our office"})
check(st == 201, "192.0.2.77 allowlisted on mx3", st)
a.failures(["192.0.2.77"])
check(wait(lambda: "192.0.2.77" in b.kernel()), "mx1's ban of 192.0.2.77 reaches mx2")
check(wait(lambda: "not applied here: protected by allowlist 192.0.2.77 (every jail)" in c.output()), "mx3 says it does not apply it")
check("192.0.2.77" not in c.kernel(), "and its set does not hold it")
# An address mx2 ignores (ignoreip): the same.
a.failures(["192.0.2.88"])
check(wait(lambda: "192.0.2.88" in c.kernel()), "mx1's ban of 192.0.2.88 reaches mx3")
check(wait(lambda: "ban of 192.0.2.88 from node mx1 not applied here: ignoreip 192.0.2.88" in b.output()), "mx2, which ignores it, says so")
check("192.0.2.88" not in b.kernel(), "and does not ban it")
check(b.cluster()["skipped"] >= 1, "and counts it skipped", b.cluster())

# MARK: a node that joins the fleet brings its bans in force

j = FleetNode(BINARY, CONFIG, WORK, "mx8", None)
joiners = ["198.51.100.%d" % i for i in range(230, 240)]
j.failures(joiners)
check(wait(lambda: set(joiners) <= j.kernel()), "mx8, on its own, bans 10 addresses")
j.stop()
with open(os.path.join(j.conf, "portcullis.local"), "a") as f:
    f.write("[cluster]\nconninfo = %s\npassword_file = %s\nnode = mx8\n" % (pg.conninfo, pg.password_file))
j.start()
check(wait(lambda: set(joiners) <= a.kernel() and set(joiners) <= b.kernel()), "mx8 joins the fleet: its bans reach mx1 and mx2")
check(wait(lambda: "10 of this node's own to share" in j.output()), "and it says so", j.output())
check(wait(lambda: in_force <= j.kernel(), 60), "and it has the fleet's")
check(psql("SELECT count(*) FROM portcullis_bans WHERE origin = 'mx8'") == "10", "10 rows of mx8, none twice")
j.stop()

# MARK: a wrong password, TLS required: clear errors, local banning unaffected

e = Node("mx5", password_file=wrong_password)
check(wait(lambda: "password authentication failed" in (e.cluster().get("error") or "")), "a wrong password: libpq's error in /cluster",
      e.cluster())
check("password authentication failed" in e.output(), "and in the log")
e.failures(["198.51.100.250"])
check(wait(lambda: "198.51.100.250" in e.kernel()), "and it still bans on its own")
e.stop()
for n in (a, b, c, d):
    n.stop()
pg.stop()

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
with open(os.path.join(pg.data, "pg_hba.conf"), "w") as f:
    f.write("local all postgres peer\nlocal all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
pg.start(["-c", "ssl=on", "-c", "ssl_cert_file=" + os.path.join(tls, "server.pem"), "-c", "ssl_key_file=" + os.path.join(tls, "server.key")])
verified = Node("mx6", conninfo="host=127.0.0.1 port=%d dbname=fleet user=portcullis sslmode=verify-full sslrootcert=%s" % (pg.PORT, os.path.join(tls, "ca.pem")),
                own_namespace=False)
check(connected(verified), "sslmode=verify-full against the test CA: connected", verified.cluster())
check(psql("SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'portcullis'") == "t", "over TLS")
check(wait(lambda: "2001:db8:5::1" in verified.kernel(), 60), "and it loaded the fleet's bans")
verified.stop()
plain = Node("mx7", conninfo="host=127.0.0.1 port=%d dbname=fleet user=portcullis sslmode=disable" % pg.PORT, own_namespace=False)
check(wait(lambda: "no encryption" in (plain.cluster().get("error") or "")), "TLS required by the server, sslmode=disable: a clear error",
      plain.cluster())
plain.failures(["198.51.100.251"])
check(wait(lambda: "198.51.100.251" in plain.kernel()), "and it still bans on its own")
plain.stop()
pg.stop()
print("all passed", flush=True)
