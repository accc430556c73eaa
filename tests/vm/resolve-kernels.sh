#!/bin/bash
# resolve-kernels.sh [kernels.txt] - turn the matrix patterns into exact Debian package
# names with apt-cache (needs the apt lists of tests/vm/setup-host.sh; no network).
#
# Output, one line per row: "<package> <pattern> <suite> <kprobe> <kprobe_multi> <fentry>"
# (<suite> is where apt-cache madison offers it). Exit 1 if a row resolves to nothing.
#
# Resolution of a row "<pattern> <suites> ...":
#   1. `*` in <pattern> becomes the regex [0-9][0-9.]* (a version number: no "-"/"+",
#      so linux-image-6.1.0-*-amd64-unsigned never matches ...-cloud-amd64-unsigned);
#   2. candidates = the names of `apt-cache pkgnames linux-` matching that regex,
#      newest first (sort -V);
#   3. the first candidate that `apt-cache madison` lists from one of <suites> wins
#      (pkgnames also knows names that are no longer downloadable).
# A pattern without `*` is printed as is (after the same madison check).
# PWRU_VM_KERNELS="pkg ..." replaces the file: each package is checked with madison and
# paired with the first row whose pattern matches it ("-" columns if none).
set -u -o pipefail
HERE=$(dirname "$(readlink -f "$0")")
LIST=${1:-$HERE/kernels.txt}
[ -r "$LIST" ] || { echo "resolve-kernels: cannot read $LIST" >&2; exit 2; }

pat2re() {  # glob-ish pattern -> anchored ERE
  local p=$1
  p=${p//./\\.}; p=${p//+/\\+}; p=${p//\*/[0-9][0-9.]*}
  printf '^%s$' "$p"
}
# apt-cache is slow to start (~1.3 s a call here), so it is called at most twice:
# MADISON holds "<pkg> <suite>" for every candidate of every row, from a single call.
MADISON=""
load_madison() {  # <pkg>...
  MADISON=$(apt-cache madison "$@" 2>/dev/null |
    awk -F'|' '{ gsub(/ /, "", $1); split($3, f, " "); s = f[2]; sub(/\/.*/, "", s); print $1, s }')
}
# madison_suite <pkg> <suites csv>: first suite of <suites> (any if empty) offering <pkg>
madison_suite() {
  awk -v p="$1" -v want="$2" '
    BEGIN { n = split(want, w, ","); for (i = 1; i <= n; i++) ok[w[i]] = 1 }
    $1 == p && (want == "" || ($2 in ok)) { print $2; exit }' <<<"$MADISON"
}

rows() { grep -vE '^[[:space:]]*(#|$)' "$LIST"; }
rc=0
if [ -n "${PWRU_VM_KERNELS:-}" ]; then
  load_madison $PWRU_VM_KERNELS
  for pkg in $PWRU_VM_KERNELS; do
    row="- - - - -"
    while read -r pat suites kp kpm fe _; do
      [[ $pkg =~ $(pat2re "$pat") ]] && { row="$pat - $kp $kpm $fe"; break; }
    done < <(rows)
    read -r pat _ kp kpm fe <<<"$row"
    s=$(madison_suite "$pkg" "")
    [ -n "$s" ] || { echo "resolve-kernels: $pkg: not offered by apt (apt-cache madison)" >&2; rc=1; continue; }
    echo "$pkg $pat $s $kp $kpm $fe"
  done
  exit $rc
fi

ALLNAMES=$(apt-cache pkgnames linux-)
cands_of() {  # <pattern>: matching names, newest first
  if [[ $1 != *'*'* ]]; then echo "$1"; else grep -E "$(pat2re "$1")" <<<"$ALLNAMES" | sort -rV; fi
}
load_madison $(rows | while read -r pat _; do cands_of "$pat"; done)
while read -r pat suites kp kpm fe _; do  # later columns: for the guest tests only
  [ -n "${fe:-}" ] || { echo "resolve-kernels: malformed row: $pat $suites ${kp:-} ${kpm:-}" >&2; rc=1; continue; }
  found=""
  for c in $(cands_of "$pat"); do
    s=$(madison_suite "$c" "$suites")
    if [ -n "$s" ]; then found="$c $pat $s"; break; fi
  done
  if [ -z "$found" ]; then
    echo "resolve-kernels: no package for '$pat' in suites $suites (apt lists stale? tests/vm/setup-host.sh --update)" >&2
    rc=1; continue
  fi
  echo "$found $kp $kpm $fe"
done < <(rows)
exit $rc
