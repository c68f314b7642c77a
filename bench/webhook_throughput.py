#!/usr/bin/env python3
"""Webhook throughput: a `portcullis serve` (dry-run jail, maxretry = 1) with one webhook to a receiver on
loopback (nginx answering 204, started by bench/webhooks.sh), N failure lines written at once: N bans, N signed
deliveries. Prints when the last ban was made and when the last delivery was, and deliveries/s. With `python`
instead of BINARY: the yardstick, this script itself POSTing N signed bodies of the same size over one keep-alive
connection (http.client), the way a sequential sender does it at best.

usage: webhook_throughput.py BINARY|python CONFIG_DIR WORKDIR RECEIVER_PORT N
"""
import hashlib
import hmac
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

binary, config, work, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
secret = b"bench-secret"
body = json.dumps({"type": "ban", "jail": "dovecot", "ip": "2001:db8::1", "bannedAt": "2026-12-07T00:00:00Z", "matches": ["x" * 160]}).encode()

if binary == "python":
    start = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        c.request("POST", "/hook", body=body, headers={"Content-Type": "application/json", "X-Portcullis-Signature": sig})
        r = c.getresponse()
        r.read()
        assert r.status == 204
    took = time.monotonic() - start
    print(f"python sender: {n} signed POSTs in {took:.2f} s, {n / took:,.0f}/s")
    sys.exit(0)

api_port = port + 1
conf = os.path.join(work, "conf-hooks")
shutil.rmtree(conf, ignore_errors=True)
shutil.copytree(config, conf)
log = os.path.join(work, "mail-hooks.log")
open(log, "w").close()
db = os.path.join(work, "db-hooks.sqlite3")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(db + suffix):
        os.remove(db + suffix)
secret_file = os.path.join(work, "hook.secret")
with open(secret_file, "wb") as f:
    f.write(secret + b"\n")
with open(os.path.join(conf, "jail.d", "bench.local"), "w") as f:
    f.write(f"[dovecot]\nenabled = true\nlogpath = {log}\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\nport = 1100\nbanaction = dry-run\n"
            f"action = webhook[url=\"http://127.0.0.1:{port}/hook\", secret_file={secret_file}, queue={n}]\n")
with open(os.path.join(conf, "portcullis.local"), "w") as f:
    f.write(f"[Definition]\ndbfile = {db}\nloglevel = WARNING\n[api]\nlisten = 127.0.0.1:{api_port}\nsocket = {work}/api-hooks.sock\n")
daemon = subprocess.Popen([binary, "serve", "--config", conf], stderr=open(os.path.join(work, "serve-hooks.log"), "w"))


def metric(name, labels):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{" + labels + "}"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return 0.0


try:
    for _ in range(200):
        if metric("portcullis_up", "") is not None:
            break
        time.sleep(0.05)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    lines = "".join(
        f"{stamp} mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u>, method=PLAIN, "
        f"rip=2001:db8:{i >> 16:x}:{i & 0xffff:x}::1, lip=127.0.0.1, session=<s{i}>\n" for i in range(n))
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(lines)
    label = f'webhook="dovecot/1",host="127.0.0.1:{port}",outcome="delivered"'
    banned = None
    while True:
        if banned is None and (metric("portcullis_bans_total", 'jail="dovecot"') or 0) >= n:
            banned = time.monotonic() - start
        if (metric("portcullis_webhook_deliveries_total", label) or 0) >= n:
            break
        if time.monotonic() - start > 300:
            sys.exit("timed out")
        time.sleep(0.02)
    took = time.monotonic() - start
    print(f"portcullis: {n} bans in {banned if banned is not None else took:.2f} s, {n} deliveries in {took:.2f} s, {n / took:,.0f}/s")
finally:
    daemon.terminate()
    daemon.wait()
