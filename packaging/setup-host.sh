#!/bin/bash
# setup-host.sh - the part of `make setup` apt cannot do for packaging/ and its tests:
# let this amd64 host run arm64 programs through qemu-user-static, so mmdebstrap can
# configure an arm64 Debian root (maintainer scripts) for the arm64 wheel's guest test.
# Idempotent; needs root and the qemu-user-static package (make setup installs it).
set -euo pipefail

BINFMT=/proc/sys/fs/binfmt_misc
CONF=/usr/lib/binfmt.d/qemu-aarch64.conf

log() { echo "packaging/setup-host: $*" >&2; }
die() { echo "packaging/setup-host: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -f "$CONF" ] || die "$CONF missing: apt-get install qemu-user-static"
# Without systemd as PID 1 nothing mounts binfmt_misc or registers qemu's formats.
if ! mountpoint -q "$BINFMT"; then
	mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc on $BINFMT"
	log "mounted $BINFMT"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
	# the F flag in the .conf opens the interpreter now, so it also works inside chroots
	grep -v '^#' "$CONF" > "$BINFMT/register" || die "cannot register $CONF"
	log "registered qemu-aarch64 (binfmt_misc)"
fi
grep -qx enabled "$BINFMT/qemu-aarch64" || die "binfmt qemu-aarch64 is registered but disabled"
