"""What one probe hit costs inside BPF: the kernel's own accounting of its programs'
run time (``kernel.bpf_stats_enabled``), pwru's programs against the floor's no-op
ones on the same tracepoints under the same flood.

The flood's rate (bench/overhead.py) is what a user feels, but on a shared 2-core
machine it swings by ±30 % between rounds; nanoseconds per run, summed by the kernel
around each program, hardly move, so they show what a change of the BPF side bought.
The trampoline or probe that calls the program is not in them: that cost is the
floor's, the same for both.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.overhead import NO_MATCH
from bench.tools import Flood, nooploader
from netlab import Lab, PwruRun

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextmanager
def bpf_stats() -> Iterator[None]:
    """Run-time accounting on, for the block only (it costs a little per run)."""
    before = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        STATS_SYSCTL.write_text(before)


def program_ids(pid: int) -> set[int]:
    """Ids of the BPF programs process ``pid`` holds, as fds or through links."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            found = re.search(r"^prog_id:\s*(\d+)", fdinfo.read_text(), re.M)
        except OSError:
            continue  # closed meanwhile
        if found:
            ids.add(int(found.group(1)))
    return ids


def run_totals(ids: set[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the programs ``ids``."""
    shown = subprocess.run(
        ["bpftool", "--json", "prog", "show"], capture_output=True, text=True, check=True
    )
    progs = [p for p in json.loads(shown.stdout) if p["id"] in ids]
    return sum(p.get("run_time_ns", 0) for p in progs), sum(p.get("run_cnt", 0) for p in progs)


def ns_per_run(lab: Lab, pid: int, seconds: float) -> dict[str, float]:
    """Flood for ``seconds`` while ``pid``'s programs are attached; their cost per run."""
    ids = program_ids(pid)
    ns_before, runs_before = run_totals(ids)
    flooded = Flood(lab, seconds).wait()
    ns_after, runs_after = run_totals(ids)
    runs = runs_after - runs_before
    return {
        "runs": runs,
        "ns_per_run": (ns_after - ns_before) / runs if runs else 0.0,
        "runs_per_packet": runs / flooded.sent if flooded.sent else 0.0,
    }


def bench_bpf_cost(
    lab: Lab, workdir: Path, tracepoints: Path, seconds: float, args: tuple[str, ...] = (NO_MATCH,)
) -> dict[str, object]:
    """ns per program run: the floor's no-op programs, then ``pwru 'host 192.0.2.99'``
    (or ``args``)."""
    with bpf_stats():
        floor = nooploader("tp", tracepoints)
        try:
            floor_cost = ns_per_run(lab, floor.proc.pid, seconds)
        finally:
            floor.stop()
        run = PwruRun(["--backend", "tracepoint", *args], workdir)
        try:
            pwru_cost = ns_per_run(lab, run.proc.pid, seconds)
        finally:
            run.stop()
    return {
        "floor": floor_cost,
        "pwru": pwru_cost,
        "pwru_minus_floor_ns": pwru_cost["ns_per_run"] - floor_cost["ns_per_run"],
    }
