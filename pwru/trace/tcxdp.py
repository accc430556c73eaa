"""--filter-trace-tc / --filter-trace-xdp: fentry (and, for XDP, fexit) on BPF programs.

Packets handled by tc and XDP programs (Cilium's, for instance) are invisible to
kprobes on kernel functions while the BPF program runs. pwru attaches its own
tracing programs to every loaded tc (SCHED_CLS) and XDP program that has BTF:
events show the program's name with ``(tc)`` / ``(xdp)``; for XDP the exit event
also carries the verdict (XDP_PASS, XDP_DROP, ...).

An fentry program is bound to one target at load time, so, as for
tracepoints, the first target of each kind is loaded by libbpf and the others
get copies of its instructions (loader.ProbeObject.load_copy).

With --filter-track-bpf-helpers a tc program gets an fexit too: fentry marks the
packet the program handles for the helpers it calls, fexit unmarks it. Each
target's fexit is attached before its fentry (and released after it), so a run
the fexit misses never leaves a packet marked.
"""

from __future__ import annotations

import os

from pwru.bpf import libbpf
from pwru.bpf.loader import LoadRequest, ProbeObject, first_load_requests
from pwru.trace.backend import ProbeSet, Stopped, TraceContext
from pwru.trace.probes import ProbeKind, ProbeTable

# per kind: fexit first (see the module docstring); the tc fexit only for helpers
_PROGRAMS = {
    ProbeKind.TC: ["pwru_fexit_tc", "pwru_fentry_tc"],
    ProbeKind.XDP: ["pwru_fexit_xdp", "pwru_fentry_xdp"],
}
_HELPERS_ONLY = {"pwru_fexit_tc"}
_TYPES = {libbpf.BPF_PROG_TYPE_SCHED_CLS: ProbeKind.TC, libbpf.BPF_PROG_TYPE_XDP: ProbeKind.XDP}


class TcXdpPrograms(ProbeSet):
    """Every loaded tc/XDP program with BTF (not pwru's own); holds their fds."""

    def __init__(self, ctx: TraceContext) -> None:
        super().__init__(ctx)
        self.trace_tc = ctx.options.filter_trace_tc
        self.trace_xdp = ctx.options.filter_trace_xdp
        self.targets: list[libbpf.LoadedProgram] = []

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        """A probe per (target, pwru program); attach_btf_id is the target's function."""
        wanted = {
            t
            for t, on in (
                (libbpf.BPF_PROG_TYPE_SCHED_CLS, self.trace_tc),
                (libbpf.BPF_PROG_TYPE_XDP, self.trace_xdp),
            )
            if on
        }
        for prog in libbpf.loaded_programs(wanted):
            if prog.func_btf_id and not prog.name.startswith("pwru_"):
                self.targets.append(prog)
            else:  # no BTF to attach by, or our own
                os.close(prog.fd)
        helpers = self.ctx.options.filter_track_bpf_helpers
        for target in self.targets:
            kind = _TYPES[target.type]
            for program in _PROGRAMS[kind]:
                if program in _HELPERS_ONLY and not helpers:
                    continue
                self.probes.append(
                    table.add(
                        target.name,
                        kind,
                        program,
                        attach_btf_id=target.func_btf_id,
                        target_fd=target.fd,
                    )
                )
        kinds = " and ".join(k for k, on in (("tc", self.trace_tc), ("XDP", self.trace_xdp)) if on)
        self.notes.append(f"tracing {len(self.targets)} {kinds} programs")
        return first_load_requests(self.probes)

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        obj.attach_raw(self.probes, self.held.fds)
        return ""

    def close(self) -> float:
        seconds = self.held.close()
        for target in self.targets:
            os.close(target.fd)
        self.targets.clear()
        return seconds
