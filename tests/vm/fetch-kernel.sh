#!/bin/bash
# fetch-kernel.sh <debian-kernel-package> - download (apt-get download, nothing is
# installed) and extract a Debian kernel package into $PWRU_VM_DIR/kernels/<pkg>/, once.
# Prints "<vmlinuz path> <kernel release>" on stdout. Progress goes to stderr.
#
#   <pkg> is an exact package name (linux-image-6.1.0-47-amd64-unsigned), optionally
#   with apt's /suite or =version suffix; meta packages (linux-image-amd64/trixie-backports)
#   work too (their versioned linux-* dependencies are followed).
#
# Layouts handled:
#   - 6.x  linux-image-<kver>[-unsigned]: boot/vmlinuz-<kver> + lib/modules/<kver>/
#   - 7.x  split packages (trixie-backports): linux-image-<kver> depends on
#          linux-binary[-unsigned]-<kver>, linux-modules-<kver>, linux-base-<kver>,
#          all under usr/lib/modules/<kver>/ with the kernel at .../vmlinuz.
# Versioned linux-{image,binary,binary-unsigned,modules,base}-<digit>... dependencies are
# fetched at their exact versions into the same tree. `depmod -b` is run afterwards
# (.debs ship no modules.dep; their postinst would make it) so modprobe works in the guest.
#
# Exit: 0 ok, 1 download/extract failure, 2 usage.
set -u -o pipefail
VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
log() { echo "fetch-kernel: $*" >&2; }
die() { echo "fetch-kernel: ERROR: $*" >&2; exit 1; }
[ $# = 1 ] || { echo "usage: $0 <debian-kernel-package>" >&2; exit 2; }
PKG=$1
KDIR="$VM_DIR/kernels/${PKG//[\/=:]/_}"

find_kimg() {
  ls "$1"/boot/vmlinuz-* "$1"/usr/lib/modules/*/vmlinuz* "$1"/lib/modules/*/vmlinuz* 2>/dev/null | head -1
}
report() {
  local kimg kver
  kimg=$(find_kimg "$KDIR")
  case "$kimg" in
    */boot/vmlinuz-*) kver=${kimg##*/vmlinuz-} ;;
    *) kver=$(basename "$(dirname "$kimg")") ;;
  esac
  echo "$kimg $kver"
}

if [ -f "$KDIR/.complete" ] && [ -n "$(find_kimg "$KDIR")" ]; then report; exit 0; fi

mkdir -p "$VM_DIR/kernels"
exec 9>"$VM_DIR/.lock"
flock 9
if [ -f "$KDIR/.complete" ] && [ -n "$(find_kimg "$KDIR")" ]; then report; exit 0; fi

t0=$(date +%s.%N)
dl=$(mktemp -d "$VM_DIR/dl.XXXXXX")
trap 'rm -rf "$dl" "$KDIR.tmp"' EXIT
rm -rf "$KDIR.tmp" "$KDIR"; mkdir -p "$KDIR.tmp"
queue=("$PKG"); seen=" "; bytes=0
while [ ${#queue[@]} -gt 0 ]; do
  q=${queue[0]}; queue=("${queue[@]:1}")
  case "$seen" in *" $q "*) continue ;; esac
  seen+="$q "
  log "apt-get download $q"
  rm -f "$dl"/*.deb
  ( cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$q" ) >&2 \
    || die "apt-get download $q failed (stale apt lists? run tests/vm/setup-host.sh --update)"
  deb=$(ls "$dl"/*.deb | head -1)
  bytes=$(( bytes + $(stat -c %s "$deb") ))
  dpkg-deb -x "$deb" "$KDIR.tmp" || die "dpkg-deb -x $deb failed"
  echo "${deb##*/}" >> "$KDIR.tmp/.debs"
  # follow versioned kernel deps: "name (= ver)" -> "name=ver"
  while read -r dep; do
    [ -n "$dep" ] && queue+=("$dep")
  done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' |
           sed -E 's/\|.*//; s/^ +//; s/ +$//' |
           sed -nE 's/^(linux-(image|binary|binary-unsigned|modules|base)-[0-9][^ ]*)( \(= ([^)]+)\))?$/\1 \4/p' |
           awk '{ print ($2 != "") ? $1 "=" $2 : $1 }')
done
[ -n "$(find_kimg "$KDIR.tmp")" ] || die "$PKG (and its versioned linux-* deps) contain no vmlinuz"
for mb in "$KDIR.tmp" "$KDIR.tmp/usr"; do
  for m in "$mb"/lib/modules/*/; do
    [ -d "$m/kernel" ] && { depmod -b "$mb" "$(basename "$m")" || die "depmod failed"; }
  done
done
touch "$KDIR.tmp/.complete"
mv "$KDIR.tmp" "$KDIR"
log "$(printf '%s: %d MB downloaded, extracted to %s in %.1fs' "$PKG" $((bytes / 1000000)) "$KDIR" \
  "$(awk "BEGIN{print $(date +%s.%N) - $t0}")")"
report
