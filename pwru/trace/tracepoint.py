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
from dataclasses import dataclass
from typing import Callable

from pwru.kernel.btf import SkbTracepoint
from pwru.trace.probes import Probe, ProbeTable

log = logging.getLogger("pwru")

MAX_SKB_POSITION = 4  # pwru_tp_skb0 .. pwru_tp_skb4 in bpf/pwru.bpf.c
KIND = "tracepoint"


def program_for(tp: SkbTracepoint) -> str | None:
    """The BPF program that reads this tracepoint's sk_buff (and drop reason)."""
    if tp.name == "kfree_skb" and tp.skb_arg == 0 and tp.nargs >= 3:
        return "pwru_tp_kfree_skb"  # (skb, location, reason, ...) since 5.17
    if tp.name == "consume_skb" and tp.skb_arg == 0:
        return "pwru_tp_consume_skb"  # also ends --filter-track-skb for the skb
    if tp.skb_arg <= MAX_SKB_POSITION:
        return f"pwru_tp_skb{tp.skb_arg}"
    return None


@dataclass
class Plan:
    probes: list[Probe]
    skipped: list[str]


def plan(
    tracepoints: list[SkbTracepoint], table: ProbeTable, wanted: Callable[[str], bool]
) -> Plan:
    """Add a probe to ``table`` for every wanted skb tracepoint."""
    probes: list[Probe] = []
    skipped: list[str] = []
    for tp in tracepoints:
        if not wanted(tp.name):
            continue
        program = program_for(tp)
        if program is None:
            skipped.append(tp.name)
            continue
        probes.append(table.add(tp.name, KIND, program, tp.btf_id))
    return Plan(probes, skipped)
