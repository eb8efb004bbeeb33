#!/usr/bin/env bash
# test/vm/run-in-vm.sh — boot Debian's stock kernel under qemu (TCG, no KVM needed) with a
# throw-away initramfs and run one command inside it. For tests that need kernel features this
# host lacks (the nbd driver). Recipe, measurements and
# how to add a guest test: test/vm/README.md.
#
#   test/vm/run-in-vm.sh [options] PAYLOAD_DIR -- COMMAND [ARGS...]
#
# The payload directory is copied to /payload in the guest, and COMMAND runs there as root
# (cwd /payload, stdin /dev/null). Its output is streamed here; the script exits with its exit
# status. 124 = the timeout hit; 125 = the harness or the guest failed (bad arguments, missing
# module, kernel panic, init died); the summary line on stderr has the timings.
#
# Cache (kernel, busybox, .debs; ~500 MiB) lives outside the repo in
# ${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dstd-vm}, guarded by flock so runs can overlap.
# Everything comes from Debian packages through apt-get; qemu-system-x86 is installed if missing.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: run-in-vm.sh [options] PAYLOAD_DIR -- COMMAND [ARGS...]
  -k, --modules "M1 M2"  kernel modules to modprobe in the guest (dependencies included); repeatable
  -d, --deb PKG          Debian package to unpack into the guest (libraries it links are added); repeatable
  -t, --timeout SEC      stop everything after SEC seconds (default 600); exit 124
  -m, --memory SIZE      guest RAM (default 1G)
  -s, --smp N            guest vCPUs (default 2)
  -v, --verbose          show the guest's boot log, not only the command's output
      --keep             keep the build directory (initramfs, console.log) and print its path
  -h, --help
environment: VM_CACHE (cache dir), VM_KERNEL_PKG (pin e.g. linux-image-6.1.0-56-amd64)
EOF
}

die() { echo "run-in-vm: $*" >&2; exit 125; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

modules=() debs=() timeout_s=600 memory=1G smp=2 verbose=0 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    -k|--modules) [ $# -ge 2 ] || die "$1 needs a value"; read -r -a m <<<"$2"; modules+=("${m[@]}"); shift 2 ;;
    -d|--deb) [ $# -ge 2 ] || die "$1 needs a value"; debs+=("$2"); shift 2 ;;
    -t|--timeout) [ $# -ge 2 ] || die "$1 needs a value"; timeout_s=$2; shift 2 ;;
    -m|--memory) [ $# -ge 2 ] || die "$1 needs a value"; memory=$2; shift 2 ;;
    -s|--smp) [ $# -ge 2 ] || die "$1 needs a value"; smp=$2; shift 2 ;;
    -v|--verbose) verbose=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) die "missing PAYLOAD_DIR before --" ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 3 ] && [ "$2" = "--" ] || { usage >&2; exit 125; }
payload=$(cd "$1" && pwd) || die "payload directory $1 does not exist"
shift 2
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"

t_start=$(now)
cache=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dstd-vm}
mkdir -p "$cache/debs" "$cache/pkg"

# ---- host tools -----------------------------------------------------------------------------

apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || die "$* is missing and installing it needs root (apt-get install $*)"
  echo "run-in-vm: installing $* with apt-get" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
    apt-get update >&2 && apt_updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
  fi
}
for tool in dpkg-deb apt-get ldd xz perl flock timeout awk od; do
  command -v "$tool" >/dev/null || die "host tool $tool is missing (a stock Debian has it)"
done
command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86

# apt-get download PKG into the cache (once per package name; the newest candidate).
fetch_deb() {
  local pkg=$1 found
  found=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$found" ]; then
    if ! (cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
      [ "$apt_updated" = 1 ] || { apt-get update >&2 && apt_updated=1; }
      (cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || die "apt-get download $pkg failed"
    fi
    found=$(ls "$cache/debs/${pkg}_"*.deb | head -n1)
  fi
  echo "$found"
}

# Unpack PKG once into $cache/pkg/PKG (docs, man pages and locales dropped).
unpack_deb() {
  local pkg=$1 deb dir=$cache/pkg/$1
  [ -e "$dir/.done" ] && return 0
  deb=$(fetch_deb "$pkg")
  rm -rf "$dir" && mkdir -p "$dir"
  dpkg-deb -x "$deb" "$dir"
  rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/locale" "$dir/usr/share/info"
  touch "$dir/.done"
}

# ---- cache: kernel (vmlinux + modules.dep) and busybox, under the lock ----------------------

t_setup=$(now)
exec 9>"$cache/lock"
flock 9
kpkg=${VM_KERNEL_PKG:-}
if [ -z "$kpkg" ] && [ -s "$cache/kernel.pkg" ]; then kpkg=$(cat "$cache/kernel.pkg"); fi
if [ -z "$kpkg" ]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$kpkg" ]; then
    apt-get update >&2 && apt_updated=1
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  fi
  [ -n "$kpkg" ] || die "cannot resolve the kernel package behind linux-image-amd64"
fi
kdir=$cache/pkg/$kpkg
if [ ! -e "$kdir/.ready" ]; then
  echo "run-in-vm: preparing $kpkg in $cache (once)" >&2
  unpack_deb "$kpkg"
  kver=$(ls "$kdir/lib/modules" | head -n1)
  # PVH boot of the ELF skips ~5 s of in-guest xz decompression per boot under TCG.
  vmlinuz=$kdir/boot/vmlinuz-$kver
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1)
  [ -n "$offset" ] || die "no xz stream found in $vmlinuz"
  tail -c +"$((offset + 1))" "$vmlinuz" | xz -dc >"$kdir/vmlinux.tmp" 2>/dev/null || true # trailing data: xz exits 1
  [ "$(head -c 4 "$kdir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "extracting vmlinux from $vmlinuz failed"
  mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
  unpack_deb busybox-static
  # Debian's package ships no modules.dep (its postinst makes one); busybox depmod does it here.
  "$cache/pkg/busybox-static/bin/busybox" depmod -b "$kdir" "$kver"
  echo "$kver" >"$kdir/.kver"
  touch "$kdir/.ready"
fi
echo "$kpkg" >"$cache/kernel.pkg"
unpack_deb busybox-static
for pkg in ${debs[@]+"${debs[@]}"}; do unpack_deb "$pkg"; done
kver=$(cat "$kdir/.kver")
busybox=$cache/pkg/busybox-static/bin/busybox
flock -u 9
exec 9>&-
t_setup_done=$(now)

# ---- initramfs ------------------------------------------------------------------------------

build=$(mktemp -d "${TMPDIR:-/tmp}/dstd-vm.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; fi
  if [ "$keep" = 1 ]; then echo "run-in-vm: kept $build" >&2; else rm -rf "$build"; fi
}
trap cleanup EXIT
trap 'echo "run-in-vm: interrupted" >&2; exit 130' INT TERM

root=$build/root
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,tmp,run,root,mnt,var/tmp,payload}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
chmod 1777 "$root/tmp" "$root/var/tmp"

# Debian packages: keep the merged-/usr symlinks when a package ships /bin, /sbin or /lib.
for pkg in ${debs[@]+"${debs[@]}"}; do
  tar -C "$cache/pkg/$pkg" --exclude=./.done -cf - . | tar -C "$root" --keep-directory-symlink -xf -
done
cp "$busybox" "$root/usr/bin/busybox"
while read -r applet; do
  name=${applet##*/}
  dir=usr/bin
  case "$applet" in sbin/* | usr/sbin/*) dir=usr/sbin ;; esac
  # A tool from a --deb package wins over the busybox applet of the same name.
  [ -e "$root/usr/bin/$name" ] || [ -e "$root/usr/sbin/$name" ] || ln -s /usr/bin/busybox "$root/$dir/$name"
done < <("$busybox" --list-full)

# Kernel modules and their dependencies, resolved on the host from modules.dep.
mdir=lib/modules/$kver
declare -A wanted=()
add_module() {
  local name=${1//-/_} line path dep
  line=$(awk -v n="$name" -F: '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f); gsub(/-/, "_", f); if (f == n) { print; exit } }' "$kdir/$mdir/modules.dep")
  [ -n "$line" ] || die "kernel module '$1' does not exist in $kpkg"
  path=${line%%:*}
  [ -n "${wanted[$path]:-}" ] && return 0
  wanted[$path]=1
  for dep in ${line#*:}; do
    dep=${dep##*/}; dep=${dep%%.ko*}
    add_module "$dep"
  done
}
for m in ${modules[@]+"${modules[@]}"}; do add_module "$m"; done
mkdir -p "$root/usr/$mdir"
for path in "${!wanted[@]}"; do
  mkdir -p "$root/usr/$mdir/$(dirname "$path")"
  cp "$kdir/$mdir/$path" "$root/usr/$mdir/$path"
done
cp "$kdir/$mdir"/modules.{order,builtin,builtin.modinfo} "$root/usr/$mdir/" 2>/dev/null || true
"$busybox" depmod -b "$root" "$kver"

# The payload, then every shared library the ELF files need (from the unpacked debs first).
cp -a "$payload/." "$root/payload/"
chmod 755 "$root/payload" # mktemp made it 0700: guest tests also run things as nobody
# The debs are already in $root: resolve against it first, then the host.
libpath=$root/usr/lib/x86_64-linux-gnu:$root/usr/lib
declare -A libs=()
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; }
while IFS= read -r -d '' f; do
  is_elf "$f" || continue
  while read -r lib; do libs[$lib]=1; done < <(LD_LIBRARY_PATH=$libpath ldd "$f" 2>/dev/null |
    awk '/=> not found/ { print "MISSING " $1 > "/dev/stderr"; next } /=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')
done < <(find "$root/usr" "$root/payload" -type f \( -perm -u+x -o -name '*.so*' \) ! -path "*/lib/modules/*" ! -name busybox -print0)
for lib in "${!libs[@]}" /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libgcc_s.so.1; do
  case "$lib" in "$root"/*) continue ;; esac # found inside the guest tree already
  target=$root$lib
  [ -e "$target" ] && continue
  [ -e "$lib" ] || continue
  mkdir -p "$(dirname "$target")"
  cp -L "$lib" "$target"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
EOF
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'hosts: files\npasswd: files\ngroup: files\n' >"$root/etc/nsswitch.conf"
: >"$root/etc/resolv.conf"
{
  echo "cd /payload || exit 125"
  printf '%q ' "$@"
  echo
} >"$root/etc/vm-cmd.sh"
cat >"$root/init" <<EOF
#!/bin/sh
# PID 1 of the test VM (generated by test/vm/run-in-vm.sh).
export PATH=/usr/sbin:/usr/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
hostname dstd-vm
rc=0
for m in ${modules[*]+${modules[*]}}; do
  modprobe "\$m" || { echo "run-in-vm: modprobe \$m failed"; rc=125; }
done
read -r up _ </proc/uptime
echo "@@VM-CMD-BEGIN uptime=\$up@@"
if [ \$rc = 0 ]; then sh /etc/vm-cmd.sh </dev/null; rc=\$?; fi
read -r up _ </proc/uptime
echo "@@VM-CMD-END rc=\$rc uptime=\$up@@"
sync
reboot -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) >"$build/initrd.cpio"
initrd_mib=$(( $(stat -c %s "$build/initrd.cpio") / 1048576 ))
t_initrd_done=$(now)

# ---- boot -----------------------------------------------------------------------------------

console=$build/console.log
: >"$console"
timeout -k 10 "$timeout_s" qemu-system-x86_64 -M pc -accel tcg -cpu max -smp "$smp" -m "$memory" \
  -nographic -no-reboot -nic none -pidfile "$build/qemu.pid" \
  -kernel "$kdir/vmlinux" -initrd "$build/initrd.cpio" \
  -append "console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check cryptomgr.notests mitigations=off" \
  </dev/null >"$console" 2>&1 &
qemu_pid=$!
t_boot=$(now)

# Stream the console: strip CRs and escape codes, show only the command's output unless -v,
# and note when the markers arrive (host clock) for the summary.
tail -s 0.2 -n +1 -f --pid="$qemu_pid" "$console" | VERBOSE=$verbose MARKS="$build/marks" perl -e '
  use Time::HiRes qw(time);
  $| = 1; my $in = 0;
  open(my $marks, ">", $ENV{MARKS}) or die;
  while (my $line = <STDIN>) {
    $line =~ s/\r//g; $line =~ s/\e\[[0-9;?]*[A-Za-z]//g;
    if ($line =~ /\@\@VM-CMD-BEGIN uptime=([0-9.]+)\@\@/) { printf $marks "begin %.3f %s\n", time, $1; $in = 1; next }
    if ($line =~ /\@\@VM-CMD-END rc=(\d+) uptime=([0-9.]+)\@\@/) { printf $marks "end %.3f %s %s\n", time, $2, $1; $in = 0; next }
    print $line if $in || $ENV{VERBOSE};
  }' &
stream_pid=$!

# Sample qemu's peak RSS while it runs (VmHWM of the qemu process under `timeout`).
peak_kib=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  qpid=$(cat "$build/qemu.pid" 2>/dev/null || true)
  if [ -n "$qpid" ]; then
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$qpid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak_kib" ] && peak_kib=$hwm
  fi
  sleep 0.5
done
set +e
wait "$qemu_pid"
qemu_rc=$?
set -e
wait "$stream_pid" 2>/dev/null || true
qemu_pid=""
t_end=$(now)

begin=$(awk '$1 == "begin"' "$build/marks" 2>/dev/null || true)
end=$(awk '$1 == "end"' "$build/marks" 2>/dev/null || true)
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  rc=124
  echo "run-in-vm: TIMEOUT after ${timeout_s}s; last console lines:" >&2
  tail -n 20 "$console" | tr -d '\r' >&2
elif [ -n "$end" ]; then
  rc=$(echo "$end" | awk '{ print $4 }')
else
  rc=125
  echo "run-in-vm: the guest stopped without finishing the command (qemu exit $qemu_rc); last console lines:" >&2
  tail -n 30 "$console" | tr -d '\r' >&2
fi

boot_to_cmd="-" guest_up="-" cmd_time="-"
if [ -n "$begin" ]; then
  boot_to_cmd=$(elapsed "$t_boot" "$(echo "$begin" | awk '{ print $2 }')")
  guest_up=$(echo "$begin" | awk '{ print $3 }')
  [ -n "$end" ] && cmd_time=$(awk -v a="$(echo "$begin" | awk '{ print $3 }')" -v b="$(echo "$end" | awk '{ print $3 }')" 'BEGIN { printf "%.2f", b - a }')
fi
echo "run-in-vm: rc=$rc total=$(elapsed "$t_start" "$t_end")s setup=$(elapsed "$t_setup" "$t_setup_done")s" \
  "initramfs=$(elapsed "$t_setup_done" "$t_initrd_done")s (${initrd_mib} MiB) boot-to-command=${boot_to_cmd}s" \
  "(guest uptime ${guest_up}s) command=${cmd_time}s qemu-peak-rss=$((peak_kib / 1024)) MiB kernel=$kpkg" >&2
exit "$rc"
