#!/usr/bin/env bash
# The event feed's fan-out (issue 14), figures for BENCHMARKS.md, in a private network namespace (loopback only):
#   1. subscribers held: the daemon's memory with 0, 100, 500 and 1,000 idle GET /events subscribers;
#   2. delivery: a storm of 10,000 bans to 100 and 500 subscribers (a tenth of them stalled: connected, never
#      reading), events/s delivered to the readers (Python asyncio readers: a floor, the readers are the limit);
#   3. the same with the default events_buffer (1 MiB): stalled subscribers dropped, the daemon's peak memory;
#   4. the ban path: 10,000 bans with 500 stalled subscribers against none, A/B with farm-bench (the readers of 2.
#      cost delivery CPU on the same two cores; stalled ones cost the ban path only their queueing).
# Usage: bench/events.sh [RUNS]   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
if [ -z "${PORTCULLIS_BENCH_NETNS:-}" ]; then
  swift build -c release --product portcullis >/dev/null
  exec unshare -n env PORTCULLIS_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
bin=$PWD/.build/release/portcullis
work=$(mktemp -d /tmp/portcullis-events-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
trap 'rm -rf "$work"' EXIT
fanout() { python3 bench/sse_fanout.py "$bin" config "$work" 9600 "$@"; }

echo "== 1. subscribers held (idle), 1 ban"
for n in 0 100 500 1000; do fanout "$n" "$n" 1; done
echo
echo "== 2. 10,000 bans delivered (events_buffer 64 MiB: every reader gets everything)"
for n in 100 500; do fanout "$n" $((n / 10)) 10000; done
echo
echo "== 3. the same with the default events_buffer (1 MiB)"
EVENTS_BUFFER=1048576 fanout 500 50 10000 || echo "(readers the daemon dropped for reading too slowly: see above)"
echo
echo "== 4. 10,000 bans: with 500 stalled subscribers (A: connected, never reading), against none (B)"
farm-bench -n "$runs" --timeout 600 --vs "python3 bench/sse_fanout.py $bin config $work 9602 0 0 10000 bans-only" -- \
  python3 bench/sse_fanout.py "$bin" config "$work" 9601 500 500 10000 bans-only
