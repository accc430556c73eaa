#!/bin/bash
# arm64-guest.sh - boot a stock Debian arm64 kernel under qemu-system-aarch64 (TCG) with an
# arm64 root directory as the guest's root filesystem (virtiofs, no initramfs: Debian's
# arm64 kernel has virtio-pci and virtiofs built in), run one shell command there as
# root, print its stdout/stderr and exit with its exit code.
#
# Usage: tests/vm/arm64-guest.sh [-t SECS] [-m MEM] [-c CPUS] [-k PACKAGE] ROOT COMMAND...
#   ROOT   an arm64 root filesystem (e.g. mmdebstrap --arch=arm64 --variant=extract,
#          unpacked) with /bin/busybox (busybox-static); the guest can write to it, so
#          pass a scratch copy. The command's output lands in ROOT/pwru-guest/.
#   -k     Debian kernel package (default: the newest linux-image-6.12.*+deb12-arm64-unsigned
#          of bookworm-security)      -t  timeout of the whole run (default 900 s)
#   -m     guest memory (default 2G)  -c  vCPUs (default 2)
#
# The guest's init (busybox sh) mounts proc, sysfs, devtmpfs, tmpfs on /tmp and /run, bpffs
# and tracefs, brings lo up and runs COMMAND with busybox sh in /. The kernel package is
# fetched once through a private arm64 apt state (the host's apt is left alone); only its
# vmlinuz and config are kept, in $PWRU_VM_DIR/kernels-arm64/<package>/.
# Needs: qemu-system-aarch64 (qemu-system-arm) and the Rust virtiofsd that
# tests/vm/setup-host.sh installs. Exit: the command's; 124 timeout; 125 the guest did
# not run the command (the console log is kept and named); 2 usage/setup error.
set -u -o pipefail

VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
VFSD=$VM_DIR/virtiofsd/bin/virtiofsd
TMO=900 MEM=2G CPUS=2 PKG=""
log() { echo "arm64-guest: $*" >&2; }
die() { echo "arm64-guest: ERROR: $*" >&2; exit 2; }

while getopts "t:m:c:k:h" o; do
	case $o in
	t) TMO=$OPTARG ;; m) MEM=$OPTARG ;; c) CPUS=$OPTARG ;; k) PKG=$OPTARG ;;
	h) sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "bad option (see -h)" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || die "usage: $0 [options] ROOT COMMAND... (see -h)"
ROOT=$(readlink -f "$1"); shift
CMD="$*"
[ "$(id -u)" = 0 ] || die "must run as root (virtiofsd serves ROOT with its owners)"
[ -x "$ROOT/bin/busybox" ] || die "$ROOT/bin/busybox missing (include busybox-static in the root)"
command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 missing (apt-get install qemu-system-arm)"
"$VFSD" --version >/dev/null 2>&1 || die "no working $VFSD: run tests/vm/setup-host.sh"

# ---------------------------------------------------------------- kernel
host_mirror() { # LABEL: the URI of the host's Debian archive with that Release label
	apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null | awk -v l="$1" '$1 == l { print $2; exit }'
}

fetch_kernel() { # -> prints the directory holding vmlinuz and config
	local apt_dir=$VM_DIR/kernels-arm64/apt main sec keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	local opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
		-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
		-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
		-o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
	if [ -z "$PKG" ] || [ ! -f "$VM_DIR/kernels-arm64/$PKG/vmlinuz" ]; then
		main=$(host_mirror Debian) sec=$(host_mirror Debian-Security)
		[ -n "$main" ] && [ -n "$sec" ] || die "no Debian/Debian-Security archive in the host's apt config"
		mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
		printf 'deb [arch=arm64 signed-by=%s] %s bookworm main\ndeb [arch=arm64 signed-by=%s] %s bookworm-security main\n' \
			"$keyring" "$main" "$keyring" "$sec" > "$apt_dir/sources.list"
		apt-get "${opts[@]}" -qq update >&2 || die "apt-get update (arm64 lists) failed"
	fi
	if [ -z "$PKG" ]; then
		PKG=$(apt-cache "${opts[@]}" pkgnames linux-image-6.12. |
			grep -E '^linux-image-6\.12\.[0-9]+\+deb12-arm64-unsigned$' | sort -V | tail -n1)
		[ -n "$PKG" ] || die "no linux-image-6.12.*+deb12-arm64-unsigned in bookworm(-security)"
	fi
	local dir=$VM_DIR/kernels-arm64/$PKG tmp
	if [ ! -f "$dir/vmlinuz" ]; then
		tmp=$(mktemp -d "$VM_DIR/kernels-arm64/fetch.XXXXXX")
		(cd "$tmp" && apt-get "${opts[@]}" -qq download "$PKG" >&2) || { rm -rf "$tmp"; die "apt-get download $PKG failed"; }
		dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './boot/config-*' \
			|| { rm -rf "$tmp"; die "cannot unpack $PKG"; }
		mkdir -p "$dir"
		mv "$tmp"/boot/vmlinuz-* "$dir/vmlinuz" && mv "$tmp"/boot/config-* "$dir/config"
		rm -rf "$tmp"
		log "fetched $PKG"
	fi
	echo "$dir"
}

mkdir -p "$VM_DIR/kernels-arm64"
KDIR=$(fetch_kernel) || exit 2
PKG=$(basename "$KDIR")
grep -q '^CONFIG_VIRTIO_FS=y' "$KDIR/config" || die "$PKG has no built-in virtiofs"

# ---------------------------------------------------------------- guest init
OUT=$ROOT/pwru-guest
rm -rf "$OUT"; mkdir -p "$OUT"
printf '%s\n' "$CMD" > "$OUT/cmd.sh"
cat > "$OUT/init" <<'EOF'
#!/bin/busybox sh
# PID 1 of the arm64 guest (written by tests/vm/arm64-guest.sh)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
bb=/bin/busybox
$bb mkdir -p /proc /sys /dev /tmp /run /root
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t tmpfs tmpfs /tmp
$bb mount -t tmpfs tmpfs /run
$bb mount -t bpf bpf /sys/fs/bpf
$bb mount -t tracefs tracefs /sys/kernel/tracing
$bb ip link set lo up
cd /
echo started > /pwru-guest/started
$bb sh /pwru-guest/cmd.sh > /pwru-guest/stdout 2> /pwru-guest/stderr
echo $? > /pwru-guest/rc
$bb sync
$bb poweroff -f
EOF
chmod +x "$OUT/init"

# ---------------------------------------------------------------- run
RUN=$(mktemp -d /tmp/arm64-guest.XXXXXX)
cleanup() { [ -n "${VPID:-}" ] && kill "$VPID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
"$VFSD" --socket-path "$RUN/vfs.sock" --shared-dir "$ROOT" --sandbox none --cache auto \
	--no-announce-submounts >"$RUN/virtiofsd.log" 2>&1 &
VPID=$!
for _ in $(seq 100); do [ -S "$RUN/vfs.sock" ] && break; sleep 0.1; done
[ -S "$RUN/vfs.sock" ] || die "virtiofsd did not start: $(cat "$RUN/virtiofsd.log")"

log "kernel $PKG, mem $MEM, $CPUS vCPUs, TCG"
t0=$(date +%s.%N)
timeout -k 10 "$TMO" qemu-system-aarch64 -M virt,memory-backend=mem -cpu cortex-a57 -smp "$CPUS" \
	-m "$MEM" -object memory-backend-memfd,id=mem,size="$MEM",share=on \
	-kernel "$KDIR/vmlinuz" -no-reboot -display none -monitor none -serial "file:$OUT/console.log" \
	-append "console=ttyAMA0 root=rootfs rootfstype=virtiofs rw init=/pwru-guest/init panic=-1" \
	-chardev socket,id=vfs,path="$RUN/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=rootfs \
	</dev/null >"$RUN/qemu.log" 2>&1
qrc=$?
wall=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
[ -f "$OUT/stdout" ] && cat "$OUT/stdout"
[ -f "$OUT/stderr" ] && cat "$OUT/stderr" >&2
if [ -s "$OUT/rc" ]; then
	rc=$(cat "$OUT/rc")
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	log "TIMEOUT after ${TMO}s; console: $OUT/console.log"; rc=124
else
	log "the guest did not run the command (qemu rc=$qrc: $(tail -3 "$RUN/qemu.log")); console: $OUT/console.log"
	rc=125
fi
log "rc=$rc, wall ${wall}s (boot + command + power-off)"
exit "$rc"
