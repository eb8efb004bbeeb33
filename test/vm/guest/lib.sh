# test/vm/guest/lib.sh — tiny check library for guest tests (busybox sh). Source it, call
# `check NAME COMMAND...` for shell-level checks and `run_checks COMMAND...` for a program that
# prints its own `PASS: …` / `FAIL: …` lines (INFO lines pass through), then `finish`, which
# prints the closing `N passed, N failed` line CI reads and exits non-zero on any failure.
passed=0
failed=0

check() {
  name=$1
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "PASS: $name"
  else
    failed=$((failed + 1))
    echo "FAIL: $name — $(echo "$out" | tail -n 3)"
  fi
}

run_checks() {
  log=/tmp/run_checks.$$
  { "$@" 2>&1; echo "$?" >"$log.rc"; } | tee "$log"
  rc=$(cat "$log.rc")
  p=$(grep -c '^PASS: ' "$log")
  f=$(grep -c '^FAIL: ' "$log")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    failed=$((failed + 1))
    echo "FAIL: $* exited with status $rc without reporting a failed check"
  fi
  rm -f "$log" "$log.rc"
}

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ] && [ "$passed" -gt 0 ]
  exit $?
}
