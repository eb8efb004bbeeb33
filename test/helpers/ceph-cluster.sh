#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for tests and benchmarks (docs/rbd.md "Testing"):
# one mon and one memstore OSD, pool size 1, everything on 127.0.0.1 and inside DIR, no
# systemd, no root. Debian packages: ceph-mon ceph-osd ceph-common.
#
#   ceph-cluster.sh start DIR [MEMSTORE_BYTES] [cephx]
#       → DIR/ceph.conf; pool "rbd" initialised. With cephx: authentication on, DIR/keyring
#         holds client.admin's key, DIR/client.test.keyring a client restricted to pool rbd
#         (mon 'profile rbd', osd 'profile rbd pool=rbd').
#   ceph-cluster.sh stop DIR                    → daemons stopped, DIR removed
#
# DIR must be short: admin-socket paths must stay under 108 characters.
set -euo pipefail

cmd=${1:?usage: ceph-cluster.sh start|stop DIR}
D=${2:?usage: ceph-cluster.sh start|stop DIR}

stop() {
  [ -d "$D" ] || return 0
  if [ -f "$D/pids" ]; then
    # The OSD first, then the mon: a mon stopped first makes the OSD's shutdown take seconds.
    tac "$D/pids" | while read -r name pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
      alive=0
      while read -r name pid; do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
        case $state in gone|Z) ;; *) alive=1 ;; esac
      done < "$D/pids"
      [ $alive = 0 ] && break
      sleep 0.1
    done
    while read -r name pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$D/pids"
  fi
  rm -rf "$D"
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: ceph-cluster.sh start|stop DIR" >&2; exit 2 ;;
esac

MEMSTORE=${3:-4294967296}
AUTH=none
[ "${4:-}" = cephx ] && AUTH=cephx
mkdir -p "$D/run" "$D/log" "$D/mon/a" "$D/osd/0"
trap 'status=$?; if [ $status != 0 ]; then tail -n 20 "$D"/log/*.out "$D"/log/*.log >&2 2>/dev/null || true; stop; fi' EXIT
read -r P2 P1 < <(/usr/bin/python3 -c 'import socket; ss=[socket.socket() for _ in range(2)]; [s.bind(("127.0.0.1",0)) for s in ss]; print(*[s.getsockname()[1] for s in ss])')
FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$P2,v1:127.0.0.1:$P1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = $AUTH
auth service required = $AUTH
auth client required = $AUTH
auth allow insecure global id reclaim = false
keyring = $D/keyring
run dir = $D/run
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon mgr mkfs grace = 31536000
mon cluster log file = $D/log/cluster.log
paxos propose interval = 0.05
paxos min wait = 0.01
[client]
admin socket =
log file = /dev/null
[mon]
mon data = $D/mon/\$id
admin socket = $D/run/\$name.asok
[osd]
osd data = $D/osd/\$id
admin socket = $D/run/\$name.asok
osd objectstore = memstore
memstore device bytes = $MEMSTORE
CONF
: > "$D/keyring"
if [ $AUTH = cephx ]; then
  ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$D/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' >/dev/null
fi
C=(-c "$D/ceph.conf")
monmaptool --create --addv a "[v2:127.0.0.1:$P2,v1:127.0.0.1:$P1]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
ceph-mon "${C[@]}" -i a -f >>"$D/log/mon.a.out" 2>&1 </dev/null &
echo "mon.a $!" >> "$D/pids"
timeout 30 ceph "${C[@]}" --connect-timeout 10 mon stat >/dev/null
OSD_ID=$(timeout 30 ceph "${C[@]}" osd new "$OSD_UUID")
ceph-osd "${C[@]}" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$D/log/osd.$OSD_ID.out" 2>&1
ceph-osd "${C[@]}" -i "$OSD_ID" -f >>"$D/log/osd.$OSD_ID.out" 2>&1 </dev/null &
echo "osd.$OSD_ID $!" >> "$D/pids"
up=0
for _ in $(seq 120); do
  if timeout 10 ceph "${C[@]}" osd dump 2>/dev/null | grep -q "^osd.$OSD_ID up"; then up=1; break; fi
  sleep 0.25
done
[ $up = 1 ] || { echo "osd.$OSD_ID did not come up" >&2; exit 1; }
timeout 30 ceph "${C[@]}" osd pool create rbd 8 8 >/dev/null 2>&1
timeout 60 rbd "${C[@]}" pool init rbd
if [ $AUTH = cephx ]; then
  timeout 30 ceph "${C[@]}" auth get-or-create client.test mon 'profile rbd' osd 'profile rbd pool=rbd' -o "$D/client.test.keyring"
fi
trap - EXIT
echo "$D/ceph.conf"
