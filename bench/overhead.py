"""Cost when nothing matches: the flood's rate with pwru running a filter that matches
none of it, against the same flood untraced and against the floor (no-op programs on
the same attach points, ``nooploader``).

The configurations alternate within each round (the order rotates from round to
round), so the ratios of one run compare neighbours in time on a shared machine.
Two ratios each: of packets/s (issue #12's definition), and of packets per
CPU-second of the flood and ksoftirqd (bench.tools.Flooded), which other tenants
of the machine disturb far less.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from bench.tools import Flood, Flooded, nooploader
from netlab import Lab, PwruRun

NO_MATCH = "host 192.0.2.99"  # not an address of any lab: every probe hit runs the filter

Measure = Callable[[], Flooded]


def untraced(lab: Lab, seconds: float) -> Measure:
    return lambda: Flood(lab, seconds).wait()


def with_floor(
    lab: Lab, seconds: float, mode: str, points: Path, attaches: list[float] | None = None
) -> Measure:
    """The flood while nooploader holds the floor; ``attaches`` gets its attach times."""

    def measure() -> Flooded:
        floor = nooploader(mode, points)
        if attaches is not None:
            attaches.append(float(floor.ready[1]))
        try:
            return Flood(lab, seconds).wait()
        finally:
            floor.stop(timeout=1200)  # ~1,600 kprobes detach one RCU wait at a time

    return measure


def with_pwru(
    lab: Lab,
    seconds: float,
    workdir: Path,
    args: Sequence[str],
    starts: list[dict[str, float]] | None = None,
    ready_s: float = 60,
) -> Measure:
    """The flood while pwru runs ``args`` + the non-matching filter; ``starts`` gets
    its start-up timings (``args`` should include --debug for them)."""

    def measure() -> Flooded:
        started = time.monotonic()
        run = PwruRun([*args, NO_MATCH], workdir, timeout=ready_s)
        ready_wall = time.monotonic() - started
        try:
            return Flood(lab, seconds).wait()
        finally:
            run.stop(timeout=1200)
            if starts is not None:
                starts.append(start_timings(run.stderr, ready_wall))

    return measure


def start_timings(stderr: str, ready_wall: float) -> dict[str, float]:
    """From pwru --debug: "attached N functions with B in X s", "ready after Y s"."""
    timings = {"ready_wall_s": ready_wall}
    attached = re.search(
        r"attached (\d+) (?:functions with [\w-]+|tracepoints) in ([\d.]+) s", stderr
    )
    ready = re.search(r"ready after ([\d.]+) s", stderr)
    if attached and ready:
        timings["attached"] = float(attached.group(1))
        timings["attach_s"] = float(attached.group(2))
        timings["ready_after_s"] = float(ready.group(1))
        timings["setup_before_attach_s"] = timings["ready_after_s"] - timings["attach_s"]
    return timings


def interleave(measures: dict[str, Measure], rounds: int) -> dict[str, list[Flooded]]:
    """Each measure once per round, the order rotated by one each round."""
    names = list(measures)
    floods: dict[str, list[Flooded]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            floods[name].append(measures[name]())
    return floods


def ratios(floods: dict[str, list[Flooded]], prefix: str) -> dict[str, object]:
    """Medians and the ratios pwru/floor, floor/untraced, pwru/untraced with their
    per-round values (the spread): ``<prefix>_*`` of packets/s, ``<prefix>_cpu_*`` of
    packets per CPU-second."""
    result: dict[str, object] = {
        f"{prefix}_rounds": {name: [asdict(f) for f in fs] for name, fs in floods.items()}
    }
    for kind in ("", "cpu_"):
        rates = {
            name: [f.pps_per_cpu if kind else f.pps for f in fs] for name, fs in floods.items()
        }
        med = {name: statistics.median(values) for name, values in rates.items()}
        for name, value in med.items():
            result[f"{prefix}_{kind}{name}_pps"] = value
        for top, bottom in (("pwru", "floor"), ("floor", "untraced"), ("pwru", "untraced")):
            key = f"{prefix}_{kind}{top}_vs_{bottom}"
            result[key] = med[top] / med[bottom]
            result[f"{key}_rounds"] = [t / b for t, b in zip(rates[top], rates[bottom])]
    return result


def bench_tracepoint_overhead(
    lab: Lab, workdir: Path, tracepoints: Path, rounds: int, seconds: float
) -> dict[str, object]:
    """Tracepoint backend on this host: untraced / no-op floor / ``pwru 'host 192.0.2.99'``
    (no --filter-netns: every hit in every namespace runs the filter)."""
    measures = {
        "untraced": untraced(lab, seconds),
        "floor": with_floor(lab, seconds, "tp", tracepoints),
        "pwru": with_pwru(lab, seconds, workdir, ["--backend", "tracepoint"]),
    }
    return ratios(interleave(measures, rounds), "tp")
