#!/bin/bash
# build-libbpf.sh - build the libbpf.so a pwru wheel bundles, for x86_64 and/or aarch64.
#
# Usage: packaging/build-libbpf.sh [x86_64] [aarch64]      (default: both)
#        packaging/build-libbpf.sh --recipe                 (print the recipe checksum)
#
# Sources are Debian source packages of $PWRU_SOURCE_SUITE (default trixie): libbpf,
# elfutils (only its libelf is built) and zlib, fetched with `apt-get source` through a
# private apt state (the host's apt configuration and lists are left alone; no root).
# The compiler is `zig cc` (pip package ziglang) with the target <arch>-linux-gnu.2.28:
# zig links against the symbol set of glibc 2.28, so the library loads on any glibc
# >= 2.28, and it cross-compiles aarch64 with its own headers (no sysroot, no container).
# libelf and zlib are linked into libbpf.so statically; the result needs only libc.
#
# Output ($PWRU_BUILD_DIR, default <repo>/build/packaging):
#   <arch>/libbpf.so.<version>  stripped; SONAME libbpf.so.1; exports only libbpf's API
#   <arch>/recipe               checksum of this script and libelf-config.h (rebuild if changed)
#   sources.txt                 source packages and versions used (goes into the wheels)
#   licenses/                   the three libraries' license texts (go into the wheels)
#
# Environment: PWRU_BUILD_DIR, PWRU_SOURCE_SUITE, DEBIAN_MIRROR (default: the Debian
# archive the host's apt uses), PYTHON (interpreter that has ziglang; default python3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD=${PWRU_BUILD_DIR:-$REPO/build/packaging}
SUITE=${PWRU_SOURCE_SUITE:-trixie}
PYTHON=${PYTHON:-python3}
GLIBC=2.28
JOBS=$(nproc)
SRC=$BUILD/src

log() { echo "build-libbpf: $*" >&2; }
die() { echo "build-libbpf: ERROR: $*" >&2; exit 1; }

recipe() { cat "$HERE/build-libbpf.sh" "$HERE/libelf-config.h" | sha256sum | cut -d' ' -f1; }
if [ "${1:-}" = --recipe ]; then recipe; exit 0; fi

ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(x86_64 aarch64)
for arch in "${ARCHES[@]}"; do
	case $arch in x86_64|aarch64) ;; *) die "unknown arch '$arch' (x86_64, aarch64)" ;; esac
done
ZIG=$("$PYTHON" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))') \
	|| die "no ziglang in $PYTHON: run make setup (pip install ziglang)"

# ------------------------------------------------------------------ sources
apt_opts() {
	local state=$SRC/apt
	echo -o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
		-o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" \
		-o Dir::State::status=/dev/null -o APT::Sandbox::User="$(id -un)"
}

init_apt() {
	local mirror=${DEBIAN_MIRROR:-}
	if [ -z "$mirror" ]; then
		mirror=$(apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null |
			awk '$1 == "Debian" { print $2; exit }')
	fi
	[ -n "$mirror" ] || die "no Debian archive in the host's apt config: set DEBIAN_MIRROR"
	mkdir -p "$SRC/apt/lists/partial" "$SRC/apt/cache/archives/partial"
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" \
		> "$SRC/apt/sources.list"
	# shellcheck disable=SC2046
	apt-get $(apt_opts) -qq update || die "apt-get update of $SUITE's source index failed"
}

fetch_source() { # PACKAGE: newest version of the suite that downloads, unpacked in $SRC/PACKAGE
	local pkg=$1 version dsc
	[ -f "$SRC/$pkg.version" ] && [ -d "$SRC/$pkg" ] && return 0
	mkdir -p "$SRC/dl"
	# shellcheck disable=SC2046
	for version in $(apt-cache $(apt_opts) showsrc "$pkg" | sed -n 's/^Version: //p' | sort -rV); do
		# (an index can list a version the archive no longer serves: try the next one)
		# shellcheck disable=SC2046
		(cd "$SRC/dl" && apt-get $(apt_opts) -qq source --download-only "$pkg=$version") \
			>/dev/null 2>&1 || continue
		dsc=$(ls "$SRC/dl/${pkg}_${version#*:}.dsc")
		rm -rf "$SRC/$pkg"
		dpkg-source -q -x "$dsc" "$SRC/$pkg" >/dev/null 2>&1 || die "dpkg-source -x $dsc failed"
		echo "$version" > "$SRC/$pkg.version"
		log "source $pkg $version"
		return 0
	done
	die "could not download any version of source package $pkg from $SUITE"
}

fetch_sources() {
	local pkg
	for pkg in libbpf elfutils zlib; do
		[ -f "$SRC/$pkg.version" ] || { init_apt; break; }
	done
	for pkg in libbpf elfutils zlib; do fetch_source "$pkg"; done
	{
		echo "Bundled in pwru's platform wheels as pwru/bpf/lib/libbpf.so.<version>, built by"
		echo "packaging/build-libbpf.sh with zig cc for glibc $GLIBC from these Debian source packages:"
		for pkg in libbpf elfutils zlib; do echo "  $pkg $(cat "$SRC/$pkg.version") ($SUITE)"; done
		echo "libelf (from elfutils) and zlib are linked statically into libbpf.so."
	} > "$BUILD/sources.txt"
	rm -rf "$BUILD/licenses"
	mkdir -p "$BUILD/licenses/libbpf" "$BUILD/licenses/elfutils" "$BUILD/licenses/zlib"
	cp "$SRC"/libbpf/LICENSE* "$BUILD/licenses/libbpf/"
	cp "$SRC"/elfutils/COPYING* "$BUILD/licenses/elfutils/"
	cp "$SRC/zlib/LICENSE" "$BUILD/licenses/zlib/" 2>/dev/null ||
		sed -n '/Copyright notice:/,$p' "$SRC/zlib/README" > "$BUILD/licenses/zlib/LICENSE"
}

# ------------------------------------------------------------------ build
build_zlib() { # WORK CC CFLAGS
	cp -a "$SRC/zlib" "$1/zlib"
	(cd "$1/zlib" && CC=$2 CFLAGS=$3 ./configure --static >configure.log 2>&1 &&
		make -s -j"$JOBS" libz.a >make.log 2>&1) || die "zlib build failed (see $1/zlib/*.log)"
}

build_libelf() { # WORK CC CFLAGS
	local work=$1/libelf eu=$SRC/elfutils version
	mkdir -p "$work/include"
	version=$(sed -n 's/^AC_INIT(\[[^]]*\],\[\([0-9.]*\)\].*/\1/p' "$eu/configure.ac")
	[ -n "$version" ] || die "cannot read elfutils' version from configure.ac"
	cp "$HERE/libelf-config.h" "$work/config.h"
	cp "$eu"/libelf/{libelf.h,gelf.h,nlist.h} "$work/include/"
	# the sources of libelf.a, as elfutils' own Makefile.am lists them, plus lib/eu-search.c
	sed -n '/^libelf_a_SOURCES/,/^$/p' "$eu/libelf/Makefile.am" |
		sed 's/^libelf_a_SOURCES =//; s/\\//g' | tr -s ' \t' '\n\n' | grep '\.c$' |
		sed "s|^|$eu/libelf/|" > "$work/sources"
	echo "$eu/lib/eu-search.c" >> "$work/sources"
	[ "$(wc -l < "$work/sources")" -gt 100 ] || die "libelf source list from Makefile.am looks wrong"
	# one compiler per core; $LIBELF_CC is split into words on purpose (no spaces in paths)
	LIBELF_CC="$2 $3 -std=gnu11 -D_GNU_SOURCE -DHAVE_CONFIG_H -D_FILE_OFFSET_BITS=64
		-DELFUTILS_VERSION=\"$version\" -fvisibility=hidden
		-I$work -I$eu/libelf -I$eu/lib -I$1/zlib" LIBELF_OUT=$work \
		xargs -P "$JOBS" -n 1 sh -c 'f=${1##*/}; exec $LIBELF_CC -c "$1" -o "$LIBELF_OUT/${f%.c}.o"' sh \
		< "$work/sources" || die "libelf build failed"
	"$ZIG" ar rcs "$work/libelf.a" "$work"/*.o
}

build_arch() { # ARCH
	local arch=$1 work=$BUILD/$1/work cc cflags version
	cc="$ZIG cc -target $arch-linux-gnu.$GLIBC"
	cflags="-O2 -fPIC -fno-sanitize=undefined -ffile-prefix-map=$SRC=."
	rm -rf "$BUILD/$arch"
	mkdir -p "$work"
	log "$arch: zlib"
	build_zlib "$work" "$cc" "$cflags"
	log "$arch: libelf"
	build_libelf "$work" "$cc" "$cflags"
	log "$arch: libbpf"
	cp -a "$SRC/libbpf" "$work/libbpf"
	version=$(sed -n 's/^LIBBPF_\(MAJOR\|MINOR\|PATCH\)_VERSION := //p' "$work/libbpf/src/Makefile" |
		paste -sd.)
	# -z defs: an unresolved symbol fails the link instead of failing at dlopen time;
	# -s: no symbol table or debug info (the dynamic symbols stay)
	make -s -C "$work/libbpf/src" -j"$JOBS" OBJDIR="$work/libbpf/out" HOSTARCH="$arch" \
		CC="$cc" AR="$ZIG ar" NO_PKG_CONFIG=1 CFLAGS="$cflags -Wall" \
		EXTRA_CFLAGS="-I$work/libelf/include -I$work/zlib" \
		LDFLAGS="-L$work/libelf -L$work/zlib -Wl,-z,defs -Wl,-s" \
		"$work/libbpf/out/libbpf.so.$version" >"$work/libbpf.log" 2>&1 \
		|| { tail -20 "$work/libbpf.log" >&2; die "libbpf build failed (see $work/libbpf.log)"; }
	cp "$work/libbpf/out/libbpf.so.$version" "$BUILD/$arch/libbpf.so.$version"
	recipe > "$BUILD/$arch/recipe"
	rm -rf "$work"
	log "$arch: $BUILD/$arch/libbpf.so.$version"
}

t0=$(date +%s)
mkdir -p "$BUILD"
fetch_sources
for arch in "${ARCHES[@]}"; do build_arch "$arch"; done
log "done in $(( $(date +%s) - t0 ))s"
