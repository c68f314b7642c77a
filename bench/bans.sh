#!/usr/bin/env bash
# Ban benchmarks with the real kernel, each in a private network namespace (never the host's packet filter):
#   - ban latency: a failure line appended -> the address in the kernel set (p50/p99);
#   - 100,000 distinct addresses banned (maxretry = 1), and a restart restoring them;
#   - the daemon's RSS with 100,000 active bans;
#   - fail2ban (where installed) banning through its nftables action, in the same run.
# Usage: bench/bans.sh [BANS]     (as root; default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
bans=${1:-100000}
swift build -c release >/dev/null
root=$PWD
work=$(mktemp -d /tmp/portcullis-bans-XXXXXX)
if [ -z "$work" ] || [ ! -d "$work" ]; then echo "mktemp failed" >&2; exit 1; fi
trap 'rm -rf "$work"' EXIT

# Counts the elements of every set in this namespace's ruleset.
count_elements='import json,sys
d=json.load(sys.stdin)
print(sum(len(x["set"].get("elem",[])) for x in d["nftables"] if "set" in x))'

# N failure lines from distinct IPv6 addresses (documentation range), stamped now.
write_failures() {  # FILE N PREFIX
  python3 -c '
import sys, time
path, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stamp = time.strftime("%b %d %H:%M:%S")
with open(path, "a") as f:
    for i in range(n):
        f.write("%s pop3-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, "
                "rip=%s:%x:%x::1, lip=127.0.0.1, session=<%d>\n" % (stamp, prefix, i >> 16, i & 0xffff, i))
' "$1" "$2" "$3"
}

echo "== Portcullis (in-process: jail -> ban manager -> SQLite -> nftables)"
unshare -n bash -c "ip link set lo up
  $root/.build/release/portcullis-bench latency $root/config 1000
  $root/.build/release/portcullis-bench bulk $root/config $bans"

echo
echo "== Portcullis daemon with $bans active bans"
write_failures "$work/mail.log" "$bans" 2001:db8
cp -r config "$work/conf"
printf '[dovecot]\nenabled = true\nlogpath = %s\nmaxretry = 1\nbantime = 1h\nfindtime = 1h\nport = 1100\n' \
  "$work/mail.log" > "$work/conf/jail.d/bench.local"
printf '[Definition]\ndbfile = %s/db.sqlite3\nloglevel = WARNING\n[api]\nlisten =\nsocket = %s/api.sock\n' "$work" "$work" > "$work/conf/portcullis.local"
unshare -n bash -c "ip link set lo up
  $root/.build/release/portcullis serve --config $work/conf 2>$work/serve.log &
  pid=\$!
  start=\$(date +%s.%N)
  n=0
  for i in \$(seq 600); do
    n=\$(nft -j list ruleset | python3 -c '$count_elements')
    [ \"\$n\" -ge $bans ] && break
    sleep 0.5
  done
  end=\$(date +%s.%N)
  echo \"daemon: \$n addresses in the kernel after \$(python3 -c \"print(round(\$end - \$start, 1))\") s (start-up and reading the log included)\"
  grep -E 'VmHWM' /proc/\$pid/status | tr -s ' \t' ' ' | sed 's/^/daemon peak during the storm: /'
  for t in 6 12 18 24; do
    sleep 6
    grep -E 'VmRSS' /proc/\$pid/status | tr -s ' \t' ' ' | sed \"s/^/daemon holding the bans, \$t s later: /\"
  done
  kill \$pid; wait \$pid || true"

if command -v fail2ban-server >/dev/null; then
  echo
  f2b_n=300
  echo "== fail2ban $(fail2ban-server -V | head -1) with banaction = nftables-multiport, $f2b_n distinct addresses"
  mkdir -p "$work/f2b"
  cp -r /etc/fail2ban/. "$work/f2b/"
  rm -f "$work/f2b/jail.d/"*
  : > "$work/f2b.log"
  printf '[DEFAULT]\ndbfile = :memory:\n[dovecot]\nenabled = true\nlogpath = %s\nbackend = polling\nmaxretry = 1\nfindtime = 1h\nbantime = 1h\nport = 1100\nbanaction = nftables-multiport\n' \
    "$work/f2b.log" > "$work/f2b/jail.local"
  printf '[Definition]\nloglevel = WARNING\nlogtarget = %s/f2b-server.log\ndbfile = :memory:\n' "$work" > "$work/f2b/fail2ban.local"
  unshare -n bash -c "ip link set lo up
    fail2ban-server -f -x -c $work/f2b -s $work/f2b.sock -p $work/f2b.pid >/dev/null 2>&1 &
    pid=\$!
    sleep 3
    $(declare -f write_failures)
    write_failures $work/f2b.log $f2b_n 2001:db8:99
    start=\$(date +%s.%N)
    n=0
    for i in \$(seq 1200); do
      n=\$(nft -j list ruleset | python3 -c '$count_elements')
      [ \"\$n\" -ge $f2b_n ] && break
      sleep 0.25
    done
    end=\$(date +%s.%N)
    python3 -c \"t=\$end-\$start; print('fail2ban: %d addresses in the kernel after %.1f s: %.0f bans/s (each ban runs nft in a new process)' % (\$n, t, \$n/t))\"
    grep -E 'VmRSS|VmHWM' /proc/\$pid/status | tr -s ' \t' ' ' | sed 's/^/fail2ban-server /'
    kill \$pid; wait \$pid 2>/dev/null || true"
fi
