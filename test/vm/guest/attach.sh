#!/bin/sh
# test/vm/guest/attach.sh — `dstd attach` onto a real /dev/nbd0 inside the VM, with the
# compiled dstd (payload/dstd): export a file over loopback, attach it, mkfs.ext4, mount, write,
# sync, compare checksums; kill -9 the attach daemon and start it again while mounted (I/O
# issued during the gap completes, no I/O errors); kill -9 the export and restart it (same),
# 64 MiB larger; umount + e2fsck; SIGUSR2 handover, and the next daemon grows the device to the
# export's new size (resize from a worker) and resize2fs grows the mounted ext4 online; orphan +
# detach --force; fresh attach with two sockets from a config ([[attach]] connections = 2),
# kill -9 and a two-socket takeover; idempotent attach, refusal for another URL; detach;
# `dstd list --json` checked at each step. Then, in the same
# boot, sequential O_DIRECT throughput through /dev/nbd1: dstd attach versus Debian's
# nbd-client attached to the same export's NBD listener (the ratio is what counts).
# Needs: -k "nbd ext4 crc32c_generic" -d e2fsprogs -d nbd-client -d libnl-3-200 -d libnl-genl-3-200
. "$(dirname "$0")/lib.sh"

export DSTD_STATE_DIR=/run/dstd
DSTD=/payload/dstd
URL=dst://127.0.0.1:10810/disk
STATE=$DSTD_STATE_DIR/attach/nbd0.json
MNT=/mnt/disk
info() { echo "INFO: $*"; }
now_ms() { read -r up _ </proc/uptime; echo "$(( ${up%.*} * 1000 + 1${up#*.} * 10 - 1000 ))"; }
T0=$(now_ms)
step() { info "[$(( $(now_ms) - T0 )) ms] $*"; }

# (start_export / start_attach set variables: never call them inside `check`, a subshell)
# wait_until SECONDS CMD... — poll every 0.2 s
wait_until() {
  n=$(( $1 * 5 )); shift
  while [ "$n" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2; n=$((n - 1))
  done
  return 1
}
# wait_pid PID SECONDS — wait for a child with a deadline; sets RC (124 on timeout)
wait_pid() {
  if wait_until "$2" sh -c "! kill -0 $1"; then wait "$1"; RC=$?; else kill -9 "$1" 2>/dev/null; RC=124; fi
}
io_errors() { dmesg | grep -iE "I/O error|EXT4-fs error|EXT4-fs warning|Buffer I/O|blk_update_request" ; }
no_io_errors() { ! io_errors; }
list_json() { "$DSTD" list --json 2>&1; }
list_has() { list_json | grep -q "$1"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
verify_files() { # N files f1..fN must match /tmp/src1..N
  drop_caches
  i=1
  while [ "$i" -le "$1" ]; do
    [ "$(md5sum <"$MNT/f$i")" = "$(md5sum </tmp/src$i)" ] || { echo "f$i differs"; return 1; }
    i=$((i + 1))
  done
}

cat >/tmp/export.toml <<'EOF'
[[export]]
name = "disk"
file = "/tmp/disk.img"
size = "256MiB"
listen = ["127.0.0.1:10810"]
allow = ["127.0.0.1/32:rw"]

[[export]]
name = "bench"
file = "/tmp/bench.img"
size = "128MiB"
listen = ["127.0.0.1:10810"]
nbd_listen = ["127.0.0.1:10809"]
allow = ["127.0.0.1/32:rw"]
EOF
EXPORTS=0
start_export() {
  EXPORTS=$((EXPORTS + 1))
  "$DSTD" export --config /tmp/export.toml >/tmp/export.$EXPORTS.log 2>&1 &
  EXPORT_PID=$!
  wait_until 60 grep -q "listening for NBD" /tmp/export.$EXPORTS.log
}
ATTACHES=0
start_attach() { # [extra args]
  ATTACHES=$((ATTACHES + 1))
  ALOG=/tmp/attach.$ATTACHES.log
  "$DSTD" attach "$URL" --device /dev/nbd0 --dead-conn-timeout 120s "$@" >"$ALOG" 2>&1 &
  ATTACH_PID=$!
}
# The daemon is serving once its state file names it (written after CONNECT / the takeover).
serving() { grep -q "\"pid\": $ATTACH_PID," "$STATE" 2>/dev/null && grep -q '"state": "ready"' "$STATE"; }

for i in 1 2 3 4; do dd if=/dev/urandom of=/tmp/src$i bs=1M count=6 2>/dev/null; done
mkdir -p "$MNT"

# ---- export + attach ------------------------------------------------------------------------
step "export"
start_export; check "dstd export serves a file on 127.0.0.1 (DST) and NBD" test $? = 0
check "dstd list: no attachments yet" sh -c "$DSTD list | grep -qx 'no attachments'"
step "attach"
start_attach
check "dstd attach $URL --device /dev/nbd0 is serving (state file names its pid)" wait_until 60 serving
check "sysfs: nbd0 size 256 MiB" sh -c '[ "$(cat /sys/block/nbd0/size)" = 524288 ]'
check "sysfs: backend names the URL and an attachment id" grep -qE "^dstd:$URL#[0-9a-f]{16}\$" /sys/block/nbd0/backend
check "sysfs: logical block size 4096 (the export's preferred)" sh -c '[ "$(cat /sys/block/nbd0/queue/logical_block_size)" = 4096 ]'
check "sysfs: io_timeout 5000 ms (requeue check; the nbd TIMEOUT stays 0)" wait_until 5 sh -c '[ "$(cat /sys/block/nbd0/queue/io_timeout)" = 5000 ]'
check "list --json: /dev/nbd0, kernel mode, ready, its pid, the backend id" sh -c "
  j=\$($DSTD list --json) &&
  echo \"\$j\" | grep -q '\"device\": \"/dev/nbd0\"' && echo \"\$j\" | grep -q '\"mode\": \"kernel\"' &&
  echo \"\$j\" | grep -q '\"state\": \"ready\"' && echo \"\$j\" | grep -q '\"pid\": $ATTACH_PID,' &&
  echo \"\$j\" | grep -q \"\\\"backendId\\\": \\\"\$(cat /sys/block/nbd0/backend)\\\"\""
FIRST_PID=$ATTACH_PID
out=$("$DSTD" attach "$URL" --device /dev/nbd0 2>&1); rc=$?
check "attaching it again: says so, exit 0" sh -c "[ $rc = 0 ] && echo '$out' | grep -q 'already attached to $URL by dstd (pid $ATTACH_PID); nothing to do'"
out=$("$DSTD" attach dst://127.0.0.1:10810/bench --device /dev/nbd0 2>&1); rc=$?
check "attaching another URL to it: clear refusal, exit 1" sh -c "[ $rc = 1 ] && echo '$out' | grep -q 'is attached to $URL by dstd (pid $ATTACH_PID), not to dst://127.0.0.1:10810/bench'"

# ---- filesystem -----------------------------------------------------------------------------
step "mkfs"
check "mkfs.ext4 /dev/nbd0" mkfs.ext4 -q -F /dev/nbd0
check "mount /dev/nbd0" mount -t ext4 /dev/nbd0 "$MNT"
cp /tmp/src1 "$MNT/f1" && sync; check "write f1 + sync" test $? = 0
check "f1 reads back identical (page cache dropped)" verify_files 1

# ---- kill -9 the attach daemon while mounted; I/O issued in the gap completes --------------
step "kill -9 attach daemon"
kill -9 "$ATTACH_PID"; wait "$ATTACH_PID" 2>/dev/null
check "after kill -9: the device is still attached (sysfs pid present)" test -e /sys/block/nbd0/pid
check "list: daemon gone" list_has '"state": "daemon gone"'
(cp /tmp/src2 "$MNT/f2" && sync) &
WRITER=$!
sleep 1
check "…and the writer is blocked, not failed, while nobody serves the device" kill -0 "$WRITER"
step "restart attach daemon"
start_attach
check "a new dstd attach takes nbd0 over (RECONFIGURE) and the kernel's requests arrive on its socket" wait_until 90 grep -q "took /dev/nbd0 over (daemon restart) in [0-9]* ms: the kernel's requests arrive on the new socket" "$ALOG"
wait_pid "$WRITER" 120
check "the write issued while the daemon was dead completed (cp + sync exit 0)" test "$RC" = 0
check "list: serving again under the new pid, restarts 1" wait_until 10 sh -c "grep -q '\"pid\": $ATTACH_PID,' $STATE && grep -q '\"restarts\": 1,' $STATE && [ $ATTACH_PID != $FIRST_PID ]"
check "sysfs backend unchanged after the takeover" grep -qE "^dstd:$URL#" /sys/block/nbd0/backend
cp /tmp/src3 "$MNT/f3" && sync; check "more writes after the restart: cp + sync" test $? = 0
check "f1..f3 identical after the restart" verify_files 3
check "no I/O errors in dmesg so far" no_io_errors

# ---- kill -9 with requests in flight: the kernel requeues them onto the next daemon's socket -
step "kill -9 attach daemon during O_DIRECT writes"
cat /tmp/src1 /tmp/src2 /tmp/src3 /tmp/src4 >/tmp/src5
(dd if=/tmp/src5 of="$MNT/f5" bs=256k oflag=direct 2>/dev/null && sync) &
WRITER=$!
wait_until 30 sh -c "[ \$(stat -c %s $MNT/f5 2>/dev/null || echo 0) -ge 2097152 ]"
kill -9 "$ATTACH_PID"; wait "$ATTACH_PID" 2>/dev/null
KILLED=$(now_ms)
start_attach
check "the next daemon takes nbd0 over while the writer had requests in flight" wait_until 90 grep -q "took /dev/nbd0 over" "$ALOG"
TAKEN=$(now_ms)
wait_pid "$WRITER" 150
DONE=$(now_ms)
info "the O_DIRECT writer finished $((DONE - KILLED)) ms after the kill -9, $((DONE - TAKEN)) ms after the takeover (requests stranded on the dead socket move at the block layer's next timer check: io_timeout)"
check "the O_DIRECT writer completed without error" test "$RC" = 0
# (no check on the time: on a loaded 2-core host the rest of the write alone takes 10 s and more;
# io_timeout itself is checked in sysfs above)
check "f5 is identical" sh -c "drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }; drop_caches; [ \"\$(md5sum <$MNT/f5)\" = \"\$(md5sum </tmp/src5)\" ]"
check "no I/O errors in dmesg" no_io_errors

# ---- kill -9 the export and restart it ------------------------------------------------------
step "kill -9 export"
kill -9 "$EXPORT_PID"; wait "$EXPORT_PID" 2>/dev/null
(cp /tmp/src4 "$MNT/f4" && sync) &
WRITER=$!
sleep 2
check "the writer waits while the export is down" kill -0 "$WRITER"
# It comes back 64 MiB larger: the attach daemon hears the new size in the WELCOME of its
# reconnect and grows the device in band (docs/kernel.md); the next daemon (after SIGUSR2) keeps it.
truncate -s 320M /tmp/disk.img && sed -i 's/size = "256MiB"/size = "320MiB"/' /tmp/export.toml
step "restart export"
start_export; check "the export restarts on the same file, grown to 320 MiB" test $? = 0
wait_pid "$WRITER" 120
check "the write issued while the export was down completed (cp + sync exit 0)" test "$RC" = 0
check "list: the engine reconnected (reconnects ≥ 1), state ready" wait_until 5 sh -c "grep -qE '\"reconnects\": [1-9]' $STATE && grep -q '\"state\": \"ready\"' $STATE"
check "f1..f5 identical after the export restart" verify_files 5
check "…and grows /dev/nbd0 in band to the export's new size (RECONFIGURE + SIZE_BYTES from a worker)" wait_until 60 grep -q "resized /dev/nbd0: 268435456 → 335544320 bytes" "$ALOG"
check "no I/O errors in dmesg" no_io_errors
step "umount + fsck"
check "umount" umount "$MNT"
check "e2fsck -fn: clean" e2fsck -fn /dev/nbd0
check "mount read-only again" mount -t ext4 -o ro /dev/nbd0 "$MNT"
check "f1..f5 intact after fsck" verify_files 5
check "umount" umount "$MNT"

# ---- SIGUSR2 handover: exit leaving the device, the next daemon resumes ---------------------
step "SIGUSR2 handover"
kill -USR2 "$ATTACH_PID"; wait_pid "$ATTACH_PID" 60
check "SIGUSR2: the daemon exits 0" test "$RC" = 0
check "…leaving nbd0 attached" test -e /sys/block/nbd0/pid
check "list: daemon gone" list_has '"state": "daemon gone"'
start_attach
check "the next dstd attach resumes it" wait_until 90 grep -q "took /dev/nbd0 over (daemon restart)" "$ALOG"
check "blockdev --getsize64 /dev/nbd0: 320 MiB" sh -c '[ "$(blockdev --getsize64 /dev/nbd0)" = 335544320 ]'
check "list: restarts 3, size 320 MiB" wait_until 10 sh -c "grep -q '\"restarts\": 3,' $STATE && grep -q '\"sizeBytes\": 335544320,' $STATE"
check "reads through the resumed device" dd if=/dev/nbd0 of=/dev/null bs=1M count=8 iflag=direct
check "the grown tail reads (MiB 300..320)" dd if=/dev/nbd0 of=/dev/null bs=1M skip=300 count=20 iflag=direct
step "online resize2fs"
check "mount /dev/nbd0" mount -t ext4 /dev/nbd0 "$MNT"
check "resize2fs grows the mounted ext4 online" resize2fs /dev/nbd0
check "df: the filesystem is now larger than 256 MiB" sh -c "[ \$(df -k $MNT | awk 'NR==2 {print \$2}') -gt 280000 ]"
check "f1..f5 intact after the online grow" verify_files 5
check "umount" umount "$MNT"
check "e2fsck -fn: clean after the grow" e2fsck -fn /dev/nbd0

# ---- orphan: kill -9, then detach (refused) and detach --force ------------------------------
step "orphan + detach --force"
kill -9 "$ATTACH_PID"; wait "$ATTACH_PID" 2>/dev/null
out=$("$DSTD" detach /dev/nbd0 2>&1); rc=$?
check "detach without --force: refused, says how to resume or force" sh -c "[ $rc = 1 ] && echo '$out' | grep -q 'is gone; the device is still attached and its I/O waits for a new daemon: run dstd attach $URL --device /dev/nbd0 to resume it, or use --force'"
out=$("$DSTD" detach /dev/nbd0 --force 2>&1); rc=$?
check "detach --force: NBD_CMD_DISCONNECT of the orphan" sh -c "[ $rc = 0 ] && echo '$out' | grep -qx 'disconnected /dev/nbd0 (its daemon was gone)'"
check "nbd0 is free (no sysfs pid)" sh -c '! test -e /sys/block/nbd0/pid'
check "list: no attachments" sh -c "$DSTD list | grep -qx 'no attachments'"

# ---- fresh attach of the same data from an [[attach]] config entry, SIGHUP, then detach ------
step "fresh attach with two sockets from --config + takeover + SIGHUP + detach"
printf '[[attach]]\nurl = "%s"\ndevice = "/dev/nbd0"\nconnections = 2\n[attach.reliability]\ndeadline = "2m"\n' "$URL" >/tmp/attach.toml
start_config_attach() {
  ATTACHES=$((ATTACHES + 1))
  ALOG=/tmp/attach.$ATTACHES.log
  "$DSTD" attach --config /tmp/attach.toml >"$ALOG" 2>&1 &
  ATTACH_PID=$!
}
start_config_attach
check "a fresh CONNECT of the same export, from the only [[attach]] entry of --config" wait_until 60 serving
check "sysfs backend: a new attachment id" sh -c "grep -qE '^dstd:$URL#' /sys/block/nbd0/backend && grep -q '\"restarts\": 0,' $STATE"
check "two sockets (connections = 2): sysfs mq/ has two hardware queues, the record says 2" sh -c "[ \$(ls /sys/block/nbd0/mq | wc -l) = 2 ] && grep -q '\"connections\": 2' $STATE"
check "two sockets: io_timeout = deadline + 30 s (150000 ms), so the kernel never requeues a request the engine holds" wait_until 5 sh -c '[ "$(cat /sys/block/nbd0/queue/io_timeout)" = 150000 ]'
check "mount read-only" mount -t ext4 -o ro /dev/nbd0 "$MNT"
check "f1..f5 still there (read over two sockets)" verify_files 5
check "umount" umount "$MNT"
kill -9 "$ATTACH_PID"; wait "$ATTACH_PID" 2>/dev/null
start_config_attach
check "after kill -9, the next daemon takes both sockets over" wait_until 90 grep -q "took /dev/nbd0 over (daemon restart) in [0-9]* ms: the kernel's requests arrive on the new sockets (2)" "$ALOG"
check "list: serving again, restarts 1" wait_until 10 sh -c "grep -q '\"pid\": $ATTACH_PID,' $STATE && grep -q '\"restarts\": 1,' $STATE"
check "reads after the two-socket takeover" dd if=/dev/nbd0 of=/dev/null bs=1M count=16 iflag=direct
sed -i 's/deadline = "2m"/deadline = "5m"/' /tmp/attach.toml
kill -HUP "$ATTACH_PID"
check "SIGHUP: the changed setting is reported with how to apply it, and the daemon keeps serving" wait_until 10 sh -c \
  "grep -q 'SIGHUP: /tmp/attach.toml changes deadline 2m → 5m; a running engine cannot change them' $ALOG && kill -0 $ATTACH_PID"
out=$("$DSTD" detach /dev/nbd0 2>&1); rc=$?
check "dstd detach /dev/nbd0" sh -c "[ $rc = 0 ] && echo '$out' | grep -qx 'detached /dev/nbd0'"
wait_pid "$ATTACH_PID" 30
check "the daemon exited 0" test "$RC" = 0
check "the device went away (detach = DISCONNECT)" sh -c '! test -e /sys/block/nbd0/pid'
check "list: no attachments" sh -c "$DSTD list | grep -qx 'no attachments'"
out=$("$DSTD" detach /dev/nbd0 2>&1); rc=$?
check "detach again: 'not attached; nothing to do', exit 0" sh -c "[ $rc = 0 ] && echo '$out' | grep -qx '/dev/nbd0 is not attached; nothing to do'"
check "no I/O errors in dmesg at the end" no_io_errors
# ---- online resize in band: dstd up serves an export, dstd resize grows it, and the attach
# daemon grows /dev/nbd2 from the SIZE_NOTICE while ext4 stays mounted (no restart) ----------
step "dstd resize: an attached device grows in band"
printf '[[export]]\nname = "grow"\nfile = "/tmp/grow.img"\nsize = "64MiB"\nlisten = ["127.0.0.1:10811"]\nallow = ["127.0.0.1/32:rw"]\n' >/tmp/up.toml
"$DSTD" up --config /tmp/up.toml >/tmp/up.log 2>&1 &
UP_PID=$!
check "dstd up serves the export 'grow'" wait_until 60 grep -q "listening for DST on 127.0.0.1:10811" /tmp/up.log
"$DSTD" attach dst://127.0.0.1:10811/grow --device /dev/nbd2 >/tmp/attach-grow.log 2>&1 &
GROW_PID=$!
check "attach /dev/nbd2" wait_until 60 grep -q '"state": "ready"' $DSTD_STATE_DIR/attach/nbd2.json
check "mkfs.ext4 + mount /dev/nbd2" sh -c "mkfs.ext4 -q -F /dev/nbd2 && mkdir -p /mnt/grow && mount -t ext4 /dev/nbd2 /mnt/grow"
check "write g1 + sync" sh -c "cp /tmp/src1 /mnt/grow/g1 && sync"
check "dstd resize grow 96MiB (through dstd up's control socket)" "$DSTD" resize grow 96MiB
check "the attach daemon grows /dev/nbd2 in band" wait_until 30 grep -q "resized /dev/nbd2: 67108864 → 100663296 bytes" /tmp/attach-grow.log
check "blockdev --getsize64 /dev/nbd2: 96 MiB" sh -c '[ "$(blockdev --getsize64 /dev/nbd2)" = 100663296 ]'
check "the same daemon still serves it (no restart)" kill -0 "$GROW_PID"
check "resize2fs grows the mounted ext4 online" resize2fs /dev/nbd2
check "df: the filesystem is now larger than 64 MiB" sh -c "[ \$(df -k /mnt/grow | awk 'NR==2 {print \$2}') -gt 70000 ]"
check "g1 intact after the grow" sh -c "sync; echo 3 >/proc/sys/vm/drop_caches; [ \"\$(md5sum </mnt/grow/g1)\" = \"\$(md5sum </tmp/src1)\" ]"
check "umount + e2fsck -fn: clean" sh -c "umount /mnt/grow && e2fsck -fn /dev/nbd2"
"$DSTD" detach /dev/nbd2 >/dev/null 2>&1; wait_pid "$GROW_PID" 30
kill "$UP_PID"; wait_pid "$UP_PID" 30
check "no I/O errors in dmesg after the in-band resize" no_io_errors
step "functional part done"

# ---- throughput: dstd attach vs nbd-client on the same export (ratio only) ------------------
BENCH_MIB=64
cat /tmp/src1 /tmp/src2 /tmp/src3 /tmp/src4 /tmp/src1 /tmp/src2 /tmp/src3 /tmp/src4 /tmp/src1 /tmp/src2 /tmp/src3 >/tmp/bench.src
bench() { # DEVICE → "write_ms read_ms"
  a=$(now_ms)
  dd if=/tmp/bench.src of="$1" bs=1M count=$BENCH_MIB oflag=direct conv=fsync 2>/dev/null || return 1
  b=$(now_ms)
  dd if="$1" of=/dev/null bs=1M count=$BENCH_MIB iflag=direct 2>/dev/null || return 1
  c=$(now_ms)
  echo "$((b - a)) $((c - b))"
}
mibs() { awk -v ms="$1" -v m="$BENCH_MIB" 'BEGIN { printf "%.1f", m * 1000 / ms }'; }
DW=0 DR=0 NW=0 NR=0
for round in 1 2; do
  step "bench round $round: dstd attach"
  "$DSTD" attach dst://127.0.0.1:10810/bench --device /dev/nbd1 >/tmp/bench-attach.log 2>&1 &
  BPID=$!
  if wait_until 60 grep -q '"state": "ready"' $DSTD_STATE_DIR/attach/nbd1.json && r=$(bench /dev/nbd1); then
    set -- $r; DW=$((DW + $1)); DR=$((DR + $2))
    info "round $round dstd attach: write $(mibs $1) MiB/s, read $(mibs $2) MiB/s"
  else
    DW=-1
  fi
  if [ "$round" = 1 ]; then
    "$DSTD" detach /dev/nbd1 >/dev/null 2>&1; wait_pid "$BPID" 30
  else
    # Someone else disconnects the device under a live daemon: it notices (NBD_CMD_DISC) and leaves.
    nbd-client -d /dev/nbd1 >/dev/null 2>&1
    wait_pid "$BPID" 30
    check "a DISCONNECT by another program (nbd-client -d): the daemon exits 0 and drops its record" sh -c \
      "[ $RC = 0 ] && grep -q 'was disconnected by another process' /tmp/bench-attach.log && ! test -e $DSTD_STATE_DIR/attach/nbd1.json"
  fi
  step "bench round $round: nbd-client"
  if nbd-client 127.0.0.1 10809 /dev/nbd1 -N bench -b 4096 >/tmp/nbd-client.log 2>&1 && wait_until 10 test -e /sys/block/nbd1/pid && r=$(bench /dev/nbd1); then
    set -- $r; NW=$((NW + $1)); NR=$((NR + $2))
    info "round $round nbd-client: write $(mibs $1) MiB/s, read $(mibs $2) MiB/s"
  else
    NW=-1
    cat /tmp/nbd-client.log
  fi
  nbd-client -d /dev/nbd1 >/dev/null 2>&1
  wait_until 10 sh -c '! test -e /sys/block/nbd1/pid'
done
check "throughput runs completed (dstd attach and nbd-client, $BENCH_MIB MiB O_DIRECT, 2 rounds)" sh -c "[ $DW -gt 0 ] && [ $NW -gt 0 ]"
if [ "$DW" -gt 0 ] && [ "$NW" -gt 0 ]; then
  awk -v dw="$DW" -v dr="$DR" -v nw="$NW" -v nr="$NR" -v m="$BENCH_MIB" 'BEGIN {
    printf "INFO: THROUGHPUT (sum of 2 rounds of %d MiB): dstd attach write %.1f MiB/s read %.1f MiB/s; nbd-client write %.1f MiB/s read %.1f MiB/s\n", m, 2*m*1000/dw, 2*m*1000/dr, 2*m*1000/nw, 2*m*1000/nr
    printf "INFO: RATIO dstd/nbd-client: write %.2f, read %.2f\n", nw/dw, nr/dr }'
fi
step "done"
if [ "$failed" != 0 ]; then
  echo "---- dmesg (last 40 lines) ----"; dmesg | tail -n 40
  for f in /tmp/attach.*.log /tmp/export.*.log; do echo "---- $f (last 15 lines) ----"; tail -n 15 "$f"; done
fi
finish
