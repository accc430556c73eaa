#!/bin/bash
# build-wheels.sh - build pwru's sdist and one platform wheel per architecture into dist/.
#
# Usage: packaging/build-wheels.sh            (make wheels runs it; it builds libbpf first)
#
# 1. `python -m build --no-isolation`: the sdist, and from it the pure wheel (both BPF
#    objects, no libbpf: installed from the sdist, pwru uses the system's libbpf >= 1.0).
# 2. Per architecture, that wheel is unpacked, keeps only its architecture's BPF object,
#    gains pwru/bpf/lib/libbpf.so.<version> (packaging/build-libbpf.sh) plus the licenses
#    and source versions of what that library contains (in .dist-info), is re-tagged
#    py3-none-manylinux_2_28_<arch> (no Python extension: any CPython 3.9+ can use it)
#    and packed again with `wheel pack`, which writes RECORD.
#
# Output: dist/pwru-<v>.tar.gz, dist/pwru-<v>-py3-none-manylinux_2_28_{x86_64,aarch64}.whl
# Environment: PWRU_BUILD_DIR (build/packaging), PYTHON (python3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD=${PWRU_BUILD_DIR:-$REPO/build/packaging}
PYTHON=${PYTHON:-python3}
DIST=$REPO/dist
PLATFORM=manylinux_2_28
declare -A BPF_OBJECT=([x86_64]=pwru_x86.bpf.o [aarch64]=pwru_arm64.bpf.o)

log() { echo "build-wheels: $*" >&2; }
die() { echo "build-wheels: ERROR: $*" >&2; exit 1; }

t0=$(date +%s)
recipe=$(bash "$HERE/build-libbpf.sh" --recipe)
for arch in "${!BPF_OBJECT[@]}"; do  # (re)build libbpf when missing or its recipe changed
	[ "$(cat "$BUILD/$arch/recipe" 2>/dev/null)" = "$recipe" ] || bash "$HERE/build-libbpf.sh" "$arch"
done
# Reproducible archives: file times from the last commit.
SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

work=$BUILD/wheels
rm -rf "$work"
mkdir -p "$work" "$DIST"
# The wheel is built from the unpacked sdist, so only what the sdist ships can get in.
"$PYTHON" -m build --no-isolation --outdir "$work" "$REPO" >"$work/build.log" 2>&1 \
	|| { tail -20 "$work/build.log" >&2; die "python -m build failed (see $work/build.log)"; }
pure=$(ls "$work"/pwru-*-py3-none-any.whl)
sdist=$(ls "$work"/pwru-*.tar.gz)
rm -f "$DIST"/pwru-*.whl "$DIST"/pwru-*.tar.gz
cp "$sdist" "$DIST/"

for arch in "${!BPF_OBJECT[@]}"; do
	tree=$work/$arch
	"$PYTHON" -m wheel unpack -d "$tree" "$pure" >/dev/null
	root=$(ls -d "$tree"/pwru-*)
	info=$(ls -d "$root"/pwru-*.dist-info)
	for object in "${BPF_OBJECT[@]}"; do
		[ "$object" = "${BPF_OBJECT[$arch]}" ] || rm "$root/pwru/bpf/$object"
	done
	mkdir -p "$root/pwru/bpf/lib" "$info/licenses"
	cp "$BUILD/$arch"/libbpf.so.* "$root/pwru/bpf/lib/"
	cp -r "$BUILD/licenses" "$info/licenses/bundled"
	cp "$BUILD/sources.txt" "$info/licenses/bundled/SOURCES.txt"
	sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: false/' \
		-e "s/^Tag: .*/Tag: py3-none-${PLATFORM}_$arch/" "$info/WHEEL"
	"$PYTHON" -m wheel pack -d "$DIST" "$root" >/dev/null
	log "$(ls "$DIST"/pwru-*"_$arch.whl")"
done
rm -rf "$work"
log "done in $(( $(date +%s) - t0 ))s"
