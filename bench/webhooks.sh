#!/usr/bin/env bash
# Webhook throughput (issue 14), figures for BENCHMARKS.md, in a private network namespace (loopback only): nginx
# answers 204 to every POST; a daemon bans 10,000 addresses with one webhook to it (signed, in order, one kept-alive
# libcurl connection), against a Python sender POSTing 10,000 signed bodies over one keep-alive connection (the
# yardstick), A/B with farm-bench, and each run's own figures.
# Usage: bench/webhooks.sh [RUNS]   (as root; needs nginx: apt-get install nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
if [ -z "${PORTCULLIS_BENCH_NETNS:-}" ]; then
  swift build -c release --product portcullis >/dev/null
  exec unshare -n env PORTCULLIS_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
bin=$PWD/.build/release/portcullis
work=$(mktemp -d /tmp/portcullis-webhooks-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
cleanup() {
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work;
  server { listen 127.0.0.1:9700; keepalive_requests 1000000; location / { return 204; } }
}
NGINX
nginx -c "$work/nginx.conf"
python3 bench/webhook_throughput.py python config "$work" 9700 10000
python3 bench/webhook_throughput.py "$bin" config "$work" 9700 10000
farm-bench -n "$runs" --timeout 600 --vs "python3 bench/webhook_throughput.py python config $work 9700 10000" -- \
  python3 bench/webhook_throughput.py "$bin" config "$work" 9700 10000
