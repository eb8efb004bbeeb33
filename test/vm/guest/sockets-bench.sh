#!/bin/sh
# test/vm/guest/sockets-bench.sh — `dstd attach --connections N` for N = 1, 2, 4 against one
# `dstd export` in the same boot, with fio inside the guest (O_DIRECT, libaio, two jobs pinned to
# the two vCPUs so that both of the kernel's submitting CPUs — and so up to two hardware queues,
# i.e. sockets — are used): sequential 1 MiB write/read at QD16 and random 4 KiB write/read at
# QD32, each time-based. nbd-client (one socket) on the export's NBD listener is the reference.
# Two rounds in mirrored order; prints one `BENCH` line per run and a closing table of means;
# only ratios within one boot mean anything
# (TCG, a shared host). Opt-in: DSTD_VM_BENCH=1 bun test test/vm/vm.test.ts.
# Needs: -k nbd -d fio -d nbd-client -d libnl-3-200 -d libnl-genl-3-200
. "$(dirname "$0")/lib.sh"

export DSTD_STATE_DIR=/run/dstd
DSTD=/payload/dstd
RUNTIME=${BENCH_RUNTIME:-10}
info() { echo "INFO: $*"; }
wait_until() { # (its counter must not share a name with the callers' variables: sh has no locals)
  tries=$(( $1 * 5 )); shift
  while [ "$tries" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2; tries=$((tries - 1))
  done
  return 1
}

cat >/tmp/bench-export.toml <<'EOF'
[[export]]
name = "bench"
file = "/tmp/bench.img"
size = "256MiB"
listen = ["127.0.0.1:10810"]
nbd_listen = ["127.0.0.1:10809"]
allow = ["127.0.0.1/32:rw"]
EOF
"$DSTD" export --config /tmp/bench-export.toml >/tmp/bench-export.log 2>&1 &
check "dstd export (bench, 256 MiB)" wait_until 60 grep -q "listening for NBD" /tmp/bench-export.log
command -v fio >/dev/null 2>&1; HAVE_FIO=$?
check "fio is in the guest" test "$HAVE_FIO" = 0

# run_fio LABEL DEVICE RW BS DEPTH → one BENCH line: "LABEL rw bs: MiB/s IOPS"
run_fio() {
  out=$(fio --name=b --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --numjobs=2 --cpus_allowed=0-1 \
    --cpus_allowed_policy=split --direct=1 --ioengine=libaio --size=128M --offset_increment=128M \
    --time_based --runtime="$RUNTIME" --ramp_time=1 --group_reporting --output-format=terse --terse-version=3 2>&1)
  # terse v3: field 7 read KiB/s, 8 read IOPS; 48 write KiB/s, 49 write IOPS
  echo "$out" | awk -F';' -v label="$1" -v rw="$3" -v bs="$4" 'NF > 50 {
    kib = $7 + $48; iops = $8 + $49
    printf "BENCH %s %s %s: %.2f MiB/s %.0f IOPS\n", label, rw, bs, kib / 1024, iops; found = 1 }
    END { if (!found) printf "BENCH %s %s %s: failed\n", label, rw, bs }'
}

bench_device() { # LABEL DEVICE
  run_fio "$1" "$2" write 1M 8
  run_fio "$1" "$2" read 1M 8
  run_fio "$1" "$2" randwrite 4k 16
  run_fio "$1" "$2" randread 4k 16
}

bench_attached() { # CONNS
  "$DSTD" attach dst://127.0.0.1:10810/bench --device /dev/nbd1 --connections "$1" >/tmp/bench-attach-$1.log 2>&1 &
  pid=$!
  wait_until 60 grep -q '"state": "ready"' $DSTD_STATE_DIR/attach/nbd1.json; up=$?
  check "dstd attach --connections $1 serves /dev/nbd1" test "$up" = 0
  if [ "$up" = 0 ]; then
    info "nbd1: $1 socket(s), $(ls /sys/block/nbd1/mq | wc -l) hardware queue(s) (at most one per CPU); io_timeout $(cat /sys/block/nbd1/queue/io_timeout) ms"
    [ "$HAVE_FIO" = 0 ] && bench_device "dstd-$1" /dev/nbd1 | tee -a /tmp/bench.lines
  fi
  "$DSTD" detach /dev/nbd1 >/dev/null 2>&1
  wait_until 30 sh -c "! kill -0 $pid"
}
bench_nbd_client() {
  if nbd-client 127.0.0.1 10809 /dev/nbd1 -N bench -b 4096 >/tmp/nbd-client.log 2>&1 && wait_until 10 test -e /sys/block/nbd1/pid; then
    [ "$HAVE_FIO" = 0 ] && bench_device "nbd-client-1" /dev/nbd1 | tee -a /tmp/bench.lines
    nbd-client -d /dev/nbd1 >/dev/null 2>&1
    wait_until 10 sh -c '! test -e /sys/block/nbd1/pid'
  fi
}
# Two rounds in mirrored order (1 2 4 ref, ref 4 2 1) so that drift of the host's load cancels.
for conns in 1 2 4; do bench_attached "$conns"; done
bench_nbd_client
bench_nbd_client
for conns in 4 2 1; do bench_attached "$conns"; done
check "every run produced a number" sh -c '! grep -q ": failed" /tmp/bench.lines && [ $(wc -l </tmp/bench.lines) = 32 ]'
echo "INFO: ---- sockets benchmark: mean of 2 rounds (fio, 2 jobs pinned to the 2 vCPUs, ${RUNTIME} s each) ----"
awk '/^BENCH/ { key = $2 " " $3 " " $4; mib[key] += $5; iops[key] += $7; n[key]++; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  END { for (i = 1; i <= k; i++) { key = order[i]; printf "INFO: %-28s %7.2f MiB/s %7.0f IOPS\n", key, mib[key] / n[key], iops[key] / n[key] } }' /tmp/bench.lines
finish
