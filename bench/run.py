"""pwru benchmarks (issue #12): every speed goal as a ratio measured in one run.

Run as root from the repository: ``make bench`` (host part, ~4 minutes),
``make bench-full`` (a 10-minute memory soak), ``make bench-guest`` (kprobe
yardsticks in the 6.12 guest, ~10 minutes), or ``python3 bench/run.py --help``.
Traffic stays inside two network namespaces made for the run (veth pair), from
``flood`` (bench/c, sendmmsg) in a to b, where iptables drops it.

* pipeline: time to ready, and the earlier whole-pipeline numbers (bench/pipeline.py).
* drain: events/s pwru writes (text, JSON, --output-pcap) against a minimal C
  libbpf consumer of the same tracepoints, same flood (bench/drain.py).
* burst: the same consumers each emptying a full 64 MiB ring with the CPUs to
  themselves (drain capacity, the flood stopped; bench/drain.py).
* loss: nothing lost at a fixed offered rate; above the drain rate, the lost count
  pwru prints against its lost_events map and an independent count (bench/loss.py).
* overhead: flood rate with ``pwru 'host 192.0.2.99'`` against no-op programs on the
  same tracepoints, the floor (bench/overhead.py); and what one probe hit costs inside
  BPF, pwru's programs against the floor's, from the kernel's accounting (bench/bpfcost.py).
* soak: pwru's RSS at a steady event rate (bench/soak.py).
* guest: the kprobe-multi and kprobe yardsticks in one 6.12 boot (bench/guest.py).

The C tools are built into bench/c/build first. This checkout's pwru is measured
(``python3 -m pwru``), or $PWRU_BIN if set. Prints a table of ratios against the
goals; ``--json FILE`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bpfcost, drain, loss, overhead, pipeline, report, soak, tools  # noqa: E402
from netlab import Lab  # noqa: E402

PARTS = ("pipeline", "drain", "burst", "loss", "overhead", "soak")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    add("--guest", action="store_true", help="also run the 6.12 guest part (bench/guest.py)")
    add("--json", metavar="FILE", help="write every number as JSON")
    add("--drain-rounds", type=int, default=3, help="rounds of the drain runs (medians)")
    add("--overhead-rounds", type=int, default=5, help="rounds of the overhead runs (medians)")
    add("--drain-seconds", type=float, default=4.0, help="flood per drain run")
    add("--burst-fill-seconds", type=float, default=15.0, help="longest flood filling a ring")
    add("--overhead-seconds", type=float, default=2.0, help="flood per overhead run")
    add("--loss-seconds", type=float, default=60.0, help="no-loss run length")
    add("--loss-rate", type=float, default=100_000, help="events/s offered in the no-loss run")
    add("--soak-seconds", type=float, default=60.0, help="memory soak (600 in bench-full)")
    add("--soak-rate", type=float, default=50_000, help="events/s offered in the soak")
    add("--soak-every", type=float, default=10.0, help="seconds between RSS samples")
    add("--guest-rounds", type=int, default=2, help="kprobe-multi rounds in the guest")
    add("--guest-kprobe-rounds", type=int, default=1, help="single-kprobe rounds in the guest")
    add("--guest-seconds", type=float, default=5.0, help="flood per run in the guest")
    add("--seconds", type=float, default=3.0, help="pipeline: Python flood duration")
    add("--rate", type=float, default=0.0, help="pipeline: packets/s (0 = unthrottled)")
    add("--ringbuf-mb", type=int, default=16, help="pipeline: --ringbuf-size")
    add("--ready-rounds", type=int, default=5, help="pipeline: time-to-ready rounds")
    args = parser.parse_args()
    args.parts = [p for p in args.only.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown parts {', '.join(sorted(unknown))}")
    return args


def run_pipeline(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The measurements kept from before, in a lab of their own (they add iptables rules)."""
    results: dict[str, Any] = {}
    tools.log("pipeline")
    lab = Lab.create(subnet=99)
    try:
        results["ready"] = pipeline.bench_ready(lab, workdir, args.ready_rounds)
        results["pipeline"] = {
            **pipeline.bench_throughput(lab, workdir, args.seconds, args.rate, args.ringbuf_mb),
            **pipeline.bench_filter(),
            **pipeline.bench_filter_run(),
            **pipeline.bench_filter_overhead(lab, workdir, args.seconds),
        }
    finally:
        lab.close()
    return results


def run_yardsticks(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    tracepoints = workdir / "tracepoints.txt"
    results["tracepoints"] = tools.write_tracepoints(tracepoints)
    lab = Lab.create(subnet=98)
    try:
        tools.quiet_lab(lab)
        tools.drop_flood_in_b(lab)
        if "drain" in args.parts:
            tools.log("drain")
            results["drain"] = drain.bench_drain(
                lab, workdir, tracepoints, args.drain_rounds, args.drain_seconds
            )
        if "burst" in args.parts:
            tools.log("burst")
            results["burst"] = drain.bench_burst(lab, workdir, tracepoints, args.burst_fill_seconds)
        if "loss" in args.parts:
            tools.log("loss")
            results["lost_accounting"] = loss.bench_lost_accounting(
                lab, workdir, tracepoints, args.drain_seconds
            )
            results["no_loss"] = loss.bench_no_loss(
                lab, workdir, tracepoints, args.loss_seconds, args.loss_rate
            )
        if "overhead" in args.parts:
            tools.log("overhead")
            results["overhead"] = overhead.bench_tracepoint_overhead(
                lab, workdir, tracepoints, args.overhead_rounds, args.overhead_seconds
            )
            results["bpf_cost"] = bpfcost.bench_bpf_cost(
                lab, workdir, tracepoints, args.overhead_seconds
            )
        if "soak" in args.parts:
            tools.log("soak")
            results["memory"] = soak.bench_memory(
                lab, workdir, tracepoints, args.soak_seconds, args.soak_rate, args.soak_every
            )
    finally:
        lab.close()
    return results


def describe_run() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "-C", str(tools.REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"command": " ".join(sys.argv), "commit": commit, "date": time.strftime("%F %T %z")}


def main() -> None:
    args = parse_args()
    summary: dict[str, Any] = {**describe_run(), "loadavg_start": tools.loadavg()}
    tools.build_tools()
    host: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tools.use_checkout_pwru(workdir)
        if "pipeline" in args.parts:
            host.update(run_pipeline(args, workdir))
        if set(args.parts) - {"pipeline"}:
            host.update(run_yardsticks(args, workdir))
    summary["host"] = host
    summary["loadavg_end"] = tools.loadavg()
    load = f"load average {summary['loadavg_start']} → {summary['loadavg_end']}"
    report.print_table(report.host_goals(host), f"host ({summary['commit']}; {load})")
    if "pipeline" in host:
        print("\npipeline (Python flood; compare with earlier runs in docs/benchmarks.md)")
        for key, value in host["pipeline"].items():
            print(f"  {key:32} {value:,.3f}" if isinstance(value, float) else f"  {key:32} {value}")
    if args.guest:
        from bench import guest

        tools.log("guest")
        summary["guest"] = guest.run_guest(
            args.guest_seconds, args.guest_rounds, args.guest_kprobe_rounds
        )
        report.print_table(
            report.guest_goals(summary["guest"]), f"6.12 guest ({summary['guest']['package']})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
