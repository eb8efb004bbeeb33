#!/bin/sh
# test/vm/guest/all.sh — run several guest tests in ONE boot (a boot costs 4–10 s) and print
# their combined closing line. Each script runs in its own shell with its own counters; its
# closing `N passed, N failed` line is summed, and a script that printed none counts as a failure.
#   sh guest/all.sh guest/smoke.sh guest/attach.sh
total_passed=0
total_failed=0
for script in "$@"; do
  echo "==== $script ===="
  started=$(cut -d' ' -f1 /proc/uptime)
  sh "$script" 2>&1 | tee /tmp/all.out
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/all.out | tail -n 1)
  ended=$(cut -d' ' -f1 /proc/uptime)
  if [ -z "$line" ]; then
    echo "FAIL: $script ended without its closing line"
    total_failed=$((total_failed + 1))
    continue
  fi
  p=${line%% passed*}
  f=${line#*, }
  f=${f%% failed}
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  echo "INFO: $script: $line in $(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }') s (guest clock)"
done
echo "==== all: $# scripts ===="
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" = 0 ] && [ "$total_passed" -gt 0 ]
