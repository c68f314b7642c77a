#!/usr/bin/env python3
"""Event-feed fan-out: one `portcullis serve` (dry-run jail, maxretry = 1), N subscribers on GET /events (some of
them stalled: connected, never reading), then a storm of K failure lines, one ban each. Prints when the last ban
was made, when every reading subscriber had every ban event, the events/s delivered, and the daemon's memory
(idle, with the subscribers held, peak). Run inside a private network namespace (bench/events.sh does).

usage: sse_fanout.py BINARY CONFIG_DIR WORKDIR PORT SUBSCRIBERS STALLED BANS [bans-only]
  bans-only: stop once the bans are made (for timing the ban path with and without subscribers, A/B).
"""
import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

binary, config, work, port, n, stalled, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
bans_only = sys.argv[8:9] == ["bans-only"]
conf = os.path.join(work, f"conf-{port}")
shutil.rmtree(conf, ignore_errors=True)
shutil.copytree(config, conf)
log = os.path.join(work, f"mail-{port}.log")
open(log, "w").close()
db = os.path.join(work, f"db-{port}.sqlite3")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(db + suffix):
        os.remove(db + suffix)
with open(os.path.join(conf, "jail.d", "bench.local"), "w") as f:
    f.write(f"[dovecot]\nenabled = true\nlogpath = {log}\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\nport = 1100\nbanaction = dry-run\n")
with open(os.path.join(conf, "portcullis.local"), "w") as f:
    f.write(f"[Definition]\ndbfile = {db}\nloglevel = WARNING\n[api]\nlisten = 127.0.0.1:{port}\nsocket = {work}/api-{port}.sock\n"
            # Python reads slower than the daemon writes: a large buffer (EVENTS_BUFFER, default 64 MiB), so that
            # what is measured is delivery to every subscriber, not how many a Python reader keeps up with.
            f"max_connections_per_client = 100000\nevents_buffer = {os.environ.get('EVENTS_BUFFER', '67108864')}\n")
daemon = subprocess.Popen([binary, "serve", "--config", conf], stderr=open(os.path.join(work, f"serve-{port}.log"), "w"))


def rss_kb(field="VmRSS"):
    with open(f"/proc/{daemon.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def bans():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jails/dovecot", timeout=5) as r:
            import json
            return json.load(r)["actions"]["currentlyBanned"]
    except OSError:
        return -1


for _ in range(200):
    if bans() >= 0:
        break
    time.sleep(0.05)
idle_kb = rss_kb()


async def subscriber(done, counts, i, reading):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(b"GET /events?types=ban HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    if not reading:
        await done.wait()
        writer.close()
        return
    seen = 0
    tail = b""
    while seen < k:
        data = await reader.read(1 << 18)
        if not data:
            break
        chunk = tail + data
        seen += chunk.count(b"\nevent: ban\n")
        # Shorter than the pattern: a match is never counted twice.
        tail = chunk[-11:]
    counts[i] = seen
    counts["last"] = time.monotonic()
    writer.close()


async def main():
    done = asyncio.Event()
    counts = {}
    tasks = [asyncio.create_task(subscriber(done, counts, i, i >= stalled)) for i in range(n)]
    # The same wait with or without subscribers (A/B runs compare whole processes).
    await asyncio.sleep(2)
    held_kb = rss_kb()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
    lines = "".join(
        f"{stamp} mail dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u>, method=PLAIN, "
        f"rip=2001:db8:{i >> 16:x}:{i & 0xffff:x}::1, lip=127.0.0.1, session=<s{i}>\n" for i in range(k))
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(lines)
    peak = 0
    banned_at = None
    while True:
        peak = max(peak, rss_kb())
        if banned_at is None and bans() >= k:
            banned_at = time.monotonic()
        readers_done = bans_only or all(t.done() for t in tasks[stalled:])
        if banned_at is not None and readers_done:
            break
        if time.monotonic() - start > 300:
            print("timed out", file=sys.stderr)
            break
        await asyncio.sleep(0.05)
    done.set()
    if bans_only:
        print(f"subscribers {n}: {k} bans in {banned_at - start:.2f} s")
        return
    await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(v for key, v in counts.items() if key != "last")
    last = counts.get("last", banned_at)
    readers = n - stalled
    complete = sum(1 for key, v in counts.items() if key != "last" and v == k)
    print(f"subscribers {n} ({stalled} stalled): {k} bans in {banned_at - start:.2f} s; "
          f"{complete}/{readers} readers got all {k} in {last - start:.2f} s, "
          f"{delivered / max(last - start, 1e-9):,.0f} events/s delivered; "
          f"daemon RSS idle {idle_kb / 1024:.1f} MB, with the subscribers {held_kb / 1024:.1f} MB, peak {max(peak, rss_kb('VmHWM')) / 1024:.1f} MB")
    if complete != readers:
        sys.exit(1)


try:
    asyncio.run(main())
finally:
    daemon.terminate()
    daemon.wait()
