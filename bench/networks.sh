#!/usr/bin/env bash
# Network bans (issue 13), figures for BENCHMARKS.md, everything in private network namespaces (loopback only):
#   1. 100,000 /64 networks banned and restored beside 100,000 single addresses: portcullis-bench bulk (in-process:
#      jail -> ban manager -> SQLite -> nftables interval sets), A/B with farm-bench, and each run's own figures;
#   2. GET /bans/{ip} with 100,000 /64 networks in force against 100,000 single addresses, and against nginx
#      serving the same JSON as a static file: 20,000 requests on one keep-alive connection (curl), A/B with
#      farm-bench. The daemons run with banaction = dry-run: the lookup is measured, not netlink.
# Usage: bench/networks.sh [RUNS]   (as root; needs nginx: apt-get install nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
if [ -z "${PORTCULLIS_BENCH_NETNS:-}" ]; then
  swift build -c release --product portcullis >/dev/null
  swift build -c release --product portcullis-bench >/dev/null
  exec unshare -n env PORTCULLIS_BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
root=$PWD
bench=$root/.build/release/portcullis-bench
work=$(mktemp -d /tmp/portcullis-networks-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
chmod 755 "$work"  # nginx's workers read the static file from here
daemons=()
cleanup() {
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== 1. 100,000 bans applied and restored: /64 networks (A) against single addresses (B)"
for prefix in 64 128; do "$bench" bulk "$root/config" 100000 "$prefix" | grep -v '^  '; done
farm-bench -n "$runs" --timeout 600 --vs "$bench bulk $root/config 100000 128" -- "$bench" bulk "$root/config" 100000 64

echo
echo "== 2. GET /bans/{ip}: 100,000 /64 networks in force (A) against 100,000 single addresses (B), and nginx"
python3 bench/api_clients.py maillog "$work/mail.log" 100000
start_daemon() {  # NAME PORT PREFIX6
  cp -r config "$work/$1"
  printf '[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\nport = 1100\nbanaction = dry-run\nbanprefix6 = %s\n' \
    "$work/mail.log" "$3" > "$work/$1/jail.d/bench.local"
  printf '[Definition]\ndbfile = %s/%s.sqlite3\nloglevel = WARNING\n[api]\nlisten = 127.0.0.1:%s\nsocket = %s/%s.sock\n' \
    "$work" "$1" "$2" "$work" "$1" > "$work/$1/portcullis.local"
  "$root/.build/release/portcullis" serve --config "$work/$1" 2>"$work/$1.log" &
  daemons+=($!)
}
start_daemon networks 9191 64
start_daemon singles 9192 128
for port in 9191 9192; do
  for _ in $(seq 600); do
    n=$(curl -sf "http://127.0.0.1:$port/jails/dovecot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"]["currentlyBanned"])' 2>/dev/null || echo 0)
    [ "$n" -ge 100000 ] && break
    sleep 0.5
  done
  echo "daemon on $port: $n bans in force"
done
# An address inside the /64 of the 65,538th line (2001:db8:1:2::1 failed), and that address itself.
in_network=http://127.0.0.1:9191/bans/2001:db8:1:2::5
single=http://127.0.0.1:9192/bans/2001:db8:1:2::1
echo "A answers: $(curl -s "$in_network")"
echo "B answers: $(curl -s "$single")"
mkdir -p "$work/www/bans"
curl -s "$single" > "$work/www/bans/single"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:8080;
    root $work/www;
    location / { default_type application/json; }
  }
}
NGINX
nginx -c "$work/nginx.conf"
for _ in $(seq 50); do curl -sf http://127.0.0.1:8080/bans/single >/dev/null && break; sleep 0.1; done
# curl's URL globbing: 20,000 requests, one connection.
farm-bench -n "$runs" --vs "curl -s -o /dev/null $single?n=[1-20000]" -- curl -s -o /dev/null "$in_network?n=[1-20000]"
farm-bench -n "$runs" --vs "curl -s -o /dev/null http://127.0.0.1:8080/bans/single?n=[1-20000]" -- curl -s -o /dev/null "$in_network?n=[1-20000]"
for p in "${daemons[@]}"; do echo "daemon $p: $(grep VmRSS "/proc/$p/status" | tr -s ' \t' ' ')"; done
