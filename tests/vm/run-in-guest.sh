#!/bin/bash
# run-in-guest.sh - boot a stock Debian kernel package under QEMU TCG (virtme-ng) with the
# host's root filesystem shared read-only over virtiofs (tmpfs overlays on top, incl. /tmp),
# run one shell command as root in the guest, and return its stdout/stderr/exit code.
#
# Usage: tests/vm/run-in-guest.sh [options] <debian-kernel-package> <shell command...>
#   e.g. tests/vm/run-in-guest.sh linux-image-6.12.117+deb12-amd64-unsigned 'uname -r'
#
# Options:
#   -w DIR        host dir, read-WRITE in the guest at the same path (repeatable)
#   -r DIR        host dir exported again, read-only, at the same path (repeatable): needed
#                 for dirs under /var/cache, /var/tmp, /var/log, ... which the guest covers
#                 with tmpfs (e.g. $PWRU_VM_DIR/progs); must not contain a -w dir
#   -e NAME=VAL   environment variable for the guest command (repeatable)
#   -t SECS       wall-clock timeout of the whole VM run (default 900)
#   -m MEM        guest memory (default 2G)      -c N   guest vCPUs (default 2)
#   -9            use 9p instead of virtiofs (needs a kernel with CONFIG_NET_9P_VIRTIO)
#   -v            show the guest console (kernel log) on stderr
#   -k            keep the per-run dir ($PWRU_VM_DIR/runs/run.*: cmd.sh, guest.sh, rc, dmesg.txt)
#
# Exit code: the guest command's; 124 = timeout; 125 = the VM did not run the command
# (boot failure, panic, or root fs not virtiofs as expected; rerun with -v); 130 =
# interrupted; 2 = usage/setup error (run tests/vm/setup-host.sh first).
#
# In the guest: the command runs via bash as root, stdin /dev/null, cwd = the caller's cwd,
# `lo` up, PATH = distro default (call interpreters by absolute path), and
#   PWRU_VM_GUEST=1  PWRU_VM_PKG=<package>  PWRU_VM_KVER=<expected uname -r>  PWRU_VM_FS=virtiofs|9p
# Writes outside -w dirs land in tmpfs overlays and never reach the host.
#
# Environment: PWRU_VM_DIR (default /var/cache/pwru-vm; see setup-host.sh).
set -u -o pipefail

HERE=$(dirname "$(readlink -f "$0")")
VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
VENV=$VM_DIR/vng
VFSD=$VM_DIR/virtiofsd
MEM=2G CPUS=2 TMO=900 FORCE9P=0 VERBOSE=0 KEEP=0
RWDIRS=() RODIRS=() ENVS=()

die() { echo "run-in-guest: ERROR: $*" >&2; exit 2; }
log() { echo "run-in-guest: $*" >&2; }

while getopts "m:c:t:w:r:e:9vkh" o; do
  case $o in
    m) MEM=$OPTARG ;; c) CPUS=$OPTARG ;; t) TMO=$OPTARG ;;
    w) [ -d "$OPTARG" ] || die "-w $OPTARG: not a directory"; RWDIRS+=("$(readlink -f "$OPTARG")") ;;
    r) [ -d "$OPTARG" ] || die "-r $OPTARG: not a directory"; RODIRS+=("$(readlink -f "$OPTARG")") ;;
    e) [[ $OPTARG =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "-e wants NAME=VALUE"; ENVS+=("$OPTARG") ;;
    9) FORCE9P=1 ;; v) VERBOSE=1 ;; k) KEEP=1 ;;
    h) sed -n '2,32p' "$0"; exit 0 ;;
    *) die "bad option (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || die "usage: $0 [options] <kernel-package> <command...> (see -h)"
PKG=$1; shift
CMD="$*"

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "must run as root (virtiofsd shares / with the host's permissions)"
[ -x "$VENV/bin/vng" ] && [ -x "$VENV/bin/virtme-run" ] || die "no virtme-ng in $VENV: run tests/vm/setup-host.sh"
USE_VFSD=1; FS=virtiofs
if [ "$FORCE9P" = 1 ]; then
  USE_VFSD=0; FS=9p
elif ! "$VFSD/bin/virtiofsd" --version >/dev/null 2>&1; then
  die "no working virtiofsd in $VFSD: run tests/vm/setup-host.sh (or pass -9 for 9p)"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run tests/vm/setup-host.sh"

# ---------------------------------------------------------------- kernel
read -r KIMG KVER < <("$HERE/fetch-kernel.sh" "$PKG") || true
[ -n "${KIMG:-}" ] && [ -f "$KIMG" ] || die "could not fetch kernel package $PKG"
KTREE=${KIMG%/boot/*}; KTREE=${KTREE%/usr/lib/modules/*}; KTREE=${KTREE%/lib/modules/*}
for c in "$KTREE/boot/config-$KVER" "$KTREE/usr/lib/modules/$KVER/config" "$KTREE/lib/modules/$KVER/config"; do
  [ -f "$c" ] && { KCONFIG=$c; break; }
done
if [ "$FS" = 9p ] && [ -n "${KCONFIG:-}" ] && ! grep -qE '^CONFIG_NET_9P_VIRTIO=[ym]' "$KCONFIG"; then
  die "$KVER has no 9p (CONFIG_NET_9P_VIRTIO unset, e.g. -cloud- kernels): drop -9"
fi

# ---------------------------------------------------------------- per-run dir
mkdir -p "$VM_DIR/runs"
RUN=$(mktemp -d "$VM_DIR/runs/run.XXXXXX")
printf '%s\n' "$CMD" > "$RUN/cmd.sh"
q() { printf %q "$1"; }
{
  echo "export PWRU_VM_GUEST=1 PWRU_VM_PKG=$(q "$PKG") PWRU_VM_KVER=$(q "$KVER") PWRU_VM_FS=$FS PWRU_VM_RUN_DIR=$(q "$RUN")"
  for e in "${ENVS[@]}"; do echo "export ${e%%=*}=$(q "${e#*=}")"; done
} > "$RUN/env.sh"
QRUN=$(q "$RUN")
cat > "$RUN/guest.sh" <<EOF
#!/bin/bash
# Runs as a child of virtme-ng-init (PID 1) in the guest.
# The host has no udev, so virtme-ng-init cannot find /dev/virtio-ports/virtme.* and falls
# back to the console: recreate the links udev would make and wire our stdio to vng's
# stdout/stderr ports (the exit code goes back through virtme.ret and $QRUN/rc).
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/*; do
  n=\$(cat "\$p/name" 2>/dev/null) && [ -n "\$n" ] && ln -sf "/dev/\${p##*/}" "/dev/virtio-ports/\$n"
done
[ -e /dev/virtio-ports/virtme.stdout ] && exec >/dev/virtio-ports/virtme.stdout
[ -e /dev/virtio-ports/virtme.stderr ] && exec 2>/dev/virtio-ports/virtme.stderr
exec </dev/null
# vng silently falls back to 9p when virtiofsd is slow to start: refuse to run then.
rootfs=\$(awk '\$2 == "/" { t = \$3 } END { print t }' /proc/mounts)
echo "\$rootfs" > $QRUN/rootfs
if [ "\$rootfs" != "$FS" ]; then
  echo "run-in-guest(guest): root filesystem is '\$rootfs', expected '$FS' (vng fell back?); not running the command" >&2
  sync; exit 125
fi
export HOME=/root TMPDIR=/tmp
. $QRUN/env.sh
ip link set lo up 2>/dev/null
cd $(q "$PWD") 2>/dev/null || cd /tmp
bash $QRUN/cmd.sh
rc=\$?
echo \$rc > $QRUN/rc
dmesg > $QRUN/dmesg.txt 2>/dev/null
sync
exit \$rc
EOF

# virtme-ng-init mounts tmpfs over the guest's /var/cache, /var/tmp, /var/log, ..., which
# hides the default $PWRU_VM_DIR (/var/cache/pwru-vm): export the kernel tree (vng
# symlinks its modules to /lib/modules/<kver>) read-only at the same path. vng mounts all
# --rwdir before any --rodir, so a --rodir must not be a parent of a --rwdir.
VNG_ARGS=(--disable-kvm -r "$KIMG" --user root --memory "$MEM" --cpus "$CPUS"
          --rwdir "$RUN" --rodir "$KTREE")
for d in "${RODIRS[@]}"; do VNG_ARGS+=(--rodir "$d"); done
for d in "${RWDIRS[@]}"; do VNG_ARGS+=(--rwdir "$d"); done
[ "$USE_VFSD" = 1 ] || VNG_ARGS+=(--force-9p)
[ "$VERBOSE" = 1 ] && VNG_ARGS+=(--verbose)
# vng runs `virtme-run` by name and looks for virtiofsd on PATH (our trixie build first;
# bookworm's /usr/lib/qemu/virtiofsd is the C daemon vng cannot drive).
PATH="$VFSD/bin:$VENV/bin:$PATH"; export PATH

log "kernel $KVER ($PKG), fs=$FS, mem=$MEM cpus=$CPUS, TCG, run dir $RUN"
t0=$(date +%s.%N)
# - stdout/stderr MUST be pipes/FIFOs: qemu re-opens /proc/self/fd/{1,2} (twice each)
#   with O_TRUNC, which truncates/overwrites regular files the caller redirects into.
# - stdin must not be a tty: timeout(1) puts the VM in its own process group, so a tty
#   read would stop it with SIGTTIN, and Ctrl-C/SIGTERM never reach it: forward them.
# - timeout kills its whole process group (vng, qemu, virtiofsd) when it expires.
mkfifo "$RUN/out.fifo" "$RUN/err.fifo"
cat "$RUN/out.fifo" & c1=$!
cat "$RUN/err.fifo" >&2 & c2=$!
timeout -k 10 "$TMO" vng "${VNG_ARGS[@]}" -- "bash $QRUN/guest.sh" \
  </dev/null >"$RUN/out.fifo" 2>"$RUN/err.fifo" 9>&- &
tpid=$!
INTR=0
trap 'INTR=1; kill -TERM "$tpid" 2>/dev/null' INT TERM HUP
while :; do
  wait "$tpid"; vrc=$?
  kill -0 "$tpid" 2>/dev/null || break
done
trap - INT TERM HUP
wait "$c1" "$c2" 2>/dev/null
t1=$(date +%s.%N)
if [ "$INTR" = 1 ]; then
  log "interrupted; VM killed"; rm -rf "$RUN"; exit 130
fi
rootfs=$(cat "$RUN/rootfs" 2>/dev/null)
if [ -s "$RUN/rc" ]; then
  rc=$(cat "$RUN/rc")
elif [ -n "$rootfs" ] && [ "$rootfs" != "$FS" ]; then
  log "FAILED: guest root filesystem was '$rootfs', not '$FS' (vng gave up waiting for virtiofsd and fell back); command not run"
  rc=125
elif [ "$vrc" = 124 ] || [ "$vrc" = 137 ]; then
  log "TIMEOUT after ${TMO}s"; rc=124
else
  log "guest command did not complete (vng rc=$vrc): boot failure or panic; rerun with -v"; rc=125
fi
log "$(printf 'kernel %s: rc=%s, wall %.1fs (boot+command+poweroff)' "$KVER" "$rc" "$(awk "BEGIN{print $t1 - $t0}")")"
if [ "$KEEP" = 0 ] && [ "$rc" != 125 ] && [ "$rc" != 124 ]; then rm -rf "$RUN"; else log "kept $RUN"; fi
exit "$rc"
