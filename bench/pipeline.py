"""Whole-pipeline measurements (``make bench`` runs them first, as before issue #12).

They use a Python UDP flood (one sendto per datagram), so their numbers compare with
the earlier runs in docs/benchmarks.md; the yardsticks of issue #12 (drain, overhead,
soak, guest) use the C tools in bench/c.

* ready: wall time from starting ``pwru`` to its --ready-file appearing
  (load BTF, compile, load and attach every probe), tracepoint backend.
* throughput: a UDP flood from namespace a to b, dropped by iptables in b;
  pwru traces namespace b and writes text to a file. Reports events/s
  written, events lost in the kernel (ring buffer full), and the flood's
  packet rate with and without pwru (the per-packet cost of tracing).
* filter run: ns per run of the translated filter in the kernel (BPF_PROG_TEST_RUN),
  with and without the packet window.
* filter overhead: the flood's rate while pwru runs a filter that matches none
  of it, plain and with --filter-track-skb-by-stackid (map lookups per hit).
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from bench.tools import NO_ROTATION_MB
from netlab import Lab, PwruRun

FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
payload = b'x' * 64
n = 0
start = time.perf_counter()
end = start + seconds
batch = 200
while True:
    now = time.perf_counter()
    if now >= end:
        break
    if rate and n >= rate * (now - start):
        time.sleep(0.0005)
        continue
    for _ in range(batch):
        s.sendto(payload, (dst, 9999))
    n += batch
print(n, time.perf_counter() - start)
"""


def bench_ready(lab: Lab, workdir: Path, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        # looked for every millisecond: the default 20 ms would add ~10 ms to the median
        run = PwruRun(
            ["--filter-netns", lab.b.netns_path, "--output-file", "/dev/null"],
            workdir,
            poll_s=0.001,
        )
        times.append(time.perf_counter() - started)
        run.stop()
    return {
        "rounds": rounds,
        "ready_median_s": statistics.median(times),
        "ready_min_s": min(times),
        "ready_max_s": max(times),
    }


def flood(lab: Lab, seconds: float, rate: float) -> tuple[int, float]:
    out = lab.a.python(
        FLOOD.replace(
            "sys.argv[1], float(sys.argv[2]), float(sys.argv[3])",
            f"{lab.b.ipv4!r}, {seconds}, {rate}",
        )
    )
    sent, elapsed = out.stdout.split()
    return int(sent), float(elapsed)


def bench_throughput(
    lab: Lab, workdir: Path, seconds: float, rate: float, ringbuf_mb: int
) -> dict[str, float]:
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
    base_sent, base_elapsed = flood(lab, seconds, rate)
    out = workdir / "trace.txt"
    run = PwruRun(
        [
            "--filter-netns",
            lab.b.netns_path,
            "--output-file",
            str(out),
            "--output-file-max-size",
            str(NO_ROTATION_MB),
            "--ringbuf-size",
            str(ringbuf_mb),
        ],
        workdir,
    )
    sent, elapsed = flood(lab, seconds, rate)
    trace_end = time.perf_counter()
    run.stop()
    drained = time.perf_counter() - trace_end
    events = sum(1 for _ in out.open()) - 1
    lost_match = re.search(r"(\d+) events lost", run.stderr)
    lost = int(lost_match.group(1)) if lost_match else 0
    return {
        "flood_pps_without_pwru": base_sent / base_elapsed,
        "flood_pps_with_pwru": sent / elapsed,
        "packets_sent": sent,
        "events_written": events,
        "events_lost": lost,
        "events_per_packet": (events + lost) / sent if sent else 0.0,
        "events_per_s": events / (elapsed + drained),
        "kernel_events_per_s": (events + lost) / elapsed,
    }


TYPICAL_FILTER = "tcp and dst host 10.0.0.2 and dst port 80"


def bench_filter(rounds: int = 20) -> dict[str, float]:
    """Compile + translate (libpcap twice, our translator, encoding), and splicing."""
    from pwru.bpf import loader
    from pwru.bpf.abi import Config
    from pwru.filter.pcap import compile_filters
    from pwru.kernel.btf import KernelBtf
    from pwru.kernel.kallsyms import Kallsyms
    from pwru.options import Options
    from pwru.trace.backend import TraceContext
    from pwru.trace.probes import ProbeTable
    from pwru.trace.tracepoint import TracepointBackend

    compile_times = []
    for _ in range(rounds):
        compiled = compile_filters(TYPICAL_FILTER)
        compile_times.append(compiled.seconds)
    btf = KernelBtf.load()
    ctx = TraceContext(Options(), btf, btf, Kallsyms.load, lambda _n: True)
    requests = TracepointBackend(ctx).plan(ProbeTable())
    load_times: dict[bool, list[float]] = {False: [], True: []}
    splice_times = []
    for _ in range(5):
        for with_filter in (False, True):
            started = time.perf_counter()
            bodies = compiled.bodies if with_filter else {}
            obj = loader.load(Config(have_pcap_filter=int(with_filter)), requests, bodies, 4096)
            load_times[with_filter].append(time.perf_counter() - started)
            if with_filter:
                splice_times.append(obj.splice_seconds)
            obj.close()
    return {
        "filter_compile_translate_ms": statistics.median(compile_times) * 1000,
        "filter_splice_ms": statistics.median(splice_times) * 1000,
        "object_load_ms_no_filter": statistics.median(load_times[False]) * 1000,
        "object_load_ms_with_filter": statistics.median(load_times[True]) * 1000,
    }


def bench_filter_run(repeat: int = 200_000) -> dict[str, float]:
    """Nanoseconds one filter run costs in the kernel (BPF_PROG_TEST_RUN of the self-test
    program, which runs the spliced L2 filter over an skb), matching and not, with the
    64-byte window (pwru.filter.translate) and with the window switched off."""
    from pwru.bpf import libbpf, loader
    from pwru.bpf.abi import Config
    from pwru.filter import translate
    from pwru.filter.pcap import compile_filters

    eth = bytes(12) + b"\x08\x00"
    ip = bytes.fromhex("45000028000000004006") + bytes.fromhex("0a0000010a000002")
    frames = {
        "match": eth + ip + bytes.fromhex("d43100500000000000000000500220000000") + bytes(2),
        "miss": eth + ip + bytes.fromhex("d43101bb0000000000000000500220000000") + bytes(2),
    }
    results: dict[str, float] = {}
    saved = translate.WINDOW
    try:
        for label, window in (("window", saved), ("no_window", 0)):
            translate.WINDOW = window
            compiled = compile_filters(TYPICAL_FILTER)
            obj = loader.load(
                Config(), [loader.LoadRequest("pwru_selftest_l2")], compiled.bodies, 4096
            )
            try:
                fd = obj.program_fd("pwru_selftest_l2")
                for kind, frame in frames.items():
                    runs = [libbpf.prog_test_run(fd, frame, repeat).duration_ns for _ in range(5)]
                    results[f"filter_run_ns_{kind}_{label}"] = float(statistics.median(runs))
            finally:
                obj.close()
    finally:
        translate.WINDOW = saved
    return results


def bench_filter_overhead(lab: Lab, workdir: Path, seconds: float) -> dict[str, float]:
    """Flood rate while pwru runs a filter that matches none of the flood's packets."""
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
    base_sent, base_elapsed = flood(lab, seconds, 0)
    run = PwruRun(["--filter-netns", lab.b.netns_path, "udp port 1"], workdir)
    sent, elapsed = flood(lab, seconds, 0)
    run.stop()
    # the same with by-stackid tracking: two more map lookups per probe hit
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--filter-track-skb-by-stackid", "udp port 1"],
        workdir,
    )
    tracked_sent, tracked_elapsed = flood(lab, seconds, 0)
    run.stop()
    base = base_sent / base_elapsed
    return {
        "flood_pps_without_pwru_2": base,
        "flood_pps_nonmatching_filter": sent / elapsed,
        "nonmatching_filter_cost_pct": 100 * (1 - (sent / elapsed) / base),
        "flood_pps_nonmatching_tracked": tracked_sent / tracked_elapsed,
        "nonmatching_tracked_cost_pct": 100 * (1 - (tracked_sent / tracked_elapsed) / base),
    }
