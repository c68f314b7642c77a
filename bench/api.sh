#!/usr/bin/env bash
# Admin API benchmarks, in a private network namespace (loopback only), figures for BENCHMARKS.md:
#   1. GET /jails/dovecot, keep-alive, 64 connections (wrk -t2 -c64): Portcullis against nginx serving the same
#      JSON as a static file, alternating, ROUNDS rounds each;
#   2. 10,000 idle keep-alive connections held: memory of Portcullis and of nginx;
#   3. 100,000 active bans: every page of GET /bans?limit=100 timed, and wrk on a first and a middle page.
# The daemon runs with banaction = dry-run: the API is measured, not netlink (bench/bans.sh measures that).
# Usage: bench/api.sh [ROUNDS] [DURATION]   (as root; needs wrk and nginx: apt-get install wrk nginx-light)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PORTCULLIS_BENCH_NETNS:-}" ]; then
  swift build -c release --product portcullis >/dev/null
  exec unshare -n env PORTCULLIS_BENCH_NETNS=1 "$0" "$@"
fi
rounds=${1:-3}
duration=${2:-10s}
ip link set lo up
ulimit -n "$(ulimit -Hn)"
root=$PWD
work=$(mktemp -d /tmp/portcullis-api-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
chmod 755 "$work"  # nginx's workers (www-data) read the static file from here
cleanup() {
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if [ -n "${daemon:-}" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cp -r config "$work/conf"
: > "$work/mail.log"
printf '[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nfindtime = 1h\nbantime = 1d\nport = pop3,pop3s,1100\nbanaction = dry-run\n' \
  "$work/mail.log" > "$work/conf/jail.d/bench.local"
printf '[Definition]\ndbfile = %s/db.sqlite3\nloglevel = WARNING\n[api]\nlisten = 127.0.0.1:9191\nsocket = %s/api.sock\nmax_connections = 20000\nidle_timeout = 300\n' \
  "$work" "$work" > "$work/conf/portcullis.local"
"$root/.build/release/portcullis" serve --config "$work/conf" 2>"$work/serve.log" &
daemon=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:9191/health >/dev/null && break; sleep 0.1; done

# A few bans, so that the document is a real one.
for ip in 203.0.113.7 203.0.113.8 2001:db8::7; do
  curl -sf --unix-socket "$work/api.sock" -H 'Content-Type: application/json' -d "{\"ip\": \"$ip\"}" http://localhost/jails/dovecot/bans >/dev/null
done
mkdir -p "$work/www/jails"
curl -sf http://127.0.0.1:9191/jails/dovecot > "$work/www/jails/dovecot"
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:8080;
    root $work/www;
    location / { default_type application/json; }
  }
}
NGINX
nginx -c "$work/nginx.conf"
for _ in $(seq 50); do curl -sf http://127.0.0.1:8080/jails/dovecot >/dev/null && break; sleep 0.1; done

echo "== machine: $(nproc) cores; $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); $(nginx -v 2>&1); nginx worker_processes auto ($(nproc)); portcullis [api] threads = 0 ($(nproc) loops)"
echo "== GET /jails/dovecot ($(wc -c < "$work/www/jails/dovecot") bytes of JSON), wrk -t2 -c64 -d$duration, keep-alive"
run_wrk() {  # NAME URL
  wrk -t2 -c64 -d"$duration" --latency "$2" > "$work/wrk.out"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
  errors=$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr '\n' ' ' || true)
  printf '%-11s %10s req/s  p50 %8s  p99 %8s  %s\n' "$1" "$rps" "$(awk '$1 == "50%" {print $2}' "$work/wrk.out")" \
    "$(awk '$1 == "99%" {print $2}' "$work/wrk.out")" "$errors"
  echo "$1 $rps" >> "$work/rates"
}
for _ in $(seq "$rounds"); do
  run_wrk portcullis http://127.0.0.1:9191/jails/dovecot
  run_wrk nginx http://127.0.0.1:8080/jails/dovecot
done
awk '{sum[$1] += $2; n[$1]++} END {printf "mean: portcullis %.0f req/s, nginx %.0f req/s: portcullis at %.0f%% of nginx\n", sum["portcullis"]/n["portcullis"], sum["nginx"]/n["nginx"], 100*sum["portcullis"]/sum["nginx"]}' "$work/rates"
echo

echo "== 10,000 idle keep-alive connections"
printf 'portcullis '; python3 bench/api_clients.py idle 127.0.0.1 9191 10000 "$daemon" /jails/dovecot
printf 'nginx      '; python3 bench/api_clients.py idle 127.0.0.1 8080 10000 "$(cat "$work/nginx.pid")" /jails/dovecot
echo

echo "== 100,000 active bans"
python3 bench/api_clients.py maillog "$work/mail.log" 100000
for _ in $(seq 600); do
  n=$(curl -sf http://127.0.0.1:9191/metrics | awk '/^portcullis_bans_active\{jail="dovecot"\}/ {print $2}')
  [ "${n:-0}" -ge 100000 ] && break
  sleep 0.5
done
echo "bans active: $n"
python3 bench/api_clients.py pages 127.0.0.1 9191 100
middle=$(curl -sf 'http://127.0.0.1:9191/bans?limit=1000' | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
for _ in $(seq 48); do
  middle=$(curl -sf "http://127.0.0.1:9191/bans?limit=1000&after=$middle" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
done
echo "wrk -t2 -c8 on one page of 100 (first page, and after 50,000 bans):"
for path in "/bans?limit=100" "/bans?limit=100&after=$middle"; do
  wrk -t2 -c8 -d5s --latency "http://127.0.0.1:9191$path" > "$work/wrk.out"
  printf '  %-34s %10s req/s  p50 %8s  p99 %8s\n' "${path:0:34}" "$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")" \
    "$(awk '$1 == "50%" {print $2}' "$work/wrk.out")" "$(awk '$1 == "99%" {print $2}' "$work/wrk.out")"
done
grep -E 'VmHWM|VmRSS' /proc/$daemon/status | tr -s ' \t' ' ' | sed 's/^/daemon with 100,000 bans: /'
