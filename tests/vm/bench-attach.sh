#!/bin/bash
# bench-attach.sh [kernel-package] - how long pwru takes to attach to ALL skb functions
# with kprobe-multi and with kprobe, inside one QEMU/TCG guest (default: the 6.12 row of
# tests/vm/kernels.txt). Not part of the test run; results go to tests/vm/NOTES.md by hand.
#
#   tests/vm/setup-host.sh          # once, as root
#   tests/vm/bench-attach.sh        # ~4 min: 3 x kprobe-multi, 1 x kprobe per batch size
#   PWRU_BENCH_RUNS=5 PWRU_BENCH_BATCHES="10 50" tests/vm/bench-attach.sh <package>
#
# Each run: `pwru --debug --backend B --ready-file F` (no filter, no --filter-func), no
# traffic; SIGINT as soon as F exists. Measured per run, in seconds:
#   ready     start of the command until --ready-file exists (Python start included)
#   setup     pwru's own "ready after" (--debug): options, BTF, discovery, load, attach
#   attach    pwru's "attached N functions with B in X s" (the attach step only)
#   detach    pwru's "detached in X s" (--debug), and exit = SIGINT until the process ended
#   fn/s      N / attach
# Environment: PWRU_VM_DIR, PWRU_PYTHON (as matrix.sh), PWRU_BENCH_RUNS (kprobe-multi runs,
# default 3), PWRU_BENCH_BATCHES (--filter-kprobe-batch values for kprobe, default "10":
# pwru's default; one run each). The guest keeps its `ulimit -n` of 1024: pwru lifts
# RLIMIT_NOFILE itself (one kprobe holds two fds).
# Output: the table on stdout, $PWRU_VM_DIR/bench/<pkg>.tsv.
set -u -o pipefail
case "${1:-}" in -h|--help) sed -n '2,21p' "$0"; exit 0 ;; esac
HERE=$(dirname "$(readlink -f "$0")")
VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
export PWRU_VM_DIR=$VM_DIR
die() { echo "bench-attach: ERROR: $*" >&2; exit 2; }

PY=${PWRU_PYTHON:-$(command -v python3)} || die "no python3 on PATH (set PWRU_PYTHON)"
PY=$("$PY" -c 'import sys; print(sys.executable)') || die "cannot run $PY"
PWRU=$(dirname "$PY")/pwru
[ -x "$PWRU" ] || die "no pwru next to $PY (pip install -e . into that interpreter)"
if [ $# -ge 1 ]; then
  PKG=$1
else
  PKG=$("$HERE/resolve-kernels.sh" | awk '$2 ~ /^linux-image-6\.12\./ { print $1; exit }')
  [ -n "$PKG" ] || die "no 6.12 row in tests/vm/kernels.txt: name a kernel package"
fi
OUT=$VM_DIR/bench
mkdir -p "$OUT"
TSV=$OUT/$PKG.tsv
rm -f "$TSV" "$OUT"/err.* "$OUT"/ready.*

# The guest side: plain bash (a Python start costs 2-5 s under TCG; pwru is the only one).
cat > "$OUT/guest.sh" <<'EOF'
set -u
now() { date +%s.%N; }
sub() { awk "BEGIN { printf \"%.2f\", $1 - $2 }"; }
one() {  # one <backend> <tag> [pwru args...]
  local backend=$1 tag=$2; shift 2
  local rf=$OUT/ready.$backend.$tag err=$OUT/err.$backend.$tag
  rm -f "$rf"
  local t0 t1 t2 pid rc
  t0=$(now)
  "$PWRU" --debug --backend "$backend" --ready-file "$rf" "$@" >/dev/null 2>"$err" &
  pid=$!
  while [ ! -e "$rf" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "pwru $backend exited early:" >&2; tail -5 "$err" >&2; return 1; }
    sleep 0.05
  done
  t1=$(now)
  kill -INT "$pid"; wait "$pid"; rc=$?
  t2=$(now)
  local n x setup det
  read -r n x < <(sed -nE 's/.*attached ([0-9]+) functions with [a-z-]+ in ([0-9.]+) s.*/\1 \2/p' "$err")
  setup=$(sed -nE 's/.*ready after ([0-9.]+) s.*/\1/p' "$err")
  det=$(sed -nE 's/.*detached in ([0-9.]+) s.*/\1/p' "$err")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$tag" "${n:-?}" "${x:-?}" \
    "$(sub "$t1" "$t0")" "${setup:-?}" "${det:-?}" "$(sub "$t2" "$t1")" "$rc" \
    "$(awk "BEGIN { if (${x:-0} > 0) printf \"%.0f\", ${n:-0} / ${x:-1}; else print \"?\" }")" >> "$TSV"
}
echo "kernel $(uname -r), $(nproc) vCPUs (TCG), ulimit -n $(ulimit -n)" > "$OUT/guest.info"
for i in $(seq 1 "$RUNS"); do one kprobe-multi "run$i" || exit 1; done
for b in $BATCHES; do one kprobe "batch$b" --filter-kprobe-batch "$b" || exit 1; done
EOF

echo "bench-attach: $PKG, $PWRU, kprobe-multi x${PWRU_BENCH_RUNS:-3}, kprobe batches: ${PWRU_BENCH_BATCHES:-10}" >&2
"$HERE/run-in-guest.sh" -t 3600 -w "$OUT" \
  -e OUT="$OUT" -e TSV="$TSV" -e PWRU="$PWRU" \
  -e RUNS="${PWRU_BENCH_RUNS:-3}" -e BATCHES="${PWRU_BENCH_BATCHES:-10}" \
  "$PKG" "bash $OUT/guest.sh" </dev/null
rc=$?
[ -s "$TSV" ] || die "no results (guest rc=$rc); see $OUT/err.*"
echo
echo "$(cat "$OUT/guest.info" 2>/dev/null) — $PKG"
{
  printf 'backend\trun\tfunctions\tattach_s\tready_s\tsetup_s\tdetach_s\texit_s\trc\tfn/s(attach)\n'
  cat "$TSV"
} | column -t -s $'\t'
exit "$rc"
