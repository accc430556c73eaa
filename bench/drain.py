"""Events drained: pwru's output against a minimal C consumer, on the same flood.

Both trace namespace b (pwru ``--filter-netns``, ringcount ``-n``) while ``flood``
sends UDP from a to b as fast as it can (b drops it in iptables). A consumer's
rate is end to end: every event it took out of the ring buffer (pwru: lines or
records in its output file; ringcount: records counted), divided by the time from
the flood's start until the consumer was done (file no longer growing, counter
no longer moving). What the ring could not hold is counted as lost by each.

Also here, ``bench_burst``: each consumer's capacity with the CPUs to itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import pcapcount
from bench.tools import NO_ROTATION_MB, Flood, Loader, RingWatch, cpu_seconds, ringcount, rss_kib
from netlab import Lab, PwruRun, pwru_command

SETTLED_S = 0.3  # no progress for this long after the flood: the consumer is done


@dataclass
class Drained:
    """One consumer's run under the flood."""

    consumer: str
    events: int  # taken out of the ring
    lost: int  # the ring was full
    seconds: float  # flood start (burst: resumption) until the consumer was done
    flood_pps: float  # burst: records/s filling the stopped consumer's ring
    consumer_cpu_s: float  # the consumer's user + system time over ``seconds``
    peak_rss_mib: float = 0.0  # pwru only (VmHWM)

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    @property
    def per_cpu_s(self) -> float:
        """Events per CPU-second of the consumer: its cost, whatever else ran."""
        return self.events / self.consumer_cpu_s if self.consumer_cpu_s else 0.0


Progress = Callable[[], tuple[int, float, bool]]  # (value, when, still busy)


def wait_settled(progress: Progress, after: float) -> float:
    """Waits until ``progress()`` is no longer busy and its value has not moved for
    SETTLED_S, and not before ``after`` (the flood's end or the consumer's resumption);
    returns when the value last moved (``after`` at least)."""
    value, changed, _ = progress()
    while True:
        time.sleep(0.05)
        now_value, now, busy = progress()
        if now_value != value or busy:
            value, changed = now_value, now
        elif now - changed >= SETTLED_S and now >= after + SETTLED_S:
            return max(changed, after)


def counted(counter: Loader) -> Progress:
    """ringcount's records counted (it counts as it takes them out of the ring)."""

    def progress() -> tuple[int, float, bool]:
        last = counter.samples()[-1]
        return last.consumed, last.at, False

    return progress


def lost_printed(stderr: str) -> int:
    """The lost count pwru prints at exit ("N events lost: ..."), 0 if none."""
    found = re.search(r"(\d+) events lost", stderr)
    return int(found.group(1)) if found else 0


def file_written(out: Path, ring: RingWatch) -> Progress:
    """pwru's output file, busy while its ring buffer still holds records (pwru writes
    only after a poll has emptied the ring)."""
    return lambda: (out.stat().st_size, time.monotonic(), not ring.empty())


def run_c(lab: Lab, tracepoints: Path, seconds: float) -> Drained:
    counter = ringcount(tracepoints, lab.b.inode)
    try:
        cpu = cpu_seconds(counter.proc.pid)
        flood = Flood(lab, seconds)
        flooded = flood.wait()
        done = wait_settled(counted(counter), flood.started + flooded.seconds)
        cpu = cpu_seconds(counter.proc.pid) - cpu
    finally:
        counter.stop()
    events, failed, _offered = (int(x) for x in counter.first("total")[:3])
    return Drained("C ringcount", events, failed, done - flood.started, flooded.pps, cpu)


OUTPUTS = ("text", "json", "pcap")


def output_args(output: str, path: Path) -> list[str]:
    """pwru's flags to write ``output`` to ``path``."""
    if output == "pcap":
        return ["--output-pcap", str(path)]
    # one file: pwru rotates --output-file at 100 MB by default, and the count reads one
    return ["--output-file", str(path), "--output-file-max-size", str(NO_ROTATION_MB)] + (
        ["--output-json"] if output == "json" else []
    )


def measured_outputs() -> list[str]:
    """text, JSON, and pcap where ``pwru --help`` lists --output-pcap ($PWRU_BIN may be
    an older pwru)."""
    helped = subprocess.run([*pwru_command(), "--help"], capture_output=True, text=True)
    return [o for o in OUTPUTS if o != "pcap" or "--output-pcap" in helped.stdout]


def count_events(path: Path, output: str) -> int:
    if output == "pcap":
        return pcapcount.records(path)
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return lines - 1  # text starts with its column header, JSON with the saved-trace header


def run_pwru(lab: Lab, workdir: Path, output: str, seconds: float) -> Drained:
    out = workdir / f"drain.{output}"
    run = PwruRun(["--filter-netns", lab.b.netns_path, *output_args(output, out)], workdir)
    ring = RingWatch(run.proc.pid)
    try:
        cpu = cpu_seconds(run.proc.pid)
        flood = Flood(lab, seconds)
        flooded = flood.wait()
        done = wait_settled(file_written(out, ring), flood.started + flooded.seconds)
        cpu = cpu_seconds(run.proc.pid) - cpu
        peak = rss_kib(run.proc.pid, "VmHWM") / 1024
    finally:
        ring.close()
        run.stop()
    events, lost = written_and_lost(run, out, output)
    seconds = done - flood.started
    return Drained(f"pwru {output}", events, lost, seconds, flooded.pps, cpu, peak)


def written_and_lost(run: PwruRun, out: Path, output: str) -> tuple[int, int]:
    """Events a stopped pwru wrote to ``out`` (removed then) and the lost count it printed."""
    events = count_events(out, output)
    out.unlink()
    return events, lost_printed(run.stderr)


def bench_drain(
    lab: Lab, workdir: Path, tracepoints: Path, rounds: int, seconds: float
) -> dict[str, object]:
    """Rounds of C, text, JSON (and pcap), in that order; medians and per-round ratios."""
    outputs = measured_outputs()
    runs: dict[str, list[Drained]] = {"c": [], **{o: [] for o in outputs}}
    for _ in range(rounds):
        runs["c"].append(run_c(lab, tracepoints, seconds))
        for output in outputs:
            runs[output].append(run_pwru(lab, workdir, output, seconds))
    result: dict[str, object] = {"runs": {k: [asdict(d) for d in v] for k, v in runs.items()}}
    c_rate = statistics.median(d.per_s for d in runs["c"])
    result["c_events_per_s"] = c_rate
    result["c_events_per_cpu_s"] = statistics.median(d.per_cpu_s for d in runs["c"])
    for output in OUTPUTS:
        if output not in runs:
            result[f"{output}_ratio"] = None
            continue
        rate = statistics.median(d.per_s for d in runs[output])
        result[f"{output}_events_per_s"] = rate
        result[f"{output}_ratio"] = rate / c_rate
        result[f"{output}_ratio_rounds"] = [
            p.per_s / c.per_s for p, c in zip(runs[output], runs["c"])
        ]
        result[f"{output}_events_per_cpu_s"] = statistics.median(d.per_cpu_s for d in runs[output])
    return result


BURST_RING_MB = 64


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block (SIGCONT on the way out, whatever happens)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def fill_ring(lab: Lab, pid: int, most_seconds: float) -> tuple[float, float, float]:
    """With ``pid`` stopped, flood until its ring is full (or ``most_seconds`` passed),
    then let it go on. Returns the records/s that filled the ring, and the moment and
    ``pid``'s CPU seconds right before it was resumed."""
    ring = RingWatch(pid)
    flood = Flood(lab, most_seconds)
    try:
        with paused(pid):
            while ring.used() < (BURST_RING_MB << 20) - 4096 and flood.proc.poll() is None:
                time.sleep(0.05)
            flood.kill()  # no "sent" line then: the rate is from the ring's records
            time.sleep(0.1)  # the last packets through the stack
            filled = ring.used() // RECORD_BYTES / (time.monotonic() - flood.started)
            cpu, resumed = cpu_seconds(pid), time.monotonic()
    finally:
        flood.kill()
        ring.close()
    return filled, resumed, cpu


RECORD_BYTES = 216 + 8  # struct pwru_event and the ring's record header


def burst_c(lab: Lab, tracepoints: Path, most_seconds: float) -> Drained:
    """ringcount stopped while the flood fills its ring, then timed emptying it alone."""
    counter = ringcount(tracepoints, lab.b.inode, ring_mb=BURST_RING_MB)
    try:
        while not counter.samples():  # a "before" value for wait_settled
            time.sleep(0.01)
        offered, resumed, cpu = fill_ring(lab, counter.proc.pid, most_seconds)
        done = wait_settled(counted(counter), resumed)
        cpu = cpu_seconds(counter.proc.pid) - cpu
    finally:
        counter.stop()
    events, failed, _offered = (int(x) for x in counter.first("total")[:3])
    return Drained("C ringcount", events, failed, done - resumed, offered, cpu)


def burst_pwru(lab: Lab, workdir: Path, output: str, most_seconds: float) -> Drained:
    """pwru stopped while the flood fills its ring, then timed writing it all out."""
    out = workdir / f"burst.{output}"
    args = ["--filter-netns", lab.b.netns_path, "--ringbuf-size", str(BURST_RING_MB)]
    run = PwruRun([*args, *output_args(output, out)], workdir)
    ring = RingWatch(run.proc.pid)
    try:
        offered, resumed, cpu = fill_ring(lab, run.proc.pid, most_seconds)
        done = wait_settled(file_written(out, ring), resumed)
        cpu = cpu_seconds(run.proc.pid) - cpu
        peak = rss_kib(run.proc.pid, "VmHWM") / 1024
    finally:
        ring.close()
        run.stop()
    events, lost = written_and_lost(run, out, output)
    return Drained(f"pwru {output}", events, lost, done - resumed, offered, cpu, peak)


def bench_burst(
    lab: Lab, workdir: Path, tracepoints: Path, most_seconds: float
) -> dict[str, object]:
    """Drain capacity without the flood competing for the CPUs: each consumer is stopped
    while the flood fills a BURST_RING_MB ring, then empties it alone."""
    outputs = measured_outputs()
    c = burst_c(lab, tracepoints, most_seconds)
    result: dict[str, object] = {
        "ring_mb": BURST_RING_MB,
        "c": asdict(c),
        "c_events_per_s": c.per_s,
    }
    for output in outputs:
        drained = burst_pwru(lab, workdir, output, most_seconds)
        result[output] = asdict(drained)
        result[f"{output}_events_per_s"] = drained.per_s
        result[f"{output}_ratio"] = drained.per_s / c.per_s
    return result
