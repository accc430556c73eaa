#!/bin/bash
# debian-root.sh - a Debian root filesystem as a tarball, made by mmdebstrap from packages.
#
# Usage: packaging/debian-root.sh [--variant=V] SUITE ARCH PACKAGES OUT.tar [mmdebstrap options...]
#   e.g. packaging/debian-root.sh bullseye amd64 python3,python3-pip,iptables /tmp/b11.tar
#   PACKAGES   comma-separated, installed with their dependencies
#   --variant  mmdebstrap variant: essential (default: the Essential:yes set, no apt) or
#              extract (packages unpacked, no maintainer script run: no emulation needed
#              for a foreign ARCH, but no configuration either; e.g. no /etc/passwd)
#   ARCH       amd64 or arm64 (a foreign ARCH needs qemu-user-static registered with
#              binfmt_misc, except for --variant=extract)
#
# A root made without extra options is cached in $PWRU_ROOT_CACHE (default
# /var/cache/pwru-packaging/roots), keyed by suite, arch, packages and this script, and
# copied to OUT.tar on later calls. Extra options (hooks, e.g. packaging/image.sh) build
# afresh. The archive is the one the host's apt uses (DEBIAN_MIRROR overrides it).
set -euo pipefail

VARIANT=essential
case ${1:-} in --variant=*) VARIANT=${1#--variant=}; shift ;; esac
[ $# -ge 4 ] || { sed -n '2,17s/^# \{0,1\}//p' "$0" >&2; exit 2; }
SUITE=$1 ARCH=$2 PACKAGES=$3 OUT=$4
shift 4
CACHE=${PWRU_ROOT_CACHE:-/var/cache/pwru-packaging/roots}

log() { echo "debian-root: $*" >&2; }
die() { echo "debian-root: ERROR: $*" >&2; exit 1; }

mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null |
	awk '$1 == "Debian" { print $2; exit }')}
[ -n "$mirror" ] || die "no Debian archive in the host's apt config: set DEBIAN_MIRROR"

cached=""
if [ $# = 0 ]; then
	key=$(printf '%s\n' "$VARIANT" "$SUITE" "$ARCH" "$PACKAGES" "$(cat "$0")" | sha256sum | cut -c1-16)
	cached=$CACHE/$SUITE-$ARCH-$VARIANT-$key.tar
	if [ -f "$cached" ]; then
		cp "$cached" "$OUT"
		log "$OUT (cached $cached)"
		exit 0
	fi
fi

t0=$(date +%s)
tmp=$OUT.partial
mmdebstrap --quiet --mode=root --format=tar --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES" \
	"$@" "$SUITE" "$tmp" "$mirror" || { rm -f "$tmp"; die "mmdebstrap $SUITE $ARCH failed"; }
mv "$tmp" "$OUT"
if [ -n "$cached" ]; then
	mkdir -p "$CACHE"
	cp "$OUT" "$cached.partial.$$" && mv "$cached.partial.$$" "$cached"
fi
log "$OUT ($SUITE $ARCH, $(du -m "$OUT" | cut -f1) MB) in $(( $(date +%s) - t0 ))s"
