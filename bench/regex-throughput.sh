#!/usr/bin/env bash
# Throughput of `portcullis regex` against `fail2ban-regex` on the same generated mail.log with the same dovecot
# filter, in one run (this machine is shared and noisy: compare the ratio, not the absolute figures).
# Also: peak RSS while streaming a log of about 1 GiB, and the live path (watcher → filter → tracker).
#
# Usage: bench/regex-throughput.sh [LINES]      (default 1000000; needs fail2ban, python3, /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."

lines=${1:-1000000}
data=bench-data
mkdir -p "$data"
log="$data/mail-$lines.log"
[ -f "$log" ] || python3 bench/gen_maillog.py "$lines" "$log"
swift build -c release >/dev/null
pc=.build/release/portcullis
f2b_filter=/etc/fail2ban/filter.d/dovecot.conf

processed() { grep -o 'processed in [0-9.]*' | awk '{print $3}'; }
summary() { grep '^Lines:'; }
best_of() {  # best_of N command... → best "processed in" seconds
  local n=$1; shift; local best=""
  for _ in $(seq "$n"); do
    local s; s=$("$@" | processed)
    if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$s; fi
  done
  echo "$best"
}

echo "log: $log ($(wc -l < "$log") lines, $(du -h "$log" | cut -f1))"
echo

f2b_out=$(fail2ban-regex "$log" "$f2b_filter")
f2b_time=$(echo "$f2b_out" | processed)
echo "fail2ban-regex $(fail2ban-regex -V 2>/dev/null | head -1) with $f2b_filter"
echo "  $(echo "$f2b_out" | summary)  in ${f2b_time} s"

ours_f2b_sum=$($pc regex --config /etc/fail2ban "$log" dovecot | summary)
ours_f2b=$(best_of 3 $pc regex --config /etc/fail2ban "$log" dovecot)
echo "portcullis regex with fail2ban's dovecot.conf (best of 3)"
echo "  $ours_f2b_sum  in ${ours_f2b} s"

ours_one=$(best_of 3 $pc regex --one-thread --config /etc/fail2ban "$log" dovecot)
echo "portcullis regex --one-thread (no reader thread) with fail2ban's dovecot.conf (best of 3)"
echo "  in ${ours_one} s"

ours_own_sum=$($pc regex --config config "$log" dovecot | summary)
ours_own=$(best_of 3 $pc regex --config config "$log" dovecot)
f2b_own_sum=$(fail2ban-regex "$log" config/filter.d/dovecot.conf | summary)
echo "portcullis regex with Portcullis' dovecot.conf (best of 3); fail2ban-regex on that filter says: $f2b_own_sum"
echo "  $ours_own_sum  in ${ours_own} s"
echo

[ "$(echo "$f2b_out" | summary)" = "$ours_f2b_sum" ] && echo "Lines: identical (fail2ban's filter)" || echo "Lines: DIFFERENT (fail2ban's filter)"
[ "$f2b_own_sum" = "$ours_own_sum" ] && echo "Lines: identical (Portcullis' filter)" || echo "Lines: DIFFERENT (Portcullis' filter)"
awk -v n="$lines" -v f="$f2b_time" -v a="$ours_f2b" -v b="$ours_own" -v c="$ours_one" 'BEGIN {
  printf "throughput: fail2ban-regex %.0f lines/s; portcullis %.0f lines/s (%.0fx) with fail2ban'"'"'s filter, %.0f lines/s (%.0fx) with its own; one thread: %.0f lines/s (%.0fx)\n", n/f, n/a, f/a, n/b, f/b, n/c, f/c }'
echo

# Peak memory while streaming about 1 GiB.
big="$data/mail-1g.log"
if [ ! -f "$big" ]; then
  : > "$big"
  while [ "$(stat -c %s "$big")" -lt 1073741824 ]; do cat "$log" >> "$big"; done
fi
rss=$( { /usr/bin/time -f '%M' $pc regex --config config "$big" dovecot >/dev/null; } 2>&1 | tail -1)
echo "peak RSS streaming $(du -h "$big" | cut -f1) ($(wc -l < "$big") lines): $((rss / 1024)) MiB"
f2b_rss=$( { /usr/bin/time -f '%M' fail2ban-regex "$log" "$f2b_filter" >/dev/null; } 2>&1 | tail -1)
echo "fail2ban-regex peak RSS on the $(du -h "$log" | cut -f1) log: $((f2b_rss / 1024)) MiB"
echo

.build/release/portcullis-bench live config dovecot "$log"
