"""Memory: pwru's resident set while it keeps up with a steady event rate.

pwru traces namespace b and writes text to /dev/null (a file would grow by
gigabytes over a soak; rendering and writing happen all the same) while a capped
flood offers ``events_per_s``. VmRSS is sampled every ``every`` seconds; the
first sample is taken once pwru is ready and the flood has run for ``every`` s.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.drain import lost_printed
from bench.loss import events_per_packet
from bench.tools import Flood, mapped_ring_kib, rss_kib
from netlab import Lab, PwruRun


def bench_memory(
    lab: Lab, workdir: Path, tracepoints: Path, seconds: float, events_per_s: float, every: float
) -> dict[str, object]:
    per_packet = events_per_packet(lab, tracepoints)
    run = PwruRun(["--filter-netns", lab.b.netns_path, "--output-file", "/dev/null"], workdir)
    samples: list[tuple[float, float]] = []  # (seconds into the flood, MiB)
    try:
        ready_mib = rss_kib(run.proc.pid) / 1024
        ring_mib = mapped_ring_kib(run.proc.pid) / 1024
        flood = Flood(lab, seconds + 1, events_per_s / per_packet)
        try:
            for at in range(1, int(seconds // every) + 1):
                time.sleep(max(0.0, flood.started + at * every - time.monotonic()))
                samples.append((at * every, rss_kib(run.proc.pid) / 1024))
            flooded = flood.wait()
        finally:
            flood.kill()
    finally:
        run.stop()
    first, last = samples[0][1], samples[-1][1]
    return {
        "events_per_s_offered": flooded.pps * per_packet,
        "rss_ready_mib": ready_mib,
        "rss_ring_mib": ring_mib,
        "rss_start_mib": first,
        "rss_end_mib": last,
        "rss_max_mib": max(mib for _, mib in samples),
        "rss_drift_pct": 100 * (last - first) / first,
        "rss_widest_pct": 100 * max(abs(mib - first) for _, mib in samples) / first,
        "rss_samples": samples,
        "lost": lost_printed(run.stderr),
        "soak_seconds": seconds,
    }
