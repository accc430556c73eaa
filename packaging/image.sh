#!/bin/bash
# image.sh - an OCI image of pwru for hosts without pip (Flatcar, Talos, COS, Kubernetes
# nodes), built from Debian packages and pwru's wheel without pulling from any registry.
#
# Usage: packaging/image.sh [x86_64|aarch64]    (make image; default: this machine's arch)
#
#   1. packaging/debian-root.sh: Debian 12 (variant essential) + python3 + libstdc++6 (for
#      pcapy-ng), in which pip - run from its own wheel, so no pip stays in the image -
#      installs dist/'s wheel for ARCH offline into /usr/local (wheels downloaded first).
#   2. `podman import` of that root as localhost/pwru:<version>, ENTRYPOINT pwru, in a
#      throwaway private image store (the host's podman storage is not touched).
#   3. `podman save --format oci-archive` to dist/pwru-<version>-image-<arch>.tar.
#
# Run it:  podman load -i dist/pwru-<version>-image-<arch>.tar
#          podman run --rm --privileged --pid=host --network=host \
#            -v /sys/kernel:/sys/kernel localhost/pwru:<version> --output-json ...
# Publish: skopeo copy oci-archive:dist/pwru-<version>-image-<arch>.tar docker://REGISTRY/pwru:TAG
# An aarch64 image built on an x86_64 host needs qemu-user-static registered (binfmt_misc).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD=${PWRU_BUILD_DIR:-$REPO/build/packaging}
PYTHON=${PYTHON:-python3}
ARCH=${1:-$(uname -m)}
declare -A DEBIAN_ARCH=([x86_64]=amd64 [aarch64]=arm64)

log() { echo "image: $*" >&2; }
die() { echo "image: ERROR: $*" >&2; exit 1; }

[ -n "${DEBIAN_ARCH[$ARCH]:-}" ] || die "unknown arch '$ARCH' (x86_64, aarch64)"
wheel=$(ls "$REPO"/dist/pwru-*-py3-none-manylinux_2_28_"$ARCH".whl 2>/dev/null) \
	|| die "no $ARCH wheel in dist/: run make wheels"
version=$(basename "$wheel" | cut -d- -f2)
out=$REPO/dist/pwru-$version-image-$ARCH.tar
t0=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/pwru-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
# pwru's wheel, its dependencies' wheels for Debian 12's CPython 3.11 on ARCH, and pip's own
mkdir "$work/wheels"
"$PYTHON" -m pip download --quiet --only-binary=:all: --dest "$work/wheels" \
	--platform "manylinux_2_28_$ARCH" --python-version 3.11 --implementation cp \
	"$wheel" pip || die "pip download of the image's wheels failed"
pip_wheel=$(cd "$work/wheels" && ls pip-*.whl)

# (the image is the only Python environment in it: --break-system-packages only lifts
# Debian's guard for /usr/local, where pwru goes)
bash "$HERE/debian-root.sh" bookworm "${DEBIAN_ARCH[$ARCH]}" python3,libstdc++6 "$work/root.tar" \
	--customize-hook="copy-in $work/wheels /tmp" \
	--customize-hook="chroot \"\$1\" python3 /tmp/wheels/$pip_wheel/pip install --quiet \
--no-index --find-links /tmp/wheels --break-system-packages --root-user-action=ignore \
/tmp/wheels/$(basename "$wheel")" \
	--customize-hook='rm -rf "$1/tmp/wheels" "$1/root/.cache"' \
	--customize-hook='chroot "$1" /usr/local/bin/pwru --version'

store=(--root "$work/store" --runroot "$work/run" --storage-driver vfs)
podman "${store[@]}" import --quiet --arch "${DEBIAN_ARCH[$ARCH]}" \
	--change 'ENTRYPOINT ["/usr/local/bin/pwru"]' \
	--change "LABEL org.opencontainers.image.title=pwru org.opencontainers.image.version=$version" \
	"$work/root.tar" "localhost/pwru:$version" >/dev/null || die "podman import failed"
rm -f "$out"
podman "${store[@]}" save --quiet --format oci-archive -o "$out" "localhost/pwru:$version" \
	|| die "podman save failed"
podman "${store[@]}" rmi --all --force >/dev/null 2>&1 || true
log "$out ($(du -m "$out" | cut -f1) MB) in $(( $(date +%s) - t0 ))s"
