#!/usr/bin/env bash
# The fleet's figures (issue 15), for BENCHMARKS.md: a PostgreSQL of our own and three release-build nodes, each
# in a network namespace of its own, all inside a private namespace. Prints propagation p50/p99, the catch-up after
# an outage, and one storm replicated against the yardstick (the same storm hitting all three nodes without a
# fleet). Usage: bench/cluster.sh [N]   (as root; needs postgresql, nftables)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
if [ -z "${PORTCULLIS_BENCH_NETNS:-}" ]; then
  swift build -c release --product portcullis >/dev/null
  exec unshare -n -m --propagation private env PORTCULLIS_BENCH_NETNS=1 "$0" "$@"
fi
bin=$PWD/.build/release/portcullis
python3 bench/cluster_bench.py figures "$n" "$bin" config | grep figure
python3 bench/cluster_bench.py storm-cluster "$n" "$bin" config | grep figure
python3 bench/cluster_bench.py storm-alone "$n" "$bin" config | grep figure
