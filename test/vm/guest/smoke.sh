#!/bin/sh
# test/vm/guest/smoke.sh — first guest test: the nbd driver is there, and guest-probe (compiled
# from test/vm/guest-probe.ts) attaches /dev/nbd0 through src/kernel, moves data through it,
# checks the error messages, takes the device over with RECONFIGURE (same process and a new
# one), and detaches it, served and orphaned. Needs the module `nbd` (run-in-vm.sh -k nbd).
. "$(dirname "$0")/lib.sh"

check "nbd module loaded" test -d /sys/module/nbd
check "/dev/nbd0 exists" test -b /dev/nbd0
check "nbd0 starts unattached" sh -c '! test -e /sys/block/nbd0/pid'
# A deadline of its own: a hung device must fail this test, not eat the whole VM timeout.
run_checks timeout 240 ./guest-probe
check "nbd0 ends unattached" sh -c '! test -e /sys/block/nbd0/pid'
if [ "$failed" != 0 ]; then
  echo "---- dmesg (last 30 lines) ----"
  dmesg | tail -n 30
fi
finish
