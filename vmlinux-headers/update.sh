#!/usr/bin/env bash
# Regenerate vmlinux-headers/{x86,arm64}/vmlinux.h.
#
#   update.sh [--x86-btf FILE] [--arm64-pkg PACKAGE] [--only x86|arm64]
#
# x86:   bpftool btf dump of FILE (default /sys/kernel/btf/vmlinux, i.e. the
#        running kernel; run it on an x86_64 host).
# arm64: downloads (never installs) a stock Debian arm64 kernel package,
#        pulls the BTF blob out of its vmlinuz with extract_btf.py and dumps it.
#        Default package: the newest linux-image-$ARM64_SERIES.*+deb12-arm64-unsigned
#        in bookworm-security (ARM64_SERIES defaults to 6.12).
#
# The arm64 download uses a private apt state in a temp dir (arm64 package
# lists only, status file /dev/null), so the host's dpkg architectures and
# apt lists are left alone and no root is needed. Mirrors default to the
# Debian ones the host's apt already uses; override with DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR. Needs: bpftool, python3, apt-get, dpkg-deb.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
x86_btf=/sys/kernel/btf/vmlinux
arm64_pkg=""
only=""
suite=${DEBIAN_SUITE:-bookworm}
series=${ARM64_SERIES:-6.12}

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
	case $1 in
	--x86-btf) x86_btf=$2; shift 2 ;;
	--arm64-pkg) arm64_pkg=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	-h|--help) usage ;;
	*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
done

dump() { # BTF_FILE OUT
	bpftool btf dump file "$1" format c > "$2.tmp"
	mv "$2.tmp" "$2"
	echo "wrote $2 ($(wc -c < "$2") bytes)" >&2
}

update_x86() {
	dump "$x86_btf" "$here/x86/vmlinux.h"
}

# Debian mirror the host's apt is configured with, by Release label.
host_mirror() { # LABEL
	apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null |
		awk -v l="$1" '$1 == l { print $2; exit }'
}

update_arm64() {
	local main_uri sec_uri apt pkg deb vmlinuz
	main_uri=${DEBIAN_MIRROR:-$(host_mirror Debian)}
	sec_uri=${DEBIAN_SECURITY_MIRROR:-$(host_mirror Debian-Security)}
	if [ -z "$main_uri" ] || [ -z "$sec_uri" ]; then
		echo "no Debian mirror in the host's apt config: set DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR" >&2
		exit 1
	fi

	tmp=$(mktemp -d) # global: the EXIT trap runs after this function returns
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	cat > "$tmp/sources.list" <<-EOF
		deb [arch=arm64 signed-by=$keyring] $main_uri $suite main
		deb [arch=arm64 signed-by=$keyring] $sec_uri $suite-security main
	EOF
	apt=(
		-o APT::Architecture=arm64 -o APT::Architectures::=arm64
		-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/nonexistent
		-o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache"
		-o Dir::State::status=/dev/null -o APT::Sandbox::User="$(id -un)"
	)
	apt-get "${apt[@]}" -qq update

	pkg=$arm64_pkg
	if [ -z "$pkg" ]; then
		pkg=$(apt-cache "${apt[@]}" pkgnames linux-image- |
			grep -E "^linux-image-${series//./\\.}\.[0-9]+\+deb[0-9]+-arm64-unsigned\$" |
			sort -V | tail -n1)
		[ -n "$pkg" ] || { echo "no linux-image-$series.*-arm64-unsigned in $suite" >&2; exit 1; }
	fi
	echo "arm64: $pkg $(apt-cache "${apt[@]}" show --no-all-versions "$pkg" | sed -n 's/^Version: //p')" >&2

	(cd "$tmp" && apt-get "${apt[@]}" -qq download "$pkg")
	deb=$(ls "$tmp"/*.deb)
	mkdir "$tmp/root"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/root" --wildcards './boot/vmlinuz-*'
	vmlinuz=$(ls "$tmp"/root/boot/vmlinuz-*)
	python3 "$here/extract_btf.py" "$vmlinuz" "$tmp/vmlinux.btf"
	dump "$tmp/vmlinux.btf" "$here/arm64/vmlinux.h"
}

case $only in
"") update_x86; update_arm64 ;;
x86) update_x86 ;;
arm64) update_arm64 ;;
*) echo "--only takes x86 or arm64" >&2; exit 2 ;;
esac
