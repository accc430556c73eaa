"""Tracepoint backend: tp_btf programs on every tracepoint that carries an sk_buff.

Works where kprobes do not (kernels without CONFIG_KPROBES, like some cloud and
hardened kernels) and costs less per packet, at the price of seeing only the
~30 places the kernel marks with tracepoints rather than every function.

tp_btf programs are bound to one tracepoint at load time, so the object holds
one program per position of the sk_buff argument; the first tracepoint of each
position is loaded by libbpf and the rest are copies (loader.ProbeObject).
"""

from __future__ import annotations

import logging

from pwru.bpf.loader import LoadRequest, ProbeObject, first_load_requests
from pwru.errors import UsageError
from pwru.kernel.btf import SkbTracepoint
from pwru.trace.backend import ProbeSet, Stopped
from pwru.trace.probes import ProbeKind, ProbeTable

log = logging.getLogger("pwru")

MAX_SKB_POSITION = 4  # pwru_tp_skb0 .. pwru_tp_skb4 in bpf/pwru.bpf.c


def program_for(tp: SkbTracepoint) -> str | None:
    """The BPF program that reads this tracepoint's sk_buff (and drop reason)."""
    if tp.name == "kfree_skb" and tp.skb_arg == 0 and tp.nargs >= 3:
        return "pwru_tp_kfree_skb"  # (skb, location, reason, ...) since 5.17
    if tp.name == "kfree_skb" and tp.skb_arg == 0 and tp.nargs == 2:
        return "pwru_tp_kfree_skb_noreason"  # (skb, location) before
    if tp.name == "consume_skb" and tp.skb_arg == 0:
        return "pwru_tp_consume_skb"  # also ends --filter-track-skb for the skb
    if tp.skb_arg <= MAX_SKB_POSITION:
        return f"pwru_tp_skb{tp.skb_arg}"
    return None


class TracepointBackend(ProbeSet):
    """Every wanted skb tracepoint of the running kernel."""

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        for tp in self.ctx.running_btf.skb_tracepoints():
            if not self.ctx.wanted(tp.name):
                continue
            program = program_for(tp)
            if program is None:
                log.debug(
                    "skipping tracepoint %s: its sk_buff is past position %d",
                    tp.name,
                    MAX_SKB_POSITION,
                )
                continue
            self.probes.append(
                table.add(tp.name, ProbeKind.TRACEPOINT, program, attach_btf_id=tp.btf_id)
            )
        if not self.probes:
            raise UsageError(
                f"no skb tracepoint matches --filter-func {self.ctx.options.filter_func!r}"
            )
        return first_load_requests(self.probes)

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        obj.attach_raw(self.probes, self.held.fds)
        return f"attached {len(self.probes)} tracepoints"
