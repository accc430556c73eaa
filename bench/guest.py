"""Cost when nothing matches with kprobes, in one boot of the 6.12 guest (QEMU/TCG).

This host kernel has no kprobes, so this part runs in the Debian 6.12 kernel of
tests/vm/kernels.txt (tests/vm/run-in-guest.sh: the host's root read-only, TCG,
2 vCPUs). Under emulation only ratios mean anything. In one boot:

* the functions pwru attaches with ``--backend kprobe-multi`` (pwru.kernel.discovery, the
  same call pwru makes), written as "address name" lines;
* rounds of: the flood untraced; the floor (``nooploader kprobe-multi``: one no-op
  kprobe-multi link over those addresses); ``pwru --backend kprobe-multi
  'host 192.0.2.99'`` (no --filter-netns: every hit runs the filter);
* one round of the same with single kprobes (``nooploader kprobe``, one link per
  address; ``pwru --backend kprobe``): attaching ~1,600 kprobes takes ~30 s there and
  detaching ~60 s, so one round;
* pwru's start: its --debug "ready after" minus its attach time is the set-up before
  attaching (Python start not included; the wall time to --ready-file is reported too).

Run ``make bench-guest`` (or ``bench/run.py --guest``); ~10 minutes. ``--kernel 7.3`` runs
the same in another kernel of tests/vm/kernels.txt (7.3 lets kprobes load packet bytes
directly, see docs/filters.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import tools  # noqa: E402
from bench.overhead import interleave, ratios, untraced, with_floor, with_pwru  # noqa: E402
from netlab import Lab  # noqa: E402

VM_DIR = Path(os.environ.get("PWRU_VM_DIR", "/var/cache/pwru-vm"))
GUEST_TIMEOUT_S = 3600  # a busy host slows TCG down several times


def write_functions(path: Path) -> int:
    """The skb functions pwru attaches with kprobe-multi here ("address name" lines)."""
    from pwru.kernel.btf import KernelBtf
    from pwru.kernel.discovery import discover
    from pwru.kernel.kallsyms import Kallsyms
    from pwru.trace.probes import ProbeKind
    from pwru.trace.skbfuncs import program_for

    found = discover(KernelBtf.load(), Kallsyms.load(), wanted=lambda _name: True)
    functions = [f for f in found.functions if program_for(ProbeKind.KPROBE_MULTI, f)]
    path.write_text("".join(f"{f.addr:x} {f.name}\n" for f in functions))
    return len(functions)


def in_guest(out: Path, seconds: float, rounds: int, kprobe_rounds: int) -> None:
    """The guest side: measure, then write everything to ``out`` (a -w directory)."""
    result: dict[str, object] = {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "loadavg_guest_start": tools.loadavg(),
    }
    lab = Lab.create(subnet=97)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            tools.use_checkout_pwru(workdir)
            tools.quiet_lab(lab)
            tools.drop_flood_in_b(lab)
            functions = workdir / "functions.txt"
            started = time.monotonic()
            tools.log("guest: discovering the skb functions")
            result["functions"] = write_functions(functions)
            result["discovery_s"] = time.monotonic() - started
            for backend, n in (("kprobe-multi", rounds), ("kprobe", kprobe_rounds)):
                if not n:
                    continue
                tools.log(f"guest: {backend}, {n} rounds")
                try:
                    result.update(measure_backend(lab, workdir, functions, backend, n, seconds))
                except (RuntimeError, AssertionError, OSError, subprocess.SubprocessError) as error:
                    result[f"{backend.replace('-', '_')}_error"] = str(error)
                    tools.log(f"guest: {backend} failed: {error}")
                out.write_text(json.dumps(result, indent=1))  # what is done so far
    finally:
        lab.close()
    result["loadavg_guest_end"] = tools.loadavg()
    out.write_text(json.dumps(result, indent=1))


def measure_backend(
    lab: Lab, workdir: Path, functions: Path, backend: str, rounds: int, seconds: float
) -> dict[str, object]:
    starts: list[dict[str, float]] = []
    attaches: list[float] = []
    measures = {
        "untraced": untraced(lab, seconds),
        "floor": with_floor(lab, seconds, backend, functions, attaches),
        "pwru": with_pwru(
            lab, seconds, workdir, ["--debug", "--backend", backend], starts, ready_s=600
        ),
    }
    prefix = backend.replace("-", "_")
    result = ratios(interleave(measures, rounds), prefix)
    result[f"{prefix}_floor_attach_s"] = attaches
    result[f"{prefix}_pwru_starts"] = starts
    return result


def kernel_package(version: str) -> str:
    """The ``version`` row (6.12, the issue's) of tests/vm/kernels.txt, resolved to a
    package name."""
    rows = subprocess.run(
        [str(tools.REPO / "tests/vm/resolve-kernels.sh")], capture_output=True, text=True
    ).stdout
    for row in rows.splitlines():
        if row.startswith(f"linux-image-{version}."):
            return row.split()[0]
    raise SystemExit(
        f"bench: no {version} kernel in tests/vm/kernels.txt (tests/vm/setup-host.sh?)"
    )


def run_guest(
    seconds: float, rounds: int, kprobe_rounds: int, version: str = "6.12"
) -> dict[str, object]:
    """The host side: build, boot the guest once, return what it measured."""
    tools.build_tools()
    # the guest cannot write __pycache__: compile here once (~1 s of TCG per pwru start)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "pwru", "bench", "netlab"],
        cwd=tools.REPO,
        capture_output=True,
    )
    package = kernel_package(version)
    out_dir = VM_DIR / "bench-speed"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "guest.json"
    out.unlink(missing_ok=True)
    command = shlex.join(
        [sys.executable, str(Path(__file__).resolve()), "--in-guest", str(out)]
        + ["--seconds", str(seconds), "--rounds", str(rounds)]
        + ["--kprobe-rounds", str(kprobe_rounds)]
    )
    loadavg = tools.loadavg()
    started = time.monotonic()
    booted = subprocess.run(
        [str(tools.REPO / "tests/vm/run-in-guest.sh"), "-t", str(GUEST_TIMEOUT_S)]
        + ["-w", str(out_dir), "-e", f"PYTHONPATH={tools.REPO}", "-e", "PYTHONDONTWRITEBYTECODE=1"]
        + [package, command],
        stdin=subprocess.DEVNULL,
    )
    if not out.exists():
        raise SystemExit(f"bench: the guest run failed (rc {booted.returncode}); see above")
    result: dict[str, object] = json.loads(out.read_text())
    result.update(package=package, loadavg_host_start=loadavg, loadavg_host_end=tools.loadavg())
    result["guest_wall_s"] = time.monotonic() - started
    result["guest_rc"] = booted.returncode
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="flood duration")
    parser.add_argument("--rounds", type=int, default=2, help="kprobe-multi rounds")
    parser.add_argument("--kprobe-rounds", type=int, default=1, help="single-kprobe rounds")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--kernel", default="6.12", help="guest kernel of tests/vm/kernels.txt")
    parser.add_argument("--in-guest", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_guest:
        in_guest(Path(args.in_guest), args.seconds, args.rounds, args.kprobe_rounds)
        return
    from bench import report

    result = run_guest(args.seconds, args.rounds, args.kprobe_rounds, args.kernel)
    report.print_table(report.guest_goals(result), f"{args.kernel} guest ({result['package']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"guest": result}, indent=1))


if __name__ == "__main__":
    main()
