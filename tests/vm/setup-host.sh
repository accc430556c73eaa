#!/bin/bash
# setup-host.sh - prepare a Debian 12 (bookworm) machine, as root, for the kernel
# matrix in tests/vm/. Idempotent: a second run only checks and returns (~1 s).
#
# Usage: tests/vm/setup-host.sh [--update]
#   --update   force `apt-get update` (otherwise only when our apt sources changed,
#              a suite's lists are missing, or the lists are older than
#              PWRU_VM_APT_MAX_AGE seconds, default 86400)
#
# What it does (see tests/vm/NOTES.md):
#   1. apt sources for trixie + trixie-backports (URIs copied from the host's own
#      debian.sources) and for bullseye-security (5.10 kernels; the security
#      archive's URIs, from the host's bookworm-security entry), all pinned at
#      priority 50, so nothing on the host upgrades from them; they are only used
#      with `apt-get download` (kernels, virtiofsd). bookworm and bookworm-security
#      (6.1 / 6.12 kernels) are already configured.
#   2. apt-get install of the host tools the harness needs (only missing ones).
#   3. Rust virtiofsd from trixie (+ trixie's glibc, run through trixie's own
#      loader) under $PWRU_VM_DIR/virtiofsd - nothing installed system-wide.
#   4. virtme-ng 1.42 in a venv under $PWRU_VM_DIR/vng.
# Kernels are NOT fetched here: run-in-guest.sh / fetch-kernel.sh do it on first use.
#
# Environment: PWRU_VM_DIR (default /var/cache/pwru-vm).
set -euo pipefail

VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
VNG_VERSION=1.42
APT_MAX_AGE=${PWRU_VM_APT_MAX_AGE:-86400}
SOURCES=/etc/apt/sources.list.d/pwru-vm.sources
PIN=/etc/apt/preferences.d/pwru-vm-pin
SEC_SOURCES=/etc/apt/sources.list.d/pwru-vm-security.sources
SEC_PIN=/etc/apt/preferences.d/pwru-vm-security-pin
APT_PKGS=(
  qemu-system-x86 busybox-static kmod iproute2 util-linux coreutils procps
  python3 python3-venv ca-certificates
  clang llvm libbpf-dev bpftool gcc libc6-dev make
)
FORCE_UPDATE=0
case "${1:-}" in
  --update) FORCE_UPDATE=1 ;;
  "") ;;
  -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

log() { echo "setup-host: $*" >&2; }
die() { echo "setup-host: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || log "WARNING: written for Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}"
[ "$(dpkg --print-architecture)" = amd64 ] || die "amd64 only"
t_start=$(date +%s.%N)
mkdir -p "$VM_DIR"
exec 9>"$VM_DIR/.lock"
flock 9   # serialise with other setup-host / fetch-kernel runs

# ------------------------------------------------------------------ 1. apt sources
# The URIs line of the host's own Debian archive (mirror / snapshot / proxy as configured).
uris=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  uris=$(awk '
    /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u = ""; s = ""; next }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); u = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); s = $0 }
    END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' /etc/apt/sources.list.d/debian.sources | head -1)
fi
if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
  uris=$(awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$uris" ] || { uris=http://deb.debian.org/debian; log "no bookworm URIs found in the apt sources; using $uris"; }
# ... and of its security archive (bullseye-security lives there, not in the main archive)
sec_uris=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sec_uris=$(awk '
    /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm-security( |$)/) { print u; exit } u = ""; s = ""; next }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); u = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); s = $0 }
    END { if (u != "" && s ~ /(^| )bookworm-security( |$)/) print u }' /etc/apt/sources.list.d/debian.sources | head -1)
fi
if [ -z "$sec_uris" ] && [ -f /etc/apt/sources.list ]; then
  sec_uris=$(awk '$1 == "deb" && $0 ~ / bookworm-security / { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$sec_uris" ] || { sec_uris=${uris%/}-security; log "no bookworm-security URIs found in the apt sources; using $sec_uris"; }

want_sources="# tests/vm (pwru kernel matrix): kernel images and virtiofsd, fetched with
# 'apt-get download' only; pinned low in $PIN so nothing is upgraded from here.
Types: deb
URIs: $uris
Suites: trixie trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
want_pin="# tests/vm (pwru kernel matrix): keep the host on bookworm, never upgrade from these
Package: *
Pin: release n=trixie
Pin-Priority: 50

Package: *
Pin: release n=trixie-backports
Pin-Priority: 50
"
# The security archive gets files of its own (another URI; and the files above stay as
# older checkouts of this script write them, so several checkouts on one host agree).
want_sec_sources="# tests/vm (pwru kernel matrix): 5.10 kernel images (bullseye-security), fetched with
# 'apt-get download' only; pinned low in $SEC_PIN so nothing is upgraded from here.
Types: deb
URIs: $sec_uris
Suites: bullseye-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
want_sec_pin="# tests/vm (pwru kernel matrix): keep the host on bookworm, never install from bullseye
Package: *
Pin: release n=bullseye-security
Pin-Priority: 50
"
changed=0
write_if_changed() {  # <file> <content> <what>
  if [ "$(cat "$1" 2>/dev/null)" != "$(printf %s "$2")" ]; then
    printf %s "$2" > "$1"; changed=1; log "wrote $1${3:+ ($3)}"
  fi
}
write_if_changed "$SOURCES" "$want_sources" "URIs: $uris"
write_if_changed "$PIN" "$want_pin" ""
write_if_changed "$SEC_SOURCES" "$want_sec_sources" "URIs: $sec_uris"
write_if_changed "$SEC_PIN" "$want_sec_pin" ""

need_update=$FORCE_UPDATE
[ "$changed" = 1 ] && need_update=1
for suite in bookworm bookworm-security trixie trixie-backports bullseye-security; do
  ls /var/lib/apt/lists/*_dists_"${suite}"_InRelease >/dev/null 2>&1 || need_update=1
done
# (the lists' mtimes are the archive's dates, so our own stamp measures their age)
STAMP=$VM_DIR/.apt-updated
if [ ! -f "$STAMP" ] || [ $(( $(date +%s) - $(stat -c %Y "$STAMP") )) -gt "$APT_MAX_AGE" ]; then
  need_update=1
fi
if [ "$need_update" = 1 ]; then
  log "apt-get update"
  apt-get update -q >&2 || die "apt-get update failed"
  touch "$STAMP"
fi

# ------------------------------------------------------------------ 2. host packages
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install failed"
fi

# ------------------------------------------------------------------ 3. virtiofsd
# vng drives only the Rust virtiofsd (--shared-dir/--socket-path/--sandbox ...). bookworm
# has just qemu 7.2's C daemon (/usr/lib/qemu/virtiofsd), which vng finds but cannot start,
# and then silently uses 9p. trixie's virtiofsd needs glibc >= 2.39, so it runs through
# trixie's own ld.so with trixie's libc/libm (other libs: the host's).
VFSD=$VM_DIR/virtiofsd
vfsd_ok() { [ -x "$VFSD/bin/virtiofsd" ] && "$VFSD/bin/virtiofsd" --version >/dev/null 2>&1; }
if ! vfsd_ok; then
  log "setting up the Rust virtiofsd from trixie in $VFSD"
  tmp=$(mktemp -d "$VM_DIR/vfsd.XXXXXX")
  ( cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root virtiofsd/trixie libc6/trixie >&2 ) \
    || { rm -rf "$tmp"; die "apt-get download virtiofsd/trixie libc6/trixie failed (trixie source missing? run with --update)"; }
  mkdir -p "$tmp/x"
  for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
  rm -rf "$VFSD"; mkdir -p "$VFSD/bin" "$VFSD/lib"
  cp -L "$tmp/x/usr/lib/x86_64-linux-gnu/"{libc.so.6,libm.so.6,ld-linux-x86-64.so.2} "$VFSD/lib/"
  cp "$tmp/x/usr/libexec/virtiofsd" "$VFSD/virtiofsd.real"
  cat > "$VFSD/bin/virtiofsd" <<EOF
#!/bin/sh
# trixie's virtiofsd, run with trixie's glibc (written by tests/vm/setup-host.sh)
exec "$VFSD/lib/ld-linux-x86-64.so.2" --library-path "$VFSD/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$VFSD/virtiofsd.real" "\$@"
EOF
  chmod +x "$VFSD/bin/virtiofsd"
  ls "$tmp"/*.deb | sed 's|.*/||' > "$VFSD/SOURCE-DEBS"
  rm -rf "$tmp"
  vfsd_ok || die "$VFSD/bin/virtiofsd does not run"
fi

# ------------------------------------------------------------------ 4. virtme-ng venv
VENV=$VM_DIR/vng
vng_ok() { [ -x "$VENV/bin/vng" ] && [ -x "$VENV/bin/virtme-run" ] &&
           [ "$("$VENV/bin/python3" -c 'import importlib.metadata as m; print(m.version("virtme-ng"))' 2>/dev/null)" = "$VNG_VERSION" ]; }
if ! vng_ok; then
  log "creating the virtme-ng $VNG_VERSION venv in $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed (python3-venv missing?)"
  "$VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION" >&2 || die "pip install virtme-ng==$VNG_VERSION failed"
  vng_ok || die "virtme-ng $VNG_VERSION not usable in $VENV"
fi

log "$(printf 'ready in %.1fs: %s (virtiofsd %s, virtme-ng %s)' \
  "$(awk "BEGIN{print $(date +%s.%N) - $t_start}")" "$VM_DIR" \
  "$("$VFSD/bin/virtiofsd" --version 2>/dev/null | head -1 | awk '{print $NF}')" "$VNG_VERSION")"
