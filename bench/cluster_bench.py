#!/usr/bin/env python3
"""The fleet's figures (issue 15), with Tests/IntegrationTests/cluster/fleet.py: a PostgreSQL of our own and three
release-build nodes, each in a network namespace of its own. Run by bench/cluster.sh (in a private namespace).

usage: cluster_bench.py MODE N BINARY CONFIG
  storm-cluster  N bans on mx1, until mx2's and mx3's kernel sets hold them all (the whole process is the figure)
  storm-alone    the yardstick: no [cluster]; the same N failures written to all three nodes' logs, until every
                 node banned them itself (what three hosts attacked at once do without a fleet)
  figures        propagation p50/p99 over 500 bans a few ms apart (each node's GET /events), then an outage:
                 PostgreSQL stopped, N bans on mx1, PostgreSQL started; until mx2 and mx3 hold them all
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "IntegrationTests", "cluster"))
from fleet import Node, Postgres, check, cleanup, connected, private_namespace, wait  # noqa: E402

MODE, N, BINARY, CONFIG = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
work = tempfile.mkdtemp(prefix="portcullis-cluster-bench-")
try:
    private_namespace()
    pg = Postgres(work, BINARY)
    alone = MODE == "storm-alone"
    nodes = [Node(BINARY, CONFIG, work, name, None if alone else pg.conninfo, pg.password_file, follow=MODE == "figures")
             for name in ("mx1", "mx2", "mx3")]
    a, b, c = nodes
    if not alone:
        check(connected(*nodes), "connected")
    storm = ["2001:db8:7::%x" % i for i in range(1, N + 1)]
    wanted = set(storm)
    if MODE in ("storm-cluster", "storm-alone"):
        t = time.monotonic()
        for n in (nodes if alone else [a]):
            n.failures(storm)
        check(wait(lambda: all(wanted <= n.kernel() for n in nodes), 300, step=0.1), "%d bans on every node" % N)
        print("figure: %s: %d bans in the kernel sets of all three nodes %.2f s after the lines were written" % (MODE, N, time.monotonic() - t))
    else:
        singles = ["198.51.100.%d" % (i % 250 + 1) if i < 250 else "203.0.113.%d" % (i % 250 + 1) for i in range(500)]
        for ip in singles:
            a.failures([ip])
            time.sleep(0.005)
        check(wait(lambda: all(n.first("ban", ip) for n in nodes for ip in singles), 60), "500 bans told by every node")
        delays = sorted((n.first("ban", ip) - a.first("ban", ip)) * 1000 for n in (b, c) for ip in singles)
        print("figure: propagation mx1 -> mx2/mx3 (%d): p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (len(delays), delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1], delays[-1]))
        pg.stop()
        check(wait(lambda: not a.cluster()["connected"]), "mx1 sees PostgreSQL gone")
        a.failures(storm)
        check(wait(lambda: wanted <= a.kernel(), 120, step=0.1), "%d bans on mx1 during the outage" % N)
        check(wait(lambda: a.cluster()["queued"] == N, 60), "%d queued" % N)
        t = time.monotonic()
        pg.start()
        check(wait(lambda: wanted <= b.kernel() and wanted <= c.kernel(), 300, step=0.1), "caught up")
        print("figure: catch-up: %d bans queued on mx1 during an outage in mx2's and mx3's kernel sets %.2f s after PostgreSQL started"
              % (N, time.monotonic() - t))
    for n in nodes:
        n.stop()
    pg.stop()
finally:
    cleanup()
    shutil.rmtree(work, ignore_errors=True)
