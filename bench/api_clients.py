#!/usr/bin/env python3
"""Clients for bench/api.sh (run inside its private network namespace, loopback only).

  api_clients.py maillog FILE N           N dovecot failure lines from N distinct addresses (2001:db8::/32), now
  api_clients.py idle HOST PORT N PID PATH  hold N keep-alive connections (one GET PATH each); print PID's memory
  api_clients.py pages HOST PORT LIMIT    walk every page of GET /bans; print per-page latency
"""
import http.client
import json
import resource
import selectors
import socket
import sys
import time


def maillog(path, n):
    stamp = time.strftime("%b %d %H:%M:%S")
    with open(path, "a") as f:
        for i in range(n):
            f.write("%s mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, "
                    "method=PLAIN, rip=2001:db8:%x:%x::1, lip=127.0.0.1, session=<%d>\n" % (stamp, i >> 16, i & 0xffff, i))


def rss_kib(pid):
    pids = [pid]
    # nginx: the master and its workers.
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        with open("/proc/%d/status" % p) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def idle(host, port, n, pid, path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pid)
    sel = selectors.DefaultSelector()
    request = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path.encode()
    socks = []
    t0 = time.monotonic()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, port))
        s.setblocking(False)
        s.send(request)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    answered = 0
    while answered < n and time.monotonic() - t0 < 120:
        for key, _ in sel.select(timeout=1):
            data = key.fileobj.recv(4096)
            if data.startswith(b"HTTP/1.1 200"):
                answered += 1
            sel.unregister(key.fileobj)
    opened = time.monotonic() - t0
    time.sleep(1)
    held = rss_kib(pid)
    # While they are all held, a fresh client is still served promptly.
    c = http.client.HTTPConnection(host, port, timeout=10)
    t1 = time.monotonic()
    c.request("GET", path)
    status = c.getresponse().status
    fresh_ms = (time.monotonic() - t1) * 1000
    c.close()
    alive = 0
    for s in socks:
        try:
            s.send(b"")
            alive += 1
        except OSError:
            pass
    print("idle: %d connections opened and answered %d in %.1f s; RSS %.1f MiB before, %.1f MiB holding them "
          "(%.2f KiB per connection); a fresh request meanwhile: HTTP %d in %.1f ms"
          % (n, answered, opened, before / 1024, held / 1024, (held - before) / max(n, 1), status, fresh_ms))
    for s in socks:
        s.close()


def pages(host, port, limit):
    c = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    total = 0
    cursor = None
    while True:
        path = "/bans?limit=%d" % limit + ("&after=" + cursor if cursor else "")
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
        d = json.loads(body)
        total += len(d["bans"])
        cursor = d["next"]
        if not cursor:
            break
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(len(times) * p))]
    print("pages: %d bans in %d pages of %d; per page (client-measured, keep-alive) p50 %.2f ms, p99 %.2f ms, max %.2f ms"
          % (total, len(times), limit, q(0.5), q(0.99), times[-1]))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "maillog":
        maillog(sys.argv[2], int(sys.argv[3]))
    elif cmd == "idle":
        idle(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif cmd == "pages":
        pages(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
