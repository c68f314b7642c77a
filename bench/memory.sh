#!/usr/bin/env bash
# Memory and start-up beside fail2ban, in one run (issue 12's targets: idle daemon <= 12 MB, <= 30 MB holding
# 100,000 bans and no peak above 50 MB while banning them, `portcullis status` <= 5 ms):
#   - an idle daemon with one dovecot jail (resident memory after start-up), Portcullis and fail2ban-server;
#   - 100,000 distinct addresses banned through nftables in a private network namespace: the peak while banning
#     and the resident memory holding them;
#   - `portcullis status` against `fail2ban-client status`, whole processes, timed by farm-bench.
# Both Portcullis builds are measured: the plain release build and the one the Dockerfile makes
# (--static-swift-stdlib).
# Usage: bench/memory.sh [BANS]     (as root; default 100000; needs fail2ban, nftables, farm-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
bans=${1:-100000}
root=$PWD
swift build -c release --product portcullis >/dev/null
swift build -c release --product portcullis --static-swift-stdlib --scratch-path .build-static >/dev/null
# shellcheck disable=SC2034  # read through ${!build}
dynamic=$root/.build/release/portcullis
static=$root/.build-static/release/portcullis
work=$(mktemp -d /tmp/portcullis-memory-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
trap 'rm -rf "$work"' EXIT

rss() { awk '/^VmRSS:/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM:/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }

# A Portcullis tree with one dovecot jail in dry-run mode on an empty log, its API on a Unix socket.
mkconf() {  # DIR LOG BANACTION
  cp -r config "$1"
  printf '[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nbantime = 1h\nfindtime = 1h\nport = 1100\nbanaction = %s\n' \
    "$2" "$3" > "$1/jail.d/bench.local"
  printf '[Definition]\ndbfile = %s/db.sqlite3\nloglevel = WARNING\n[api]\nlisten =\nsocket = %s/api.sock\n' "$1" "$1" > "$1/portcullis.local"
}

: > "$work/idle.log"
echo "== idle, one dovecot jail (resident memory 3 s after start)"
for build in dynamic static; do
  bin=${!build}
  rm -rf "$work/conf-$build"; mkconf "$work/conf-$build" "$work/idle.log" dry-run
  "$bin" serve --config "$work/conf-$build" 2>"$work/serve-$build.log" &
  pid=$!
  sleep 3
  echo "portcullis ($build): $(rss $pid)"
  if [ "$build" = static ]; then
    echo
    echo "== portcullis status against fail2ban-client status (farm-bench, whole processes)"
    mkdir -p "$work/f2b"; cp -r /etc/fail2ban/. "$work/f2b/"; rm -f "$work/f2b/jail.d/"*
    printf '[DEFAULT]\ndbfile = :memory:\n[dovecot]\nenabled = true\nlogpath = %s\nbackend = polling\nmaxretry = 1\nbanaction = dummy\n' \
      "$work/idle.log" > "$work/f2b/jail.local"
    printf '[Definition]\nloglevel = WARNING\nlogtarget = %s/f2b-server.log\ndbfile = :memory:\n' "$work" > "$work/f2b/fail2ban.local"
    fail2ban-server -f -x -c "$work/f2b" -s "$work/f2b.sock" -p "$work/f2b.pid" >/dev/null 2>&1 &
    f2b=$!
    sleep 4
    echo "fail2ban-server idle: $(rss $f2b)"
    farm-bench -n 10 --vs "fail2ban-client -s $work/f2b.sock status dovecot" -- \
      "$static" status dovecot --socket "$work/conf-static/api.sock" | grep -E 'wall|peak|A/B'
    kill $f2b; wait $f2b 2>/dev/null || true
  fi
  kill $pid; wait $pid || true
done

echo
echo "== $bans distinct addresses banned (nftables, private network namespace)"
python3 - "$work/storm.log" "$bans" <<'PY'
import sys, time
path, n = sys.argv[1], int(sys.argv[2])
stamp = time.strftime("%b %d %H:%M:%S")
with open(path, "w") as f:
    for i in range(n):
        f.write("%s pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, "
                "rip=2001:db8:%x:%x::1, lip=127.0.0.1, session=<%d>\n" % (stamp, i >> 16, i & 0xffff, i))
PY
for build in dynamic static; do
  bin=${!build}
  rm -rf "$work/storm-$build"; mkconf "$work/storm-$build" "$work/storm.log" nftables
  unshare -n bash -c "ip link set lo up
    $bin serve --config $work/storm-$build 2>$work/storm-$build.log &
    pid=\$!
    for i in \$(seq 600); do
      n=\$($bin status dovecot --socket $work/storm-$build/api.sock --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"actions\"][\"currentlyBanned\"])' 2>/dev/null || echo 0)
      [ \"\$n\" -ge $bans ] && break
      sleep 0.5
    done
    sleep 6
    echo \"portcullis ($build): \$n bans; peak while banning \$(awk '/^VmHWM:/ {printf \"%.1f MB\", \$2 / 1024}' /proc/\$pid/status), holding them \$(awk '/^VmRSS:/ {printf \"%.1f MB\", \$2 / 1024}' /proc/\$pid/status)\"
    kill \$pid; wait \$pid || true"
done
