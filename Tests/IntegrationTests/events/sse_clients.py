#!/usr/bin/env python3
"""GET /events with real SSE clients against a running `portcullis serve`: httpx-sse (a client library from
PyPI) and `curl -N`, including resuming with Last-Event-ID and a subscriber that stops reading.

usage: sse_clients.py URL READ_TOKEN_FILE ADMIN_TOKEN_FILE MAIL_LOG

The daemon runs with `events_buffer = 65536` and `events_keepalive = 1`, a dovecot jail on MAIL_LOG with
maxretry = 2. Prints one line per check; exits non-zero at the first that fails.
"""
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import httpx
from httpx_sse import connect_sse

URL, READ_FILE, ADMIN_FILE, MAIL_LOG = sys.argv[1:5]
T0 = time.monotonic()
READ = {"Authorization": "Bearer " + open(READ_FILE).read().strip()}
ADMIN = {"Authorization": "Bearer " + open(ADMIN_FILE).read().strip()}


def check(condition, what):
    if not condition:
        print("FAIL", what, flush=True)
        sys.exit(1)
    print("ok  ", what, f"({time.monotonic() - T0:.1f} s)", flush=True)


def ban(client, ip):
    r = client.post(URL + "/jails/dovecot/bans", json={"ip": ip}, headers=ADMIN)
    check(r.status_code == 201, f"POST ban {ip}: {r.status_code}")


def unban(client, ip):
    r = client.delete(URL + "/bans/" + ip, headers=ADMIN)
    check(r.status_code == 200, f"DELETE /bans/{ip}: {r.status_code}")


def follow(client, path, count, headers=None, until=None):
    """Opens the feed and collects `count` events (ignores comments), then closes. `until` runs once the feed is
    open (its head received)."""
    got = []
    with connect_sse(client, "GET", URL + path, headers={**READ, **(headers or {})}) as source:
        check(source.response.status_code == 200, f"GET {path} {headers or ''}: 200, {source.response.headers.get('content-type')}")
        if until:
            threading.Thread(target=until, daemon=True).start()
        for sse in source.iter_sse():
            # The first block carries only `retry:` (how long to wait before reconnecting): httpx-sse yields it.
            if not sse.data:
                continue
            got.append(sse)
            if len(got) == count:
                break
    return got


def httpx_sse_live_and_resume():
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client, httpx.Client(timeout=10.0) as admin:
        def storm():
            time.sleep(0.2)
            ban(admin, "203.0.113.40")
            unban(admin, "203.0.113.40")
            ban(admin, "2001:db8:40::/64")

        events = follow(client, "/events", 3, until=storm)
        check([e.event for e in events] == ["ban", "unban", "ban"], f"httpx-sse: ban, unban, ban in order ({[e.event for e in events]})")
        data = [json.loads(e.data) for e in events]
        check(data[0]["ip"] == "203.0.113.40" and data[1]["reason"] == "request" and data[2]["ip"] == "2001:db8:40::/64",
              "httpx-sse: the JSON of each event")
        ids = [int(e.id) for e in events]
        check(ids == sorted(ids) and len(set(ids)) == 3, f"httpx-sse: increasing ids {ids}")

        # Gone for a while: what happened meanwhile comes first when the client is back with its last id.
        unban(admin, "2001:db8:40::/64")
        ban(admin, "198.51.100.41")
        missed = follow(client, "/events", 2, headers={"Last-Event-ID": events[-1].id})
        check([(m.event, json.loads(m.data)["ip"]) for m in missed] == [("unban", "2001:db8:40::/64"), ("ban", "198.51.100.41")],
              "httpx-sse: resumed with Last-Event-ID, the two events missed")
        unban(admin, "198.51.100.41")


def curl_n():
    with httpx.Client(timeout=10.0) as admin:
        token = READ["Authorization"]
        curl = subprocess.Popen(["curl", "-sN", "--max-time", "4", "-H", "Authorization: " + token, URL + "/events?jail=dovecot"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        ban(admin, "203.0.113.42")
        out, _ = curl.communicate(timeout=15)
        check("event: ban" in out and '"ip":"203.0.113.42"' in out, "curl -N: the ban arrives while curl waits")
        check(": keep-alive" in out, "curl -N: keep-alive comments on a quiet stream (events_keepalive = 1)")
        unban(admin, "203.0.113.42")


def failure_lines(n, start):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    return "".join(
        f"{stamp} mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u{i}>, method=PLAIN, "
        f"rip=2001:db8:9::{i + start:x}, lip=127.0.0.1, session=<s{i}>\n" for i in range(n))


def slow_subscriber():
    """One subscriber stops reading (a small receive window), another keeps up: 5,000 failure events later the
    first is dropped with a `close` event saying why, the second has every one."""
    n = 5000
    stalled = socket.create_connection(("127.0.0.1", int(URL.rsplit(":", 1)[1])))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    stalled.sendall(b"GET /events?types=failure HTTP/1.1\r\nHost: localhost\r\n" + f"Authorization: {READ['Authorization']}\r\n\r\n".encode())
    with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
        def write():
            time.sleep(0.3)
            # 5,000 lines a second: what a Python reader keeps up with, and far more than the stalled one's buffers.
            for start in range(0, n, 100):
                with open(MAIL_LOG, "a") as f:
                    f.write(failure_lines(100, start + 1))
                time.sleep(0.02)

        events = follow(client, "/events?types=failure", n, until=write)
        check(len(events) == n and all(e.event == "failure" for e in events), f"a subscriber that keeps up gets all {n} failure events")
    # Reading at last, with a window that lets it go fast.
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    stalled.settimeout(10)
    data = b""
    while True:
        chunk = stalled.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode(errors="replace")
    check("event: close" in text and "read too slowly" in text, "the stalled subscriber was dropped with a close event saying why")
    stalled.close()
    metrics = httpx.get(URL + "/metrics", headers=READ).text
    check("portcullis_event_subscribers_dropped_total 1" in metrics, "metrics count the dropped subscriber")


httpx_sse_live_and_resume()
curl_n()
slow_subscriber()
print("all passed")
