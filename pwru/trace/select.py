"""Which backends a run uses: the main one by --backend (or the first that works),
and the optional parts that follow the same protocol.

* ``tracepoint``: the skb tracepoints (pwru.trace.tracepoint);
* ``kprobe-multi`` / ``kprobe``: every function taking an sk_buff
  (pwru.trace.kprobe_multi, pwru.trace.kprobe);
* empty: kprobe-multi if the kernel attaches a test program with it, else kprobe,
  else tracepoints, with one line on stderr saying which and why.

On top: clone tracking and non-skb functions (kprobe backends only), tc/XDP
programs (any backend) and the BPF helpers they call (kprobes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pwru.errors import UsageError
from pwru.kernel import features
from pwru.trace import BackendName
from pwru.trace.backend import Backend, TraceContext

# Each backend is imported when a run chooses it: a tracepoint run loads none of
# the kprobe machinery (function discovery, kallsyms, the helpers' disassembly).
if TYPE_CHECKING:
    from pwru.kernel.discovery import AttachTarget
    from pwru.trace.kprobe import KprobeBackend
    from pwru.trace.kprobe_multi import KprobeMultiBackend

Note = Callable[[str], None]


def requested(name: BackendName, note: Note) -> BackendName:
    """The backend asked for, or AUTO; a named one the kernel cannot run is an error."""
    if name == BackendName.TRACEPOINT:
        return name
    kprobes = features.kprobes()
    if name in (BackendName.KPROBE, BackendName.KPROBE_MULTI):
        kprobes.require(f"--backend {name.value}")
        return name
    if not kprobes:
        note(f"using the tracepoint backend: {kprobes.why_not}")
        return BackendName.TRACEPOINT
    return BackendName.AUTO


def _kprobe_backend(ctx: TraceContext, name: BackendName) -> KprobeBackend | KprobeMultiBackend:
    """kprobe-multi or kprobe over the discovered functions; AUTO tries kprobe-multi."""
    from pwru.trace.kprobe_multi import KprobeMultiBackend
    from pwru.trace.skbfuncs import discover_functions

    functions, notes = discover_functions(ctx)
    if name == BackendName.KPROBE:
        return _kprobes(ctx, functions, notes)
    multi = features.kprobe_multi(functions[0].addr)
    if name == BackendName.KPROBE_MULTI:
        multi.require("--backend kprobe-multi")
        return KprobeMultiBackend(ctx, functions, notes)
    if multi:
        notes.append("using the kprobe-multi backend")
        return KprobeMultiBackend(ctx, functions, notes)
    notes.append(f"using the kprobe backend: {multi.why_not}")
    return _kprobes(ctx, functions, notes)


def _kprobes(ctx: TraceContext, functions: list[AttachTarget], notes: list[str]) -> KprobeBackend:
    """The kprobe backend; without BPF cookies (before 5.15) it says how events are named."""
    from pwru.trace.kprobe import KprobeBackend

    cookies = features.attach_cookies()
    if not cookies:
        notes.append(f"events are named by the probed address: {cookies.why_not}")
    return KprobeBackend(ctx, functions, notes)


def choose(ctx: TraceContext, note: Note) -> list[Backend]:
    """The backends of this run, main one first, in attach order."""
    options = ctx.options
    name = requested(BackendName(options.backend), note)
    parts: list[Backend] = []
    if name == BackendName.TRACEPOINT:
        from pwru.trace.tracepoint import TracepointBackend

        if options.filter_non_skb_funcs:
            raise UsageError(
                "--filter-non-skb-funcs needs kprobes, which this kernel does not have"
            )
        tracepoints = TracepointBackend(ctx)
        if options.filter_track_skb:
            tracepoints.notes.append(
                "--filter-track-skb without kprobes: clones and copies are not followed"
            )
        parts.append(tracepoints)
    else:
        parts += _kprobe_parts(ctx, name)
    if options.filter_trace_tc or options.filter_trace_xdp:
        from pwru.trace.helpers import BpfHelperProbes
        from pwru.trace.tcxdp import TcXdpPrograms

        programs = TcXdpPrograms(ctx)
        parts.append(programs)
        if options.filter_track_bpf_helpers:  # planned after the programs it reads
            parts.append(BpfHelperProbes(ctx, programs))
    return parts


def _kprobe_parts(ctx: TraceContext, name: BackendName) -> list[Backend]:
    """A kprobe backend, then clone tracking and non-skb functions if asked for."""
    from pwru.trace.nonskb import NonSkbProbes
    from pwru.trace.tracking import CloneTracking

    options = ctx.options
    parts: list[Backend] = [_kprobe_backend(ctx, name)]
    if options.filter_track_skb or options.filter_track_skb_by_stackid:
        parts.append(CloneTracking(ctx))
    if options.filter_non_skb_funcs:
        parts.append(NonSkbProbes(ctx))
    return parts
