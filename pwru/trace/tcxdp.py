"""--filter-trace-tc / --filter-trace-xdp: fentry (and, for XDP, fexit) on BPF programs.

Packets handled by tc and XDP programs (Cilium's, for instance) are invisible to
kprobes on kernel functions while the BPF program runs. pwru attaches its own
tracing programs to every loaded tc (SCHED_CLS) and XDP program that has BTF:
events show the program's name with ``(tc)`` / ``(xdp)``; for XDP the exit event
also carries the verdict (XDP_PASS, XDP_DROP, ...).

An fentry program is bound to one target at load time, so, as for
tracepoints, the first target of each kind is loaded by libbpf and the others
get copies of its instructions (loader.ProbeObject.load_copy).
"""

from __future__ import annotations

import logging
import os

from pwru.bpf import libbpf
from pwru.trace.probes import Probe, ProbeTable

log = logging.getLogger("pwru")

TC_KIND = "tc"
XDP_KIND = "xdp"
_PROGRAMS = {
    TC_KIND: ["pwru_fentry_tc"],
    XDP_KIND: ["pwru_fentry_xdp", "pwru_fexit_xdp"],
}
_TYPES = {libbpf.BPF_PROG_TYPE_SCHED_CLS: TC_KIND, libbpf.BPF_PROG_TYPE_XDP: XDP_KIND}


class Targets:
    """The tc/XDP programs to trace; owns their fds (close() releases them)."""

    def __init__(self, trace_tc: bool, trace_xdp: bool) -> None:
        wanted = set()
        if trace_tc:
            wanted.add(libbpf.BPF_PROG_TYPE_SCHED_CLS)
        if trace_xdp:
            wanted.add(libbpf.BPF_PROG_TYPE_XDP)
        self.programs: list[libbpf.LoadedProgram] = []
        for prog in libbpf.loaded_programs(wanted):
            if prog.func_btf_id and not prog.name.startswith("pwru_"):
                self.programs.append(prog)
            else:  # no BTF to attach by, or our own
                os.close(prog.fd)

    def close(self) -> None:
        for prog in self.programs:
            os.close(prog.fd)
        self.programs.clear()


def plan(targets: Targets, table: ProbeTable) -> list[Probe]:
    """A probe per (target, pwru program); attach_btf_id is the target's function."""
    probes = []
    for target in targets.programs:
        kind = _TYPES[target.type]
        for program in _PROGRAMS[kind]:
            probe = table.add(target.name, kind, program, target.func_btf_id, target_fd=target.fd)
            probes.append(probe)
    return probes
