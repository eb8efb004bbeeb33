#!/bin/sh
# test/vm/guest/failover.sh — replication failover under a mounted filesystem (issue 11, "Tests
# beyond the simulation": the kernel VM; docs/replication.md §11). Two `dstd export` nodes with
# the replication flags on loopback: A a primary (`--log-dir`), B its secondary (`--replica-of`,
# anonymous under A's `127.0.0.1:replica` grant), each with `--state-dir` for `dstd replica`.
# /dev/nbd0 is attached to A (dstd attach), mkfs.ext4 + mount; files are written and `sync`ed
# (their checksums kept); the secondary's `dstd replica status --json` is polled until it has
# applied the primary's seq taken after that sync (an observable, not a sleep); a writer keeps
# writing with O_DIRECT; kill -9 of A while it writes. Then `dstd replica promote disk --force`
# on B, the dead nbd0 is cleaned up (kill -9 of its attach daemon, detach --force, lazy umount),
# /dev/nbd1 is attached to B: mount + umount (the kernel replays the journal), e2fsck -fn clean,
# mount, every synced file present with its checksum, every unsynced file a prefix of its
# source (a prefix of the primary's writes), the new primary takes writes, umount, e2fsck -fn
# clean again.
# Needs: -k "nbd ext4 crc32c_generic" -d e2fsprogs
. "$(dirname "$0")/lib.sh"

unset DSTD_STATE_DIR
DSTD=/payload/dstd
W=/tmp/fo
A_STATE=/run/fo/a.state # the nodes' control sockets (dstd export --state-dir)
B_STATE=/run/fo/b.state
ATT=/run/fo/attach
A_URL=dst://127.0.0.1:10820/disk
B_URL=dst://127.0.0.1:10821/disk
MNT_A=/mnt/fo-a
MNT_B=/mnt/fo-b
SYNCED=4
info() { echo "INFO: $*"; }
now_ms() { read -r up _ </proc/uptime; echo "$(( ${up%.*} * 1000 + 1${up#*.} * 10 - 1000 ))"; }
T0=$(now_ms)
step() { info "[$(( $(now_ms) - T0 )) ms] $*"; }
# wait_until SECONDS CMD... — poll every 0.2 s (the counter's name is this helper's own)
wait_until() {
  wu_n=$(( $1 * 5 )); shift
  while [ "$wu_n" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2; wu_n=$((wu_n - 1))
  done
  return 1
}
# wait_pid PID SECONDS — wait for a child with a deadline; sets RC (124 on timeout)
wait_pid() {
  if wait_until "$2" sh -c "! kill -0 $1"; then wait "$1"; RC=$?; else kill -9 "$1" 2>/dev/null; RC=124; fi
}
# status_field STATE_DIR FIELD — a number from `dstd replica status disk --json` (top level)
status_field() { "$DSTD" replica status disk --json --state-dir "$1" 2>/dev/null | sed -n "s/^      \"$2\": \"*\([^\",]*\)\"*,*\$/\1/p" | head -n 1; }
applied_at_least() { s=$(status_field "$B_STATE" seq); [ -n "$s" ] && [ "$s" -ge "$1" ]; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
served() { grep -q '"state": "ready"' "$ATT/attach/$1.json" 2>/dev/null; }

mkdir -p "$W" "$ATT" "$MNT_A" "$MNT_B"
i=1
while [ "$i" -le "$SYNCED" ]; do dd if=/dev/urandom of="$W/src$i" bs=1M count=4 2>/dev/null; i=$((i + 1)); done

# ---- the pair and the attachment -------------------------------------------------------------
step "start primary A and secondary B (dstd export with replication flags)"
"$DSTD" export --file "$W/a.img" --size 128MiB --listen 127.0.0.1:10820 --allow 127.0.0.1:rw --allow 127.0.0.1:replica \
  --log-dir "$W/a.log" --log-size 128MiB --state-dir "$A_STATE" >"$W/a.out" 2>&1 &
A_PID=$!
"$DSTD" export --file "$W/b.img" --size 128MiB --listen 127.0.0.1:10821 --allow 127.0.0.1:rw \
  --log-dir "$W/b.log" --replica-of "$A_URL" --state-dir "$B_STATE" >"$W/b.out" 2>&1 &
B_PID=$!
check "A: dstd export --log-dir serves 'disk' as a replication primary, control socket in --state-dir" wait_until 90 sh -c "grep -q 'listening for DST' $W/a.out && grep -q 'replication primary, log' $W/a.out && grep -q 'control socket $A_STATE/control.sock' $W/a.out"
check "B: dstd export --replica-of serves 'disk' as a read-only secondary of A" wait_until 90 sh -c "grep -q 'listening for DST' $W/b.out && grep -q 'replication secondary of $A_URL' $W/b.out"
replicating() { [ "$(status_field "$B_STATE" state)" = replicating ]; }
check "B fetches from A: replica status says replicating" wait_until 60 replicating
step "attach /dev/nbd0 to A"
"$DSTD" attach "$A_URL" --device /dev/nbd0 --state-dir "$ATT" >"$W/attach-a.log" 2>&1 &
ATTACH_A=$!
check "dstd attach $A_URL --device /dev/nbd0 is serving" wait_until 90 served nbd0
check "mkfs.ext4 /dev/nbd0" mkfs.ext4 -q -F /dev/nbd0
check "mount /dev/nbd0" mount -t ext4 /dev/nbd0 "$MNT_A"

# ---- synced files, then the secondary has applied everything up to that sync -----------------
step "write $SYNCED files + sync"
i=1
while [ "$i" -le "$SYNCED" ]; do cp "$W/src$i" "$MNT_A/s$i" || break; i=$((i + 1)); done
sync
check "write s1..s$SYNCED on A's ext4 + sync" test "$i" -gt "$SYNCED"
P=$(status_field "$A_STATE" seq)
check "A: its durable seq after the sync is known" test -n "$P"
info "A's durable seq after the sync: ${P:-?}"
# A writer that keeps writing (O_DIRECT: each write reaches the device, no page cache in between).
(
  n=1
  while [ "$n" -le 20 ]; do
    dd if="$W/src$(( (n - 1) % SYNCED + 1 ))" of="$MNT_A/w$n" bs=256k oflag=direct 2>/dev/null || exit 1
    n=$((n + 1))
  done
) &
WRITER=$!
step "wait until B has applied seq $P"
check "B's replica status shows it applied through A's seq after the sync (lag 0 for the synced files)" wait_until 120 applied_at_least "${P:-999999999}"
info "B: seq $(status_field "$B_STATE" seq), lag_bytes $(status_field "$B_STATE" lag_bytes), A's seq now $(status_field "$A_STATE" seq)"
check "the writer is still writing when A is killed" wait_until 60 sh -c "[ -e $MNT_A/w2 ] && kill -0 $WRITER"

# ---- kill -9 the primary mid-write; fail over ------------------------------------------------
step "kill -9 A"
kill -9 "$A_PID"; wait "$A_PID" 2>/dev/null
KILLED_AT=$(timeout 5 ls "$MNT_A" 2>/dev/null | grep -c '^w')
info "A killed while the writer had created $KILLED_AT unsynced files"
step "promote --force on B"
out=$("$DSTD" replica promote disk --force --state-dir "$B_STATE" 2>&1); rc=$?
echo "INFO: $out"
AT=$(echo "$out" | sed -n 's/.*promoted to primary (failover) at seq \([0-9]*\), generation 2;.*/\1/p')
check "dstd replica promote disk --force: promoted (failover), generation 2, at seq ${AT:-?} ≥ $P" sh -c "[ $rc = 0 ] && [ -n '$AT' ] && [ '${AT:-0}' -ge ${P:-999999999} ]"
ROLE=$(status_field "$B_STATE" role) GEN=$(status_field "$B_STATE" generation)
check "B's replica status: primary, generation 2 (got ${ROLE:-?}, ${GEN:-?})" test "$ROLE $GEN" = "primary 2"

# The dead primary's device: its daemon goes (kill -9), the orphan is disconnected, which fails
# the I/O that waited for A (the writer ends with an error), and its ext4 is let go.
# Those I/O errors are expected (KERN_ERR reaches the console): the console is quietened
# meanwhile and the count shown instead.
step "clean up nbd0"
read -r CONSOLE_LEVEL _ </proc/sys/kernel/printk
dmesg -n 1
kill -9 "$ATTACH_A"; wait "$ATTACH_A" 2>/dev/null
check "dstd detach /dev/nbd0 --force (the orphan of the dead primary)" "$DSTD" detach /dev/nbd0 --force --state-dir "$ATT"
wait_pid "$WRITER" 120
info "the writer on A's ext4 ended with status $RC once nbd0 was disconnected"
umount -l "$MNT_A" 2>/dev/null
check "nbd0 is free" wait_until 30 sh -c '! test -e /sys/block/nbd0/pid'
info "expected: $(dmesg | grep -c 'I/O error.*nbd0') I/O errors on the dead primary's nbd0 (its ext4 aborted)"
dmesg -n "$CONSOLE_LEVEL"

# ---- the new primary's disk, through the kernel ---------------------------------------------
step "attach /dev/nbd1 to B"
"$DSTD" attach "$B_URL" --device /dev/nbd1 --state-dir "$ATT" >"$W/attach-b.log" 2>&1 &
ATTACH_B=$!
check "dstd attach $B_URL --device /dev/nbd1 is serving" wait_until 90 served nbd1
check "nbd1 is writable (attached after the promotion: read-write)" sh -c '[ "$(cat /sys/block/nbd1/ro)" = 0 ]'
# Before any mount, e2fsck -n (which never replays a journal) sees the structures as written
# in place: ext4's journal was live when A died, so this is shown, not judged (a checkpoint cut
# short is a legitimate crash state that only the journal replay completes).
e2fsck -fn /dev/nbd1 >"$W/fsck1.log" 2>&1; rc=$?
sed 's/^/INFO: e2fsck -fn before the journal replay: /' "$W/fsck1.log" | head -n 12
info "e2fsck -fn before the journal replay exited $rc"
step "mount nbd1 (journal replay), umount, e2fsck"
check "mount /dev/nbd1 (the kernel replays ext4's journal)" mount -t ext4 /dev/nbd1 "$MNT_B"
check "umount /dev/nbd1" umount "$MNT_B"
check "e2fsck -fn /dev/nbd1 after the journal replay, before any new write: clean" e2fsck -fn /dev/nbd1
step "mount nbd1 and verify"
check "mount /dev/nbd1 again" mount -t ext4 /dev/nbd1 "$MNT_B"
drop_caches
i=1
while [ "$i" -le "$SYNCED" ]; do
  check "s$i (synced before the kill) present with its checksum" sh -c "[ \"\$(md5sum <$MNT_B/s$i)\" = \"\$(md5sum <$W/src$i)\" ]"
  i=$((i + 1))
done
# Unsynced files: B holds a prefix of A's writes, so each one that exists is a prefix of its source.
present=0 prefix=0
for f in "$MNT_B"/w*; do
  [ -e "$f" ] || continue
  present=$((present + 1))
  n=${f##*/w}
  size=$(stat -c %s "$f")
  [ "$(head -c "$size" "$W/src$(( (n - 1) % SYNCED + 1 ))" | md5sum)" = "$(md5sum <"$f")" ] && prefix=$((prefix + 1))
done
info "$present of the unsynced files (w*) survived the failover ($KILLED_AT existed on A at the kill)"
check "each unsynced file that survived is a prefix of its source ($prefix of $present)" test "$prefix" = "$present"
check "the new primary takes writes: n1 + sync" sh -c "cp $W/src1 $MNT_B/n1 && sync"
check "n1 reads back identical (page cache dropped)" sh -c "sync; echo 3 >/proc/sys/vm/drop_caches; [ \"\$(md5sum <$MNT_B/n1)\" = \"\$(md5sum <$W/src1)\" ]"
check "no I/O errors on nbd1 (the new primary's device)" sh -c "! dmesg | grep -E 'I/O error|EXT4-fs error|EXT4-fs warning' | grep -q nbd1"
check "umount /dev/nbd1" umount "$MNT_B"
check "e2fsck -fn /dev/nbd1 after the new primary's writes: clean" e2fsck -fn /dev/nbd1
SEQ=$(status_field "$B_STATE" seq)
check "B's replica status: its log took the new writes (seq ${SEQ:-?} > promotion seq ${AT:-?})" sh -c "[ -n '$SEQ' ] && [ -n '$AT' ] && [ $SEQ -gt ${AT:-0} ]"

step "detach nbd1, stop B"
check "dstd detach /dev/nbd1" "$DSTD" detach /dev/nbd1 --state-dir "$ATT"
wait_pid "$ATTACH_B" 30
kill "$B_PID"; wait_pid "$B_PID" 30
check "B stops cleanly (SIGTERM, exit 0)" test "$RC" = 0
step "done"
if [ "$failed" != 0 ]; then
  echo "---- dmesg (last 30 lines) ----"; dmesg | tail -n 30
  for f in "$W"/a.out "$W"/b.out "$W"/attach-a.log "$W"/attach-b.log; do echo "---- $f (last 20 lines) ----"; tail -n 20 "$f"; done
fi
finish
