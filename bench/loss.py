"""Lost events: none at a fixed offered rate, and an exact count above the drain rate.

Next to pwru (tracing namespace b, text to a file), ``ringcount -c`` counts every
event pwru is offered, independently (same tracepoints, same netns filter, nothing
reserved). pwru's per-CPU ``lost_events`` map is read with bpftool before pwru
exits. Namespace b has no other traffic (bench.tools.quiet_lab), so the numbers
compare exactly: written + lost printed = offered, lost printed = the map's sum.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.drain import file_written, lost_printed, wait_settled
from bench.tools import NO_ROTATION_MB, Flood, Loader, RingWatch, map_ids, ringcount
from netlab import Lab, PwruRun, sh


def events_per_packet(lab: Lab, tracepoints: Path) -> float:
    """Events one flood packet makes in b (ringcount -c over a short capped flood)."""
    counter = ringcount(tracepoints, lab.b.inode, count_only=True)
    try:
        sent = Flood(lab, 1.0, 5000).wait().sent
        time.sleep(0.2)
    finally:
        counter.stop()
    return int(counter.first("total")[2]) / sent


def offered_between(counter: Loader, start: float, end: float) -> int:
    """Events the independent counter saw between two moments (both in quiet periods)."""
    samples = counter.samples()
    before = max((s for s in samples if s.at <= start), key=lambda s: s.at)
    after = min((s for s in samples if s.at >= end), key=lambda s: s.at)
    return after.offered - before.offered


def traced_run(
    lab: Lab, workdir: Path, tracepoints: Path, seconds: float, rate: float
) -> dict[str, object]:
    """pwru (text to a file) under a flood at ``rate`` packets/s (0: unthrottled), next
    to ringcount -c; pwru's lost_events map is read before pwru exits."""
    out = workdir / "counted.txt"
    counter = ringcount(tracepoints, lab.b.inode, count_only=True)
    try:
        args = ["--output-file", str(out), "--output-file-max-size", str(NO_ROTATION_MB)]
        run = PwruRun(["--filter-netns", lab.b.netns_path, *args], workdir)
        ring = RingWatch(run.proc.pid)
        try:
            time.sleep(0.2)
            start_size, start = out.stat().st_size, time.monotonic()
            flood = Flood(lab, seconds, rate)
            flooded = flood.wait()
            done = wait_settled(file_written(out, ring), flood.started + flooded.seconds)
            time.sleep(0.2)
            map_lost = lost_events_in_map(run.proc.pid)
            end = time.monotonic()
        finally:
            ring.close()
            run.stop()
        time.sleep(0.2)
    finally:
        counter.stop()
    with out.open("rb") as f:
        f.seek(start_size)
        written = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    out.unlink()
    offered = offered_between(counter, start, end)
    return {
        "seconds": flooded.seconds,
        "packets_per_s": flooded.pps,
        "offered_events": offered,
        "offered_events_per_s": offered / flooded.seconds,
        "written": written,
        "lost_printed": lost_printed(run.stderr),
        "lost_in_map": map_lost,
        "drain_seconds_after_flood": done - (flood.started + flooded.seconds),
    }


def lost_events_in_map(pid: int) -> int:
    """Sum over CPUs of pwru's lost_events map, found through pid's fds (other pwru
    runs on this machine have maps of that name too) and read with bpftool."""
    for map_id in map(str, map_ids(pid)):
        shown = json.loads(sh("bpftool", "-j", "map", "show", "id", map_id).stdout)
        if shown.get("name") != "lost_events":
            continue
        dump = json.loads(sh("bpftool", "-j", "map", "dump", "id", map_id).stdout)
        return sum(per_cpu_value(v["value"]) for entry in dump for v in entry["values"])
    raise RuntimeError(f"pwru (pid {pid}) holds no lost_events map")


def per_cpu_value(value: object) -> int:
    """One CPU's u64 as bpftool -j dumps it: a list of hex bytes (little endian here)."""
    assert isinstance(value, list)
    return int.from_bytes(bytes(int(b, 16) for b in value), "little")


def bench_no_loss(
    lab: Lab, workdir: Path, tracepoints: Path, seconds: float, events_per_s: float
) -> dict[str, object]:
    """pwru offered ``events_per_s`` for ``seconds``: everything written, nothing lost?"""
    per_packet = events_per_packet(lab, tracepoints)
    result = traced_run(lab, workdir, tracepoints, seconds, events_per_s / per_packet)
    result["events_per_packet"] = per_packet
    everything = result["written"] == result["offered_events"]
    result["no_loss"] = result["lost_printed"] == 0 and everything
    return result


def bench_lost_accounting(
    lab: Lab, workdir: Path, tracepoints: Path, seconds: float
) -> dict[str, object]:
    """Above the drain rate: is the printed lost count the kernel's, exactly?"""
    result = traced_run(lab, workdir, tracepoints, seconds, 0)
    result["printed_equals_map"] = result["lost_printed"] == result["lost_in_map"]
    lost = result["lost_printed"]
    assert isinstance(lost, int)
    result["written_plus_lost_equals_offered"] = (
        result["written"] == result["offered_events"] - lost  # type: ignore[operator]
    )
    return result
