#!/usr/bin/python3
"""Kernel scenarios for Portcullis, each run in a private network namespace created for it:

    unshare -n /usr/bin/python3 scenario.py NAME PORTCULLIS_BINARY CONFIG_DIR

The script refuses to run unless it sees a fresh namespace (only a loopback interface, no nftables tables), so
that it can never change the host's packet filter. Traffic goes only to loopback addresses; other addresses
appear only as text in log lines (documentation ranges). Exit status 0 means the scenario passed.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def check_private_namespace():
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    names = [l.split(":")[1].strip() for l in links]
    if names != ["lo"]:
        fail("not in a fresh network namespace (interfaces: %s); run me under `unshare -n`" % names)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.strip()
    if tables:
        fail("nftables is not empty here (%s): not a fresh namespace" % tables)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def wait_until(condition, timeout=10.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Tree:
    """A configuration tree: the repository's config/ plus a dovecot jail on a log of our own."""

    def __init__(self, config, **jail):
        self.dir = tempfile.mkdtemp(prefix="portcullis-netns-")
        self.conf = os.path.join(self.dir, "conf")
        shutil.copytree(config, self.conf)
        self.log = os.path.join(self.dir, "mail.log")
        open(self.log, "w").close()
        self.db = os.path.join(self.dir, "portcullis.sqlite3")
        options = {"enabled": "true", "logpath": self.log, "port": "pop3,1100", "maxretry": "2",
                   "findtime": "10m", "bantime": "1h", "ignoreself": "false"}
        options.update(jail)
        with open(os.path.join(self.conf, "jail.d", "test.local"), "w") as f:
            f.write("[dovecot]\n" + "".join("%s = %s\n" % kv for kv in options.items()))
        with open(os.path.join(self.conf, "portcullis.local"), "w") as f:
            f.write("[Definition]\ndbfile = %s\nloglevel = INFO\n[api]\nlisten = 127.0.0.1:9191\nsocket = %s/api.sock\n"
                    # The set sizes at every scrape: the scenarios change the kernel and look at once.
                    "metrics_kernel_interval = 0\n"
                    % (self.db, os.path.dirname(self.db)))

    def failure(self, ip, n=1):
        self.failures([ip] * n)

    def failures(self, addresses, user="bob", pause_every=0):
        """One failed POP3 login per address, as dovecot logs it; with `pause_every`, a short pause after that many
        lines (a storm arriving in bursts)."""
        stamp = time.strftime("%b %d %H:%M:%S")
        with open(self.log, "a") as f:
            for i, ip in enumerate(addresses):
                f.write("%s pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<%s>, "
                        "method=PLAIN, rip=%s, lip=127.0.0.1, session=<s%d>\n" % (stamp, user, ip, i))
                if pause_every and i % pause_every == pause_every - 1:
                    f.flush()
                    time.sleep(0.01)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


DAEMONS = []


@atexit.register
def kill_daemons():
    # A failed scenario must not leave a daemon running in its namespace.
    for d in DAEMONS:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


class Daemon:
    def __init__(self, binary, tree, wrapper=()):
        DAEMONS.append(self)
        self.err_path = os.path.join(tree.dir, "stderr-%d.log" % time.time_ns())
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(list(wrapper) + [binary, "serve", "--config", tree.conf], stderr=self.err,
                                     stdout=subprocess.DEVNULL)

    def output(self):
        self.err.flush()
        with open(self.err_path) as f:
            return f.read()

    def wait_started(self):
        if not wait_until(lambda: "started with" in self.output() or self.proc.poll() is not None, 15):
            fail("the daemon did not start:\n" + self.output())
        if self.proc.poll() is not None:
            fail("the daemon exited:\n" + self.output())
        # The API opens after the jails start ("started with"): a scenario that asks it at once (under a sanitizer,
        # on a loaded machine) would find no socket yet.
        wait_until(lambda: "API listening" in self.output() or "the API is off" in self.output() or self.proc.poll() is not None, 15)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        return self.proc.returncode

    def reported_bans(self):
        bans = set()
        for line in self.output().splitlines():
            if "] Ban " in line:
                bans.add(line.split("] Ban ", 1)[1].split(" ", 1)[0])
        return bans


def elements(jail, family):
    r = subprocess.run(["nft", "-j", "list", "set", "inet", "portcullis", "%s-%s" % (jail, family)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    result = {}

    def text(value):
        # An address is a string; a network {"prefix": {"addr": a, "len": n}}; a range {"range": [a, b]}.
        if isinstance(value, dict) and "prefix" in value:
            return "%s/%d" % (value["prefix"]["addr"], value["prefix"]["len"])
        if isinstance(value, dict) and "range" in value:
            return "%s-%s" % tuple(value["range"])
        return value

    for item in json.loads(r.stdout)["nftables"]:
        if "set" not in item:
            continue
        for e in item["set"].get("elem", []):
            if isinstance(e, dict) and "elem" in e:
                result[text(e["elem"]["val"])] = e["elem"].get("timeout")
            else:
                result[text(e)] = None
    return result


def banned(ip, jail="dovecot"):
    """An address in the jail's address set, or a network (written with its prefix) in its network set."""
    found = elements(jail, ("n" if "/" in ip else "v") + ("6" if ":" in ip else "4"))
    return found is not None and ip in found


class Listener:
    """Accepts connections on a loopback port (IPv4 and IPv6) until stopped."""

    def __init__(self, port=1100):
        self.socks = []
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(64)
            self.socks.append(s)
            threading.Thread(target=self.accept, args=(s,), daemon=True).start()

    @staticmethod
    def accept(s):
        while True:
            try:
                c, _ = s.accept()
                c.close()
            except OSError:
                return


def can_connect(source, destination, port=1100):
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.bind((source, 0))
        s.connect((destination, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def api(method, path, body=None, tree=None):
    """The daemon's API: on 127.0.0.1:9191 (reads need no token on loopback) or, with `tree`, on its Unix socket
    (changes): (status, parsed JSON or text)."""
    import http.client
    if tree is None:
        c = http.client.HTTPConnection("127.0.0.1", 9191, timeout=15)
    else:
        c = http.client.HTTPConnection("localhost", timeout=15)
        c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.sock.settimeout(15)
        c.sock.connect(os.path.join(tree.dir, "api.sock"))
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def check(binary, tree):
    return subprocess.run([binary, "check", "--config", tree.conf], capture_output=True, text=True)


# --- scenarios --------------------------------------------------------------------------------------------------

def scenario_block(binary, config):
    """A ban puts the address in the set; its TCP connections to a jail port are reset while others still
    connect; IPv6 likewise; when the ban time is over, access returns."""
    Listener()
    tree = Tree(config, bantime="4s")
    d = Daemon(binary, tree)
    d.wait_started()
    if not can_connect("127.0.0.66", "127.0.0.1"):
        fail("127.0.0.66 cannot connect before any ban")
    tree.failure("127.0.0.66", 2)
    tree.failure("::1", 2)
    if not wait_until(lambda: banned("127.0.0.66") and banned("::1")):
        fail("127.0.0.66 / ::1 not in the sets:\n" + d.output())
    if can_connect("127.0.0.66", "127.0.0.1"):
        fail("127.0.0.66 still connects to port 1100 after its ban")
    if not can_connect("127.0.0.1", "127.0.0.1"):
        fail("127.0.0.1 was blocked too")
    if can_connect("::1", "::1"):
        fail("::1 still connects after its ban")
    # /metrics reads the kernel back: what the rules refused, and the sets beside the database.
    if not (metric("portcullis_blocked_packets_total", 'jail="dovecot"') or 0) >= 2:
        fail("blocked packets not counted: %r" % metric("portcullis_blocked_packets_total", 'jail="dovecot"'))
    if not (metric("portcullis_blocked_bytes_total", 'jail="dovecot"') or 0) >= 80:
        fail("blocked bytes not counted")
    for s, n in (("dovecot-v4", 1), ("dovecot-v6", 1), ("dovecot-n4", 0), ("dovecot-n6", 0)):
        if metric("portcullis_kernel_set_elements", 'jail="dovecot",set="%s"' % s) != n:
            fail("kernel set %s: %r elements, expected %d" % (s, metric("portcullis_kernel_set_elements", 'jail="dovecot",set="%s"' % s), n))
    if metric("portcullis_store_bans", 'jail="dovecot"') != 2 or metric("portcullis_kernel_store_difference", 'jail="dovecot"') != 0:
        fail("the kernel and the database disagree:\n" + api("GET", "/metrics")[1])
    # The exposition with the kernel's metrics and a latency observed passes Prometheus' own linter.
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=api("GET", "/metrics")[1], capture_output=True, text=True)
        if lint.returncode != 0:
            fail("promtool check metrics: " + lint.stdout + lint.stderr)
    # A ban taken out of the kernel behind the daemon's back shows as a difference.
    subprocess.run(["nft", "delete", "element", "inet", "portcullis", "dovecot-v6", "{ ::1 }"], check=True)
    if metric("portcullis_kernel_store_difference", 'jail="dovecot"') != -1:
        fail("an element deleted by hand is not seen: %r" % metric("portcullis_kernel_store_difference", 'jail="dovecot"'))
    # Other ports are not the jail's: not blocked.
    Listener(1200)
    if not can_connect("127.0.0.66", "127.0.0.1", 1200):
        fail("127.0.0.66 is blocked on port 1200, which is not a jail port")
    # The ban time (4 s) runs out: the daemon lifts the ban and access returns.
    if not wait_until(lambda: not banned("127.0.0.66"), 10):
        fail("the ban did not end:\n" + d.output())
    if not can_connect("127.0.0.66", "127.0.0.1"):
        fail("127.0.0.66 still blocked after its ban ended")
    # The kernel's element timeout and the daemon's own expiry run separately: under load the log line may
    # follow the kernel by a moment.
    if not wait_until(lambda: "Unban 127.0.0.66" in d.output(), 5):
        fail("no Unban line:\n" + d.output())
    if d.stop() != 0:
        fail("the daemon did not stop cleanly:\n" + d.output())
    if subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.strip():
        fail("the table is still there after SIGTERM")
    tree.cleanup()


def scenario_prefix(binary, config):
    """banprefix6 = 64: failures of two addresses of one /64 are counted together and ban the /64, which refuses
    both while an address of the next /64 connects; networks by hand (CIDR) take the place of the addresses they
    cover, a network that would cover this host's loopback address is refused, and everything is restored after a
    restart. The kernel refuses overlapping networks in an interval set and accepts adjacent ones."""
    bench = os.path.join(os.path.dirname(binary), "portcullis-bench")
    overlap = subprocess.run([bench, "nft-overlap"], capture_output=True, text=True)
    expected = {"first": "accepted", "wider": "errno 17", "narrower": "errno 17", "adjacent-below": "accepted",
                "adjacent-above": "accepted", "first6": "accepted", "wider6": "errno 17", "adjacent6": "accepted",
                "top": "accepted"}
    seen = {l.split(" ", 1)[0]: l.split(": ", 1)[1] for l in overlap.stdout.splitlines() if ": " in l}
    if overlap.returncode != 0 or seen != expected:
        fail("the kernel's answers to overlapping networks changed:\n%s%s" % (overlap.stdout, overlap.stderr))
    subprocess.run(["nft", "delete", "table", "inet", "portcullis"], check=True)
    inside = ["2001:db8:1:2::7", "2001:db8:1:2::8"]
    outside = "2001:db8:1:3::1"
    for a in inside + [outside]:
        ip("-6", "addr", "add", a + "/128", "dev", "lo", "nodad")
    Listener()
    tree = Tree(config, banprefix6="64")
    d = Daemon(binary, tree)
    d.wait_started()
    for a in inside + [outside]:
        if not can_connect(a, "::1"):
            fail("%s cannot connect before any ban" % a)
    # One failure from each of two addresses of the /64: counted together, maxretry 2.
    tree.failure(inside[0])
    tree.failure(inside[1])
    if not wait_until(lambda: banned("2001:db8:1:2::/64")):
        fail("the /64 is not in the set: %r\n%s" % (elements("dovecot", "n6"), d.output()))
    if "Ban 2001:db8:1:2::/64" not in d.output() or "counted in 2001:db8:1:2::/64" not in d.output():
        fail("the log does not name the /64:\n" + d.output())
    for a in inside:
        if can_connect(a, "::1"):
            fail("%s still connects after the ban of its /64" % a)
    if not can_connect(outside, "::1"):
        fail("%s, outside the /64, is blocked" % outside)
    status, body = api("GET", "/bans/2001:db8:1:2::99")
    if status != 200 or [b["ip"] for b in body["bans"]] != ["2001:db8:1:2::/64"]:
        fail("GET /bans of an address inside the /64: %r %r" % (status, body))
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "2001:db8:1:2::99/128"}, tree=tree)
    if status != 409 or "already banned in dovecot by 2001:db8:1:2::/64" not in body["detail"]:
        fail("a /128 inside the banned /64: %r %r" % (status, body))
    # By hand, IPv4 on loopback: an address, then the /26 around it takes its place; an adjacent /26 too.
    for body_ip in ("127.0.0.66", "127.0.0.64/26", "127.0.0.128/26"):
        status, body = api("POST", "/jails/dovecot/bans", {"ip": body_ip}, tree=tree)
        if status != 201:
            fail("POST %s: %r %r" % (body_ip, status, body))
    n4, v4 = elements("dovecot", "n4"), elements("dovecot", "v4")
    if set(n4) != {"127.0.0.64/26", "127.0.0.128/26"} or v4:
        fail("the /26 did not take the address's place: networks %r, addresses %r" % (n4, v4))
    # An interval set's networks are counted once each (the kernel holds a start and an end element).
    if metric("portcullis_kernel_set_elements", 'jail="dovecot",set="dovecot-n4"') != 2 \
            or metric("portcullis_kernel_store_difference", 'jail="dovecot"') != 0:
        fail("networks in the kernel against the database:\n" + api("GET", "/metrics")[1])
    if "Unban 127.0.0.66 (inside the new ban of 127.0.0.64/26)" not in d.output():
        fail("the replaced ban is not logged:\n" + d.output())
    for source in ("127.0.0.66", "127.0.0.70", "127.0.0.130"):
        if can_connect(source, "127.0.0.1"):
            fail("%s connects through a network ban" % source)
    if not can_connect("127.0.0.1", "127.0.0.1"):
        fail("127.0.0.1 is blocked")
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "127.0.0.0/24"}, tree=tree)
    if status != 409 or "127.0.0.1" not in body["detail"]:
        fail("a network around this host's loopback address: %r %r" % (status, body))
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "2001:db8::/129"}, tree=tree)
    if status != 400 or "from 0 to 128" not in body["detail"]:
        fail("an IPv6 prefix of 129: %r %r" % (status, body))
    # Percent-encoded slash, and the unencoded one.
    status, body = api("DELETE", "/bans/127.0.0.128%2F26", tree=tree)
    if status != 200 or body["lifted"] != [{"jail": "dovecot", "ip": "127.0.0.128/26"}]:
        fail("DELETE of a network, slash encoded: %r %r" % (status, body))
    if not can_connect("127.0.0.130", "127.0.0.1"):
        fail("127.0.0.130 still blocked after its network was lifted")
    status, body = api("DELETE", "/bans/127.0.0.70", tree=tree)
    if status != 404 or "covered by the ban of 127.0.0.64/26" not in body["detail"]:
        fail("DELETE of an address inside a network ban: %r %r" % (status, body))
    # A storm of networks: 1,500 /64s in one go (more than one netlink message holds: 400 intervals each).
    storm = ["2001:db8:9:%x::%d" % (i, k) for i in range(1500) for k in (1, 2)]
    tree.failures(storm, pause_every=0)
    if not wait_until(lambda: sum(1 for e in (elements("dovecot", "n6") or {}) if e.startswith("2001:db8:9:")) == 1500, 30):
        fail("the storm's 1,500 /64s are not all in the set: %d\n%s"
             % (sum(1 for e in (elements("dovecot", "n6") or {}) if e.startswith("2001:db8:9:")), d.output()[-2000:]))
    # A restart brings the networks back.
    d.stop()
    d = Daemon(binary, tree)
    d.wait_started()
    if not (banned("2001:db8:1:2::/64") and banned("127.0.0.64/26") and banned("2001:db8:9:5db::/64")):
        fail("networks not restored: %r %r\n%s" % (elements("dovecot", "n6"), elements("dovecot", "n4"), d.output()))
    if can_connect(inside[1], "::1") or not can_connect(outside, "::1"):
        fail("the restored /64 does not block as before")
    # The allowlist: an address inside the banned /64 lifts it (the element leaves the kernel's set), and the entry
    # survives a restart.
    r = subprocess.run([binary, "set", "dovecot", "addignoreip", inside[0], "--comment", "admin", "--config", tree.conf],
                       capture_output=True, text=True)
    if r.returncode != 0 or "lifted the ban of 2001:db8:1:2::/64 in dovecot" not in r.stderr or banned("2001:db8:1:2::/64"):
        fail("addignoreip inside a banned /64: %s %s %r" % (r.stdout, r.stderr, elements("dovecot", "n6")))
    if not can_connect(inside[0], "::1"):
        fail("the allowlisted address is still blocked")
    d.stop()
    d = Daemon(binary, tree)
    d.wait_started()
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "2001:db8:1:2::/64"}, tree=tree)
    if status != 409 or "protected by allowlist 2001:db8:1:2::7" not in body.get("detail", ""):
        fail("the allowlist entry did not survive a restart: %r %r" % (status, body))
    r = subprocess.run([binary, "get", "dovecot", "ignoreip", "--config", tree.conf], capture_output=True, text=True)
    if "2001:db8:1:2::7 (allowlist, jail dovecot: admin)" not in r.stdout:
        fail("get dovecot ignoreip: %s %s" % (r.stdout, r.stderr))
    # The CLI: a network by hand, and its lift.
    r = subprocess.run([binary, "set", "dovecot", "banip", "2001:db8:2::/48", "--config", tree.conf], capture_output=True, text=True)
    if r.returncode != 0 or not banned("2001:db8:2::/48"):
        fail("portcullis set dovecot banip 2001:db8:2::/48: %s %s" % (r.stdout, r.stderr))
    r = subprocess.run([binary, "set", "dovecot", "unbanip", "2001:db8:2::/48", "--config", tree.conf], capture_output=True, text=True)
    if r.returncode != 0 or banned("2001:db8:2::/48"):
        fail("portcullis set dovecot unbanip 2001:db8:2::/48: %s %s" % (r.stdout, r.stderr))
    d.stop()
    tree.cleanup()


def scenario_expiry(binary, config):
    """Element timeouts end bans in the kernel even when the daemon is gone."""
    tree = Tree(config, bantime="3s")
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("192.0.2.10", 2)
    if not wait_until(lambda: banned("192.0.2.10")):
        fail("192.0.2.10 not banned:\n" + d.output())
    timeout = elements("dovecot", "v4")["192.0.2.10"]
    if not timeout or timeout > 3:
        fail("the element has no 3 s timeout: %r" % timeout)
    d.stop(signal.SIGKILL)
    if not banned("192.0.2.10"):
        fail("the ban vanished with the daemon")
    if not wait_until(lambda: not banned("192.0.2.10"), 8):
        fail("the kernel did not expire the element")
    tree.cleanup()


def scenario_restart(binary, config):
    """Bans come back from the store after SIGTERM (table removed) and after SIGKILL (table left behind)."""
    tree = Tree(config, bantime="1h")
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("198.51.100.7", 2)
    tree.failure("2001:db8::7", 2)
    if not wait_until(lambda: banned("198.51.100.7") and banned("2001:db8::7")):
        fail("bans not applied:\n" + d.output())
    d.stop()
    if banned("198.51.100.7"):
        fail("the table survived SIGTERM")
    d = Daemon(binary, tree)
    d.wait_started()
    if not (banned("198.51.100.7") and banned("2001:db8::7")):
        fail("bans not restored after SIGTERM:\n" + d.output())
    remaining = elements("dovecot", "v4")["198.51.100.7"]
    if not remaining or remaining > 3600:
        fail("restored element has no remaining timeout: %r" % remaining)
    d.stop(signal.SIGKILL)
    d = Daemon(binary, tree)
    d.wait_started()
    if not (banned("198.51.100.7") and banned("2001:db8::7")):
        fail("bans not restored after SIGKILL:\n" + d.output())
    # The log was not read again: no second round of failures for the same lines.
    if "Found" in d.output():
        fail("the restarted daemon read old lines again:\n" + d.output())
    d.stop()
    tree.cleanup()


def scenario_storm(binary, config):
    """SIGKILL in the middle of a storm of bans: after a restart every ban that was reported is in the kernel."""
    tree = Tree(config, maxretry="1", bantime="1h")
    d = Daemon(binary, tree)
    d.wait_started()
    addresses = ["2001:db8:%x::%x" % (i // 256, i % 256 + 1) for i in range(6000)]
    addresses += ["203.0.113.%d" % i for i in range(1, 255)]
    tree.failures(addresses, user="x", pause_every=500)
    # Kill while bans are still being applied.
    wait_until(lambda: len(d.reported_bans()) > 1000, 20, 0.001)
    d.stop(signal.SIGKILL)
    reported = d.reported_bans()
    if not reported:
        fail("nothing was reported before the kill:\n" + d.output()[-2000:])
    d2 = Daemon(binary, tree)
    d2.wait_started()
    present = set(elements("dovecot", "v4") or {}) | set(elements("dovecot", "v6") or {})
    missing = [ip for ip in reported if ip not in present]
    if missing:
        fail("%d of %d reported bans missing after restart, e.g. %s" % (len(missing), len(reported), missing[:5]))
    print("storm: %d bans reported before SIGKILL, all %d present after restart" % (len(reported), len(reported)))
    d2.stop()
    tree.cleanup()


def scenario_reload(binary, config):
    """SIGHUP re-reads the configuration: a jail is added and another changed, without losing a ban or a log
    position."""
    tree = Tree(config, bantime="1h")
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("192.0.2.50", 2)
    if not wait_until(lambda: banned("192.0.2.50")):
        fail("no ban before reload:\n" + d.output())
    sshd_log = os.path.join(tree.dir, "auth.log")
    open(sshd_log, "w").close()
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("port = 1100,1101\n\n[sshd]\nenabled = true\nlogpath = %s\nmaxretry = 1\nignoreself = false\n" % sshd_log)
    d.proc.send_signal(signal.SIGHUP)
    if not wait_until(lambda: "Configuration reloaded: 2 jail(s)" in d.output()):
        fail("no reload:\n" + d.output())
    if not banned("192.0.2.50"):
        fail("the ban was lost in the reload")
    rules = subprocess.run(["nft", "list", "chain", "inet", "portcullis", "input"], capture_output=True, text=True).stdout
    if "dport 1100-1101" not in rules or "sshd-v4" not in rules:
        fail("the new layout is not installed:\n" + rules)
    with open(sshd_log, "a") as f:
        f.write(time.strftime("%b %d %H:%M:%S") + " host sshd[1]: Failed password for root from 192.0.2.60 port 22 ssh2\n")
    tree.failure("192.0.2.51", 2)
    if not wait_until(lambda: banned("192.0.2.60", "sshd") and banned("192.0.2.51")):
        fail("failures after the reload were not acted on:\n" + d.output())
    if d.output().count("Found 192.0.2.50") != 2:
        fail("the dovecot log was read again after the reload:\n" + d.output())
    d.stop()
    tree.cleanup()


def scenario_eperm(binary, config):
    """Without CAP_NET_ADMIN the daemon says so in one clear line and exits non-zero."""
    tree = Tree(config)
    d = Daemon(binary, tree, wrapper=["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"])
    try:
        code = d.proc.wait(15)
    except subprocess.TimeoutExpired:
        d.stop(signal.SIGKILL)
        fail("the daemon kept running without CAP_NET_ADMIN:\n" + d.output())
    out = d.output()
    if code == 0:
        fail("exit status 0 without CAP_NET_ADMIN:\n" + out)
    line = [l for l in out.splitlines() if "CAP_NET_ADMIN" in l]
    if not line or "cap_add: [NET_ADMIN]" not in line[0]:
        fail("no clear CAP_NET_ADMIN message:\n" + out)
    print("eperm: exit %d: %s" % (code, line[0]))
    tree.cleanup()


def scenario_limits(binary, config):
    """Ban times past what anything can hold: refused when read (check, start, reload) with file:line; past what
    nftables holds (~584 years), cut to it, said so, and in the kernel; a store row from an older version with an
    absurd time does not stop the daemon from starting."""
    import sqlite3
    year = 31557600
    tree = Tree(config, bantime="999999999999w")
    r = check(binary, tree)
    if r.returncode == 0 or "test.local:" not in r.stdout or "out of range" not in r.stdout:
        fail("check accepted bantime = 999999999999w:\n" + r.stdout + r.stderr)
    tree = Tree(config, bantime="1000000000000")
    r = check(binary, tree)
    if r.returncode != 0 or "longer than the packet filter holds" not in r.stdout:
        fail("check did not warn about bantime = 1000000000000:\n" + r.stdout + r.stderr)
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("192.0.2.20", 2)
    if not wait_until(lambda: banned("192.0.2.20")):
        fail("no ban with a 31,688-year ban time:\n" + d.output())
    timeout = elements("dovecot", "v4")["192.0.2.20"]
    if not timeout or not 583 * year < timeout <= 584 * year:
        fail("the element's timeout is not ~584 years: %r" % timeout)
    if "cut from" not in d.output():
        fail("the log does not say the ban time was cut:\n" + d.output())
    # bantime.increment at the 16th ban of an address with bantime = 1w: 1w * 2^16 = 1,257 years.
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("bantime = 1w\nbantime.increment = true\n")
    status, body = api("POST", "/reload", tree=tree)
    if status != 200:
        fail("reload: %d %r" % (status, body))
    db = sqlite3.connect(tree.db)
    db.execute("INSERT INTO ban_history (ip, jail, ban_count, last_banned_at, last_ban_time) VALUES "
               "('192.0.2.21', 'dovecot', 15, ?, 604800)", (time.time() - 10,))
    db.commit()
    tree.failure("192.0.2.21", 2)
    if not wait_until(lambda: banned("192.0.2.21")):
        fail("the 16th ban of 192.0.2.21 is not in the kernel:\n" + d.output())
    status, body = api("GET", "/bans/192.0.2.21")
    if status != 200 or "192.0.2.21" not in json.dumps(body):
        fail("the 16th ban is not listed: %d %r" % (status, body))
    # A reload with a value past any range keeps the running configuration.
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("findtime = 99999999999999999999\n")
    status, body = api("POST", "/reload", tree=tree)
    if d.proc.poll() is not None:
        fail("a reload with findtime = 99999999999999999999 killed the daemon:\n" + d.output())
    status, health = api("GET", "/health")
    if health.get("status") != "degraded" or not any("findtime" in p for p in health.get("problems", [])):
        fail("/health does not name the refused findtime: %r" % health)
    if not banned("192.0.2.20") or api("GET", "/jails/dovecot")[0] != 200:
        fail("the previous configuration is not running after the refused reload:\n" + d.output())
    d.stop()
    # Rows written by an older version: a ban time no kernel holds and a start time that is no time.
    db.execute("UPDATE bans SET ban_time = 6.048e17 WHERE ip = '192.0.2.20'")
    db.execute("INSERT INTO bans (jail, ip, banned_at, ban_time, ban_count, failures, matches) VALUES "
               "('dovecot', '192.0.2.22', 1e300, 600, 1, 2, '')")
    db.commit()
    db.close()
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("findtime = 10m\n")
    d = Daemon(binary, tree)
    d.wait_started()
    if not banned("192.0.2.20") or "longer than the packet filter holds" not in d.output():
        fail("the over-long stored ban was not restored and cut:\n" + d.output())
    if banned("192.0.2.22") or "no valid start time" not in d.output():
        fail("the stored ban without a valid start was not refused:\n" + d.output())
    d.stop()
    tree.cleanup()


def scenario_fulldisk(binary, config):
    """The database's filesystem full: bans go on in the kernel, /health and /metrics say degraded, and when space
    comes back every ban made meanwhile is written."""
    import sqlite3
    tree = Tree(config, maxretry="1")
    data = os.path.join(tree.dir, "data")
    os.mkdir(data)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", data], check=True)
    atexit.register(lambda: subprocess.run(["umount", "-l", data]))
    tree.db = os.path.join(data, "portcullis.sqlite3")
    with open(os.path.join(tree.conf, "portcullis.local"), "w") as f:
        f.write("[Definition]\ndbfile = %s\nloglevel = INFO\n[api]\nlisten = 127.0.0.1:9191\nsocket = %s/api.sock\n"
                % (tree.db, tree.dir))
    d = Daemon(binary, tree)
    d.wait_started()
    filler = os.path.join(data, "filler")
    # Unbuffered: a buffered file would try again to write what did not fit when it is closed, and raise there.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    addresses = ["198.51.100.%d" % i for i in range(1, 201)]
    tree.failures(addresses, user="x" * 200)
    if not wait_until(lambda: all(banned(ip) for ip in addresses), 20):
        missing = [ip for ip in addresses if not banned(ip)]
        fail("%d of %d addresses not banned with the disk full:\n%s" % (len(missing), len(addresses), d.output()[-3000:]))
    status, health = api("GET", "/health")
    if health.get("status") != "degraded" or "database" not in " ".join(health.get("problems", [])):
        fail("/health with the disk full: %r\n%s" % (health, d.output()[-3000:]))
    status, metrics = api("GET", "/metrics")
    if "portcullis_store_ok 0" not in metrics:
        fail("/metrics does not say the store fails:\n" + metrics)
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "203.0.113.9"}, tree=tree)
    if status != 201 or not banned("203.0.113.9"):
        fail("a manual ban with the disk full: %d %r" % (status, body))
    status, body = api("DELETE", "/bans/198.51.100.1", tree=tree)
    if status != 200 or banned("198.51.100.1"):
        fail("an unban with the disk full: %d %r" % (status, body))
    if "kept in memory until the store works again" not in d.output():
        fail("the log does not say what happens:\n" + d.output()[-3000:])
    os.unlink(filler)
    if not wait_until(lambda: api("GET", "/health")[1].get("status") == "ok", 20):
        fail("/health stays degraded after space came back: %r\n%s" % (api("GET", "/health"), d.output()[-3000:]))
    db = sqlite3.connect(tree.db)
    stored = {row[0] for row in db.execute("SELECT ip FROM bans WHERE jail = 'dovecot'")}
    db.close()
    expected = set(addresses[1:]) | {"203.0.113.9"}
    if stored != expected:
        fail("the store holds %d bans, %d expected; missing %s, extra %s" % (
            len(stored), len(expected), sorted(expected - stored)[:5], sorted(stored - expected)[:5]))
    if "The store works again" not in d.output():
        fail("no log line when the store came back:\n" + d.output()[-3000:])
    print("fulldisk: %d bans made with the disk full, all written when space came back" % len(expected))
    d.stop()
    tree.cleanup()


def scenario_badjail(binary, config):
    """A jail whose name nftables cannot hold: check says so; the daemon starts the others, /health names it; a
    reload that can start nothing keeps the running jails."""
    tree = Tree(config)
    long_name = "j" * 253
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("\n[%s]\nenabled = true\nfilter = sshd\nlogpath = %s\n" % (long_name, tree.log))
    r = check(binary, tree)
    if r.returncode == 0 or "nftables holds at most 252" not in r.stdout:
        fail("check accepted a 253-byte jail name:\n" + r.stdout + r.stderr)
    d = Daemon(binary, tree)
    d.wait_started()
    status, health = api("GET", "/health")
    if health.get("status") != "degraded" or not any("252" in p for p in health.get("problems", [])):
        fail("/health does not name the skipped jail: %r" % health)
    tree.failure("192.0.2.30", 2)
    if not wait_until(lambda: banned("192.0.2.30")):
        fail("the good jail does not ban:\n" + d.output())
    # Every jail of the new configuration is bad: the reload keeps what runs.
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "w") as f:
        f.write("[%s]\nenabled = true\nfilter = sshd\nlogpath = %s\n" % (long_name, tree.log))
    status, body = api("POST", "/reload", tree=tree)
    if status not in (200, 500) or (status == 200 and not body.get("errors")):
        fail("the reload reported success: %r" % (body,))
    status, jails = api("GET", "/jails")
    if [j["name"] for j in jails.get("jails", [])] != ["dovecot"] or not banned("192.0.2.30"):
        fail("the running jail was lost in a failed reload: %r\n%s" % (jails, d.output()))
    tree.failure("192.0.2.31", 2)
    if not wait_until(lambda: banned("192.0.2.31")):
        fail("the jail stopped working after the failed reload:\n" + d.output())
    d.stop()
    tree.cleanup()


def scenario_manyports(binary, config):
    """A jail with 500 ports and a range: one rule per family that looks the ports up in a set (not 1,000
    rules), and a ban blocks exactly those ports."""
    ports = [1100 + 2 * i for i in range(500)]
    tree = Tree(config, port=",".join(str(p) for p in ports) + ",3000:3010")
    d = Daemon(binary, tree)
    d.wait_started()
    for p in (1100, 1101, 1998, 3005):
        Listener(p)
    tree.failure("127.0.0.66", 2)
    if not wait_until(lambda: banned("127.0.0.66")):
        fail("no ban:\n" + d.output())
    rules = subprocess.run(["nft", "list", "chain", "inet", "portcullis", "input"], capture_output=True, text=True).stdout
    count = sum(1 for l in rules.splitlines() if "portcullis jail dovecot" in l)
    if count != 4 or "dport {" not in rules:
        fail("expected four rules (addresses and networks, IPv4 and IPv6) looking the ports up in a set:\n" + rules[:3000])
    for p, blocked in ((1100, True), (1998, True), (3005, True), (1101, False)):
        if can_connect("127.0.0.66", "127.0.0.1", p) == blocked:
            fail("port %d: %s for the banned address" % (p, "open" if blocked else "blocked"))
    if not can_connect("127.0.0.1", "127.0.0.1", 1100):
        fail("an address that is not banned is blocked")
    print("manyports: %d jail rules for 501 port ranges" % count)
    d.stop()
    tree.cleanup()


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def metric(name, labels):
    status, text = api("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + "{" + labels + "}"):
            return float(line.rsplit(" ", 1)[1])
    return None


def scenario_gateway(binary, config):
    """Failures from the namespace's default gateway (a proxy's address: every client behind it) are not counted:
    logged once, loudly; in check, /metrics and the jail's status; a manual ban of it is refused. Others are banned
    as before. When the default route changes, the new gateway is the one spared; ignoregateway = false bans it."""
    ip("link", "add", "gw0", "type", "veth", "peer", "name", "gw1")
    ip("addr", "add", "10.213.9.2/24", "dev", "gw0")
    ip("-6", "addr", "add", "fd00:213:9::2/64", "dev", "gw0", "nodad")
    ip("link", "set", "gw0", "up")
    ip("route", "add", "default", "via", "10.213.9.1")
    ip("-6", "route", "add", "default", "via", "fd00:213:9::1")
    tree = Tree(config)
    r = check(binary, tree)
    if "10.213.9.1" not in r.stdout or "fd00:213:9::1" not in r.stdout or "not counted" not in r.stdout:
        fail("check does not show the gateways:\n" + r.stdout)
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failures(["10.213.9.1", "10.213.9.1", "fd00:213:9::1", "fd00:213:9::1", "10.213.9.7", "10.213.9.7"])
    if not wait_until(lambda: banned("10.213.9.7")):
        fail("10.213.9.7 (not a gateway) was not banned:\n" + d.output())
    time.sleep(0.5)
    if banned("10.213.9.1") or banned("fd00:213:9::1"):
        fail("a gateway was banned:\n" + d.output())
    out = d.output()
    if out.count("it is this network namespace's default gateway") != 1 or "userland-proxy" not in out:
        fail("the gateway warning is not logged exactly once per jail:\n" + out)
    if metric("portcullis_gateway_failures_ignored_total", 'jail="dovecot"') != 4:
        fail("/metrics does not count the 4 gateway failures:\n" + api("GET", "/metrics")[1])
    if metric("portcullis_default_gateway_info", 'address="10.213.9.1"') != 1:
        fail("/metrics does not name the gateway")
    status, body = api("GET", "/jails/dovecot")
    if body["filter"]["gatewayIgnored"] != 4:
        fail("the jail's status: %s" % body)
    status, body = api("POST", "/jails/dovecot/bans", {"ip": "10.213.9.1"}, tree=tree)
    if status != 409 or "gateway" not in body.get("detail", ""):
        fail("a manual ban of the gateway: %s %s" % (status, body))
    # The default route changes: within the refresh time (5 s) the old gateway is an address like any other.
    ip("route", "replace", "default", "via", "10.213.9.3")
    time.sleep(5.5)
    tree.failures(["10.213.9.1", "10.213.9.1", "10.213.9.3", "10.213.9.3"])
    if not wait_until(lambda: banned("10.213.9.1")):
        fail("the former gateway is still spared after the route changed:\n" + d.output())
    time.sleep(0.5)
    if banned("10.213.9.3"):
        fail("the new gateway was banned")
    d.stop()
    # ignoregateway = false: the gateway is banned like any address.
    tree2 = Tree(config, ignoregateway="false")
    d = Daemon(binary, tree2)
    d.wait_started()
    tree2.failures(["10.213.9.3", "10.213.9.3"])
    if not wait_until(lambda: banned("10.213.9.3")):
        fail("ignoregateway = false did not ban the gateway:\n" + d.output())
    d.stop()
    ip("link", "del", "gw0")
    tree.cleanup()
    tree2.cleanup()


def scenario_orphan(binary, config):
    """A namespace that loses its last interface besides loopback (the sidecar's container restarted) makes the
    daemon exit with 75 after `orphanexit`, its table removed; with orphanexit = no it stays. A namespace that
    never had an interface (this one at first) is not orphaned."""
    tree = Tree(config)
    d = Daemon(binary, tree)
    d.wait_started()
    time.sleep(2)
    if d.proc.poll() is not None:
        fail("the daemon exited in a namespace that never had an interface:\n" + d.output())
    d.stop()
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    ip("link", "set", "eth0", "up")
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("127.0.0.66", 2)
    if not wait_until(lambda: banned("127.0.0.66")):
        fail("no ban:\n" + d.output())
    started = time.time()
    ip("link", "del", "eth0")
    try:
        code = d.proc.wait(15)
    except subprocess.TimeoutExpired:
        fail("the daemon did not exit after its namespace lost eth0:\n" + d.output())
    took = time.time() - started
    if code != 75 or "no interface but loopback" not in d.output() or not 2.5 <= took <= 8:
        fail("exit %s after %.1f s:\n%s" % (code, took, d.output()))
    if subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.strip():
        fail("the table is still there after the exit")
    # Started again (as the restart policy would): the ban is back.
    ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    ip("link", "set", "eth0", "up")
    with open(os.path.join(tree.conf, "portcullis.local"), "a") as f:
        f.write("[Definition]\norphanexit = no\n")
    d = Daemon(binary, tree)
    d.wait_started()
    if not wait_until(lambda: banned("127.0.0.66")):
        fail("the ban did not come back after the restart:\n" + d.output())
    ip("link", "del", "eth0")
    time.sleep(5)
    if d.proc.poll() is not None:
        fail("orphanexit = no, yet the daemon exited:\n" + d.output())
    print("orphan: exit 75 %.1f s after the last interface went" % took)
    d.stop()
    tree.cleanup()


def scenario_hooks(binary, config):
    """fail2ban's `chain` (of the jail, or of its action: iptables-multiport[chain=DOCKER-USER]): INPUT,
    FORWARD/DOCKER-USER and PREROUTING become base chains on those hooks in our table; forward rules match the port the client sent to (ct original proto-dst); check says where each jail
    filters; an unknown chain is an error naming the line. A ban in prerouting blocks as one in input does."""
    Listener()
    tree = Tree(config, chain="PREROUTING")
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("\n[docker]\nenabled = true\nfilter = dovecot\nlogpath = %s\nport = 1100,2000:2010\nchain = DOCKER-USER\n"
                "maxretry = 2\n\n[forwarded]\nenabled = true\nfilter = dovecot\nlogpath = %s\nport = 25\n"
                "action = iptables-multiport[port=\"25\", chain=\"DOCKER-USER\"]\n"
                % (tree.log, tree.log))
    r = check(binary, tree)
    if r.returncode != 0 or r.stdout.count("hook forward") != 2 or "hook prerouting" not in r.stdout:
        fail("check:\n" + r.stdout + r.stderr)
    d = Daemon(binary, tree)
    d.wait_started()
    tree.failure("127.0.0.66", 2)
    if not wait_until(lambda: banned("127.0.0.66") and banned("127.0.0.66", "docker")):
        fail("no ban:\n" + d.output())
    ruleset = subprocess.run(["nft", "list", "table", "inet", "portcullis"], capture_output=True, text=True).stdout
    for needle in ("hook prerouting priority dstnat - 10", "hook forward priority filter - 1", "hook input priority filter - 1",
                   "ct original proto-dst { 1100, 2000-2010 }", "ct original proto-dst 25"):
        if needle not in ruleset:
            fail("%r not in the ruleset:\n%s" % (needle, ruleset))
    forward = subprocess.run(["nft", "list", "chain", "inet", "portcullis", "forward"], capture_output=True, text=True).stdout
    if "th dport" in forward or "tcp dport" in forward:
        fail("a forward rule matches the packet's port, not the original one:\n" + forward)
    if can_connect("127.0.0.66", "127.0.0.1"):
        fail("the prerouting ban does not block")
    if not can_connect("127.0.0.1", "127.0.0.1"):
        fail("an address that is not banned is blocked")
    d.stop()
    with open(os.path.join(tree.conf, "jail.d", "test.local"), "a") as f:
        f.write("\n[bad]\nenabled = true\nfilter = dovecot\nlogpath = %s\nchain = OUTPUT\n" % tree.log)
    r = check(binary, tree)
    if r.returncode == 0 or "test.local:" not in r.stdout or "chain = OUTPUT" not in r.stdout:
        fail("an unknown chain is not an error naming its line:\n" + r.stdout)
    tree.cleanup()


if __name__ == "__main__":
    name, binary, config = sys.argv[1], sys.argv[2], sys.argv[3]
    if os.getuid() != 0:
        fail("must run as root")
    check_private_namespace()
    globals()["scenario_" + name](binary, config)
    print("PASS " + name)
