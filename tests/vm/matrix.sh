#!/bin/bash
# matrix.sh [pytest args...] - run the guest test suite (tests/vm/guest, marker `vm`) once
# inside each kernel of tests/vm/kernels.txt: one QEMU/TCG boot per kernel, the whole
# suite in that boot. Prints one summary line per kernel; exit 1 if any kernel failed.
#
#   tests/vm/setup-host.sh        # once per machine (idempotent, ~0.3 s when done)
#   tests/vm/matrix.sh            # all kernels
#   tests/vm/matrix.sh -k fentry  # extra args go to pytest in every guest
#
# Environment:
#   PWRU_VM_DIR      cache (default /var/cache/pwru-vm): kernels, venv, virtiofsd, probes, results
#   PWRU_PYTHON      interpreter for pytest in the guest (default: the host's `python3` on
#                    PATH, resolved to its real absolute path, e.g. /root/.pyenv/versions/...)
#   PWRU_VM_KERNELS  "pkg ..." instead of resolving kernels.txt
#   PWRU_VM_TIMEOUT  per-kernel VM timeout in seconds (default 1200)
#   PWRU_VM_PRUNE=1  delete cached kernels ($PWRU_VM_DIR/kernels/*) not in this run's list
#   PWRU_VM_RETRIES  reboots of a kernel whose VM failed to run the suite (rc 125), default 1
#   PWRU_VM_MEM / PWRU_VM_CPUS  guest size (default 2G / 2)
#   PWRU_BIN         the pwru command the guest tests run (default: the console script
#                    next to PWRU_PYTHON), e.g. a wrapper running another checkout
#   PWRU_VM_PLUGIN_AUTOLOAD=1   let pytest autoload installed plugins in the guest (off:
#                    saves ~4 s a boot; add plugins explicitly with -p NAME instead)
# Output: $PWRU_VM_DIR/results/<pkg>.{log,xml,json} (console log, JUnit XML, observations)
#         and <pkg>.pwru/ (pwru's output of each tests/vm/guest/test_pwru.py run).
set -u -o pipefail
case "${1:-}" in -h|--help) sed -n '2,22p' "$0"; exit 0 ;; esac
HERE=$(dirname "$(readlink -f "$0")")
REPO=$(readlink -f "$HERE/../..")
VM_DIR=${PWRU_VM_DIR:-/var/cache/pwru-vm}
export PWRU_VM_DIR=$VM_DIR
RESULTS=$VM_DIR/results
PROGS=$VM_DIR/progs
TMO=${PWRU_VM_TIMEOUT:-1200}
RETRIES=${PWRU_VM_RETRIES:-1}
log() { echo "matrix: $*" >&2; }
die() { echo "matrix: ERROR: $*" >&2; exit 2; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
T0=$(now)

# ---------------------------------------------------------------- python for the guest
# The guest's PATH is the distro default and /usr/bin/python3 there is the host's Debian
# python, not necessarily this project's: use an absolute interpreter path. sys.executable
# resolves pyenv shims to the real interpreter and keeps a venv's bin/python (whose
# site-packages are the venv's).
PY=${PWRU_PYTHON:-$(command -v python3)} || die "no python3 on PATH (set PWRU_PYTHON)"
PY=$("$PY" -c 'import sys; print(sys.executable)') && [ -n "$PY" ] || die "cannot run $PY"
"$PY" -c 'import pytest' 2>/dev/null || die "$PY has no pytest (set PWRU_PYTHON)"

# ---------------------------------------------------------------- kernels, probes
[ -x "$VM_DIR/vng/bin/vng" ] || die "$VM_DIR is not set up: run tests/vm/setup-host.sh"
KLIST=$("$HERE/resolve-kernels.sh") || die "could not resolve tests/vm/kernels.txt (see above)"
make -s -C "$HERE/guest/progs" O="$PROGS" >&2 || die "building the probes failed"
# The repo is read-only in the guest and PYTHONDONTWRITEBYTECODE=1 there: without fresh
# __pycache__ (git-ignored) every pwru start in the guest compiles pwru's modules again
# (~1 s of TCG CPU each; test_pwru.py starts 12 per kernel). compileall writes them even
# when PYTHONDONTWRITEBYTECODE is set on the host.
"$PY" -m compileall -q "$REPO/pwru" "$REPO/tests" >/dev/null || log "warning: compileall failed"
mkdir -p "$RESULTS"
# run dirs of failed VM runs are kept for debugging (run-in-guest.sh): drop old ones
find "$VM_DIR/runs" -mindepth 1 -maxdepth 1 -name 'run.*' -mtime +2 -exec rm -rf {} + 2>/dev/null
if [ "${PWRU_VM_PRUNE:-0}" = 1 ]; then  # drop cached kernels no longer in the matrix
  for d in "$VM_DIR"/kernels/*/; do
    [ -d "$d" ] || continue
    n=$(basename "$d")
    awk -v n="$n" '{ gsub(/[\/=:]/, "_", $1) } $1 == n { f = 1 } END { exit !f }' <<<"$KLIST" ||
      { log "pruning cached kernel $n"; rm -rf "$d"; }
  done
fi
t=$(now)
while read -r pkg _; do
  "$HERE/fetch-kernel.sh" "$pkg" </dev/null >/dev/null || die "fetching $pkg failed"
done <<<"$KLIST"
log "python $PY; probes in $PROGS; kernels ready in $(since "$t")s (setup total $(since "$T0")s)"

# ---------------------------------------------------------------- one boot per kernel
PYTEST_ARGS=""
for a in "$@"; do PYTEST_ARGS+=" $(printf %q "$a")"; done
SUMMARY=() FAILED=0
while read -r pkg pat suite exp_kp exp_kpm exp_fe; do
  rm -f "$RESULTS/$pkg".{log,xml,json}
  rm -rf "$RESULTS/$pkg.pwru"  # pwru's outputs from tests/vm/guest/test_pwru.py
  # - no plugin autoload (PWRU_VM_PLUGIN_AUTOLOAD=1 re-enables it): installed plugins
  #   (hypothesis, benchmark, ...) cost ~4 s of startup per boot under TCG
  # - the repo is read-only in the guest: no .pytest_cache, no .hypothesis database
  cmd="cd $(printf %q "$REPO") && PYTHONDONTWRITEBYTECODE=1"
  [ "${PWRU_VM_PLUGIN_AUTOLOAD:-0}" = 1 ] || cmd+=" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"
  cmd+=" $(printf %q "$PY") -m pytest"
  cmd+=" -p no:cacheprovider -p no:hypothesispytest -m vm -v -rfE --color=no"
  cmd+=" --junitxml=$(printf %q "$RESULTS/$pkg.xml")"
  cmd+=" tests/vm/guest$PYTEST_ARGS"
  attempt=0
  while :; do
    log "=== $pkg ($suite): booting (attempt $((attempt + 1)))"
    t=$(now)
    "$HERE/run-in-guest.sh" -t "$TMO" -m "${PWRU_VM_MEM:-2G}" -c "${PWRU_VM_CPUS:-2}" \
      -r "$PROGS" -w "$RESULTS" \
      -e PWRU_VM_PROGS="$PROGS" -e PWRU_VM_RESULTS="$RESULTS" ${PWRU_BIN:+-e PWRU_BIN="$PWRU_BIN"} \
      "$pkg" "$cmd" </dev/null > >(tee -a "$RESULTS/$pkg.log") 2> >(tee -a "$RESULTS/$pkg.log" >&2)
    rc=$?
    wall=$(since "$t")
    [ "$rc" = 125 ] && [ "$attempt" -lt "$RETRIES" ] || break
    attempt=$((attempt + 1)); log "$pkg: VM did not run the suite (rc 125), rebooting"
  done
  # let the tee processes drain (0.2 s was not always enough on a loaded host): wait for
  # pytest's summary line, at most 5 s (a crashed run has none)
  for _ in $(seq 25); do
    grep -qE '^=+ .* in [0-9.]+s' "$RESULTS/$pkg.log" 2>/dev/null && break
    sleep 0.2
  done
  tests=$(sed -nE 's/.*(=+ .*(passed|failed|error|deselected|no tests ran).* in [0-9.]+s.*=+)$/\1/p' "$RESULTS/$pkg.log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
  seen=$("/usr/bin/python3" - "$RESULTS/$pkg.json" <<'EOF' 2>/dev/null
import json, re, sys
d = json.load(open(sys.argv[1]))
short = lambda s: "ok" if str(s).startswith("ok") else str(s).replace("attach failed: ", "")
seen = [f"{k}={short(d[k])}" for k in ("kprobe", "kprobe_multi", "fentry") if k in d]
for key, tag in (("pwru_kprobe", "pwru-kp"), ("pwru_kprobe_multi", "pwru-kpm")):
    v = str(d.get(key, ""))  # test_pwru.py: "... attached N functions with B in X s"
    m = re.search(r"attached (\d+) functions with \S+ in ([\d.]+) s", v)
    if v:
        seen.append(f"{tag}=" + ("refused" if v.startswith("refused") else
                                 f"{m[1]}fn/{m[2]}s" if m else "?"))
print(" ".join(seen))
EOF
)
  if [ "$rc" = 0 ]; then status=PASS; else status="FAIL(rc=$rc)"; FAILED=1; fi
  SUMMARY+=("$(printf '%-44s %-11s %6ss  %s  [%s]' "$pkg" "$status" "$wall" "${seen:-no observations}" "${tests:-no pytest summary}")")
done <<<"$KLIST"

echo
echo "kernel matrix ($(since "$T0")s total; expected: see tests/vm/kernels.txt; logs in $RESULTS):"
printf '  %s\n' "${SUMMARY[@]}"
exit $FAILED
