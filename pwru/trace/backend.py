"""Which probes a run uses, how they load, and how they attach and detach.

A run plans before it loads (the object is loaded once, with every program it
will need) and attaches after. ``--backend`` picks the probes:

* ``tracepoint``: the skb tracepoints (pwru/tracepoint.py);
* ``kprobe-multi`` / ``kprobe``: every function taking an sk_buff (pwru/kprobe.py);
* empty: kprobe-multi if a test attach works, else kprobe, else tracepoints,
  with one line on stderr saying which and why.

tc/XDP programs (--filter-trace-tc/xdp) come on top of any of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pwru.bpf.libbpf import BpfLink
from pwru.bpf.loader import LoadRequest, ProbeObject, first_load_requests
from pwru.errors import EnvironmentProblem, UsageError
from pwru.kernel import features
from pwru.kernel.btf import KernelBtf
from pwru.kernel.discovery import discover
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options
from pwru.trace import kprobe, tcxdp, tracepoint, tracking
from pwru.trace.probes import Probe, ProbeTable

log = logging.getLogger("pwru")

TRACEPOINT = "tracepoint"
AUTO = "auto"


@dataclass
class Plan:
    """What to load and attach."""

    backend: str  # TRACEPOINT, kprobe.KPROBE, kprobe.KPROBE_MULTI, or AUTO (decided after load)
    probes: list[Probe]  # tracepoints, or functions planned for kprobe-multi
    bpf_probes: list[Probe] = field(default_factory=list)  # tc/XDP programs
    nonskb_probes: list[Probe] = field(default_factory=list)  # --filter-non-skb-funcs
    targets: tcxdp.Targets | None = None
    tracking: tracking.TrackingPlan | None = None  # --filter-track-skb with kprobes
    requests: list[LoadRequest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Attachments:
    """Every link and fd a run holds; close() releases them all (detach = close)."""

    batch: int = 10
    fds: list[int] = field(default_factory=list)
    links: list[BpfLink] = field(default_factory=list)

    def close(self) -> float:
        """Detach everything; returns the seconds it took."""
        seconds = kprobe.detach(self.links, self.batch)
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())
        return seconds


def requested(options: Options, note: Callable[[str], None]) -> str:
    """The backend asked for, or AUTO; a named one that cannot work is an error."""
    found = features.Backends.probe()
    if options.backend == TRACEPOINT:
        return TRACEPOINT
    if options.backend in (kprobe.KPROBE, kprobe.KPROBE_MULTI):
        if not found.kprobe:
            raise EnvironmentProblem(
                f"--backend {options.backend} cannot work here: {found.kprobe_reason}"
            )
        return options.backend
    if not found.kprobe:
        note(f"using the tracepoint backend: {found.kprobe_reason}")
        return TRACEPOINT
    return AUTO


def plan(
    options: Options,
    backend: str,
    kernel_btf: KernelBtf,
    running_btf: KernelBtf,
    ksyms: Callable[[], Kallsyms],
    table: ProbeTable,
    wanted: Callable[[str], bool],
) -> Plan:
    """Number every probe in ``table`` and list the programs to load."""
    if backend == TRACEPOINT:
        tp = tracepoint.plan(running_btf.skb_tracepoints(), table, wanted)
        for name in tp.skipped:
            log.debug(
                "skipping tracepoint %s: its sk_buff is past position %d",
                name,
                tracepoint.MAX_SKB_POSITION,
            )
        if not tp.probes:
            raise UsageError(f"no skb tracepoint matches --filter-func {options.filter_func!r}")
        result = Plan(backend, tp.probes, requests=first_load_requests(tp.probes))
    else:
        found = discover(
            kernel_btf, ksyms(), wanted=wanted, kmods=options.kmods, all_kmods=options.all_kmods
        )
        if not found.functions:
            raise UsageError(f"no skb function matches --filter-func {options.filter_func!r}")
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(found.skipped.items()))
        notes = [
            *found.notes,
            f"{len(found.functions)} skb functions to probe"
            + (f" (skipped: {skipped})" if skipped else ""),
        ]
        first = kprobe.KPROBE if backend == kprobe.KPROBE else kprobe.KPROBE_MULTI
        probes = kprobe.plan(first, found.functions, table)
        families = [first] if backend != AUTO else [kprobe.KPROBE_MULTI, kprobe.KPROBE]
        requests = [r for family in families for r in kprobe.load_requests(probes, family)]
        result = Plan(backend, probes, requests=requests, notes=notes)
        if _tracking(options):
            free_traced = any(p.name == tracking.FREE for p in probes)
            result.tracking = tracking.plan(running_btf, table, free_traced)
            result.requests += result.tracking.load_requests()
        if options.filter_non_skb_funcs:
            result.nonskb_probes = _plan_nonskb(options.filter_non_skb_funcs, ksyms(), table)
            result.requests.append(LoadRequest("pwru_kp_nonskb"))
    if options.filter_non_skb_funcs and backend == TRACEPOINT:
        raise UsageError("--filter-non-skb-funcs needs kprobes, which this kernel does not have")
    if options.filter_track_skb and backend == TRACEPOINT:
        result.notes.append(
            "--filter-track-skb without kprobes: clones and copies are not followed"
        )
    if options.filter_trace_tc or options.filter_trace_xdp:
        result.targets = tcxdp.Targets(options.filter_trace_tc, options.filter_trace_xdp)
        result.bpf_probes = tcxdp.plan(result.targets, table)
        result.requests += first_load_requests(result.bpf_probes)
        kinds = " and ".join(
            k
            for k, on in (("tc", options.filter_trace_tc), ("XDP", options.filter_trace_xdp))
            if on
        )
        result.notes.append(f"tracing {len(result.targets.programs)} {kinds} programs")
    return result


def _tracking(options: Options) -> bool:
    """Whether skbs are tracked (by-stackid, which non-skb functions imply, builds on it)."""
    return options.filter_track_skb or options.filter_track_skb_by_stackid


def _plan_nonskb(names: list[str], ksyms: Kallsyms, table: ProbeTable) -> list[Probe]:
    """A kprobe per --filter-non-skb-funcs function (each copy of a repeated name)."""
    probes = []
    found = ksyms.find(names)  # one pass; addresses() would build the whole name index
    for name in names:
        addrs = [symbol.addr for symbol in found.get(name, ())]
        if not addrs:
            raise UsageError(f"--filter-non-skb-funcs: no kernel function {name!r}")
        probes += [table.add(name, kprobe.KPROBE, "pwru_kp_nonskb", addr=a) for a in addrs]
    return probes


def attach(
    options: Options,
    chosen: Plan,
    obj: ProbeObject,
    held: Attachments,
    note: Callable[[str], None],
    stopped: Callable[[], bool],
) -> str:
    """Attach everything planned; returns the backend finally used."""
    backend = chosen.backend
    started = time.monotonic()
    if backend == TRACEPOINT:
        obj.attach_raw(chosen.probes, held.fds)
        summary = f"attached {len(chosen.probes)} tracepoints"
    else:
        if backend in (AUTO, kprobe.KPROBE_MULTI):
            works, why = kprobe.kprobe_multi_works(obj, chosen.probes[0])
            if works:
                if backend == AUTO:
                    note("using the kprobe-multi backend")
                backend = kprobe.KPROBE_MULTI
            elif backend == kprobe.KPROBE_MULTI:
                raise EnvironmentProblem(f"--backend kprobe-multi cannot work here: {why}")
            else:
                note(f"using the kprobe backend: {why}")
                backend = kprobe.KPROBE
        report = kprobe.AttachReport()
        if backend == kprobe.KPROBE_MULTI:
            kprobe.attach_multi(obj, chosen.probes, held.links, report)
        else:
            kprobe.attach_each(
                obj, chosen.probes, held.links, report, options.filter_kprobe_batch, stopped
            )
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
        summary = f"attached {report.attached} functions with {backend}" + (
            f" (skipped: {skipped})" if skipped else ""
        )
        if chosen.tracking is not None:
            how = tracking.attach(obj, chosen.tracking, held.links, held.fds)
            summary += f", clones followed with {how}"
        if chosen.nonskb_probes:
            nonskb = kprobe.AttachReport()
            kprobe.attach_each(obj, chosen.nonskb_probes, held.links, nonskb, 4, stopped)
            summary += f", {nonskb.attached} non-skb functions"
    if chosen.bpf_probes:
        obj.attach_raw(chosen.bpf_probes, held.fds)
    note(f"{summary} in {time.monotonic() - started:.2f} s")
    return backend
