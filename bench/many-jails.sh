#!/usr/bin/env bash
# Many jails: N jails, each on a log of its own, in Portcullis and in fail2ban (the anchor) side by side.
# One run of a daemon: start it, wait until every jail runs, append one failure to every log, wait until every
# address is banned (dry-run in Portcullis, fail2ban's "dummy" action: no packet filter is touched), read the
# daemon's threads and RSS, stop it. Prints the figures; give it to the timing tool for A/B timings:
#
#   bench/many-jails.sh portcullis 300     bench/many-jails.sh fail2ban 300
#
# As root (fail2ban wants its socket under /run); needs Debian's fail2ban and a release build (it builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?portcullis or fail2ban}
jails=${2:-300}
root=$PWD
[ "$which" = portcullis ] && [ ! -x .build/release/portcullis ] && swift build -c release >/dev/null
work=$(mktemp -d /tmp/portcullis-jails-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/logs"
for i in $(seq 1 "$jails"); do : > "$work/logs/j$i.log"; done
jail_section() {  # N ACTION
  printf '[j%s]\nenabled = true\nfilter = sshd\nlogpath = %s/logs/j%s.log\nbackend = auto\nmaxretry = 1\nbanaction = %s\n\n' "$1" "$work" "$1" "$2"
}

start=$(date +%s.%N)
: > "$work/daemon.log"
if [ "$which" = portcullis ]; then
  cp -r config "$work/conf"
  for i in $(seq 1 "$jails"); do jail_section "$i" dry-run; done > "$work/conf/jail.d/jails.local"
  printf '[Definition]\ndbfile = %s/db.sqlite3\nloglevel = NOTICE\n[api]\nlisten =\nsocket =\n' "$work" > "$work/conf/portcullis.local"
  "$root/.build/release/portcullis" serve --config "$work/conf" 2> "$work/daemon.log" &
  pid=$!
  ready() { grep -q "started with $jails jail(s)" "$work/daemon.log"; }
  banned() { grep -c "] Ban " "$work/daemon.log" || true; }
else
  cp -r /etc/fail2ban "$work/conf"
  rm -f "$work/conf/jail.d/"*
  for i in $(seq 1 "$jails"); do jail_section "$i" dummy; done > "$work/conf/jail.d/jails.local"
  printf '[Definition]\nlogtarget = %s/daemon.log\nloglevel = INFO\nsocket = %s/f2b.sock\npidfile = %s/f2b.pid\ndbfile = %s/f2b.sqlite3\n' \
    "$work" "$work" "$work" "$work" > "$work/conf/fail2ban.local"
  /usr/bin/python3 /usr/bin/fail2ban-server -f -x -c "$work/conf" > /dev/null 2>&1 &
  pid=$!
  ready() { [ "$(grep -c "Jail 'j[0-9]*' started" "$work/daemon.log" || true)" -ge "$jails" ]; }
  banned() { grep -c "\] Ban " "$work/daemon.log" || true; }
fi
for _ in $(seq 1 1200); do ready && break; sleep 0.05; done
ready || { echo "not ready:"; tail -5 "$work/daemon.log"; exit 1; }
started=$(date +%s.%N)
stamp=$(date "+%b %e %H:%M:%S")
for i in $(seq 1 "$jails"); do
  printf '%s host sshd[1]: Failed password for root from 198.51.%d.%d port 22 ssh2\n' "$stamp" $((i / 250)) $((i % 250 + 1)) >> "$work/logs/j$i.log"
done
for _ in $(seq 1 1200); do [ "$(banned)" -ge "$jails" ] && break; sleep 0.05; done
done_at=$(date +%s.%N)
threads=$(awk '/^Threads:/ {print $2}' /proc/$pid/status)
rss=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)
echo "$which: $jails jails ready in $(echo "$started - $start" | bc) s; $(banned) of $jails banned $(echo "$done_at - $started" | bc) s after the lines; threads $threads, RSS $((rss / 1024)) MiB"
