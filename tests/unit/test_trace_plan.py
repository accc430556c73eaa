"""Planning of the kprobe backends: probes numbered once, one program per skb position."""

from __future__ import annotations

from typing import cast

import pytest

from pwru.kernel.btf import KernelBtf
from pwru.kernel.discovery import AttachTarget
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options
from pwru.trace.backend import TraceContext
from pwru.trace.kprobe import KprobeBackend
from pwru.trace.kprobe_multi import KprobeMultiBackend
from pwru.trace.probes import ProbeKind, ProbeTable

FUNCS = [
    AttachTarget("ip_rcv", 0, 0x1000, ""),
    AttachTarget("ip_output", 2, 0x2000, ""),
    AttachTarget("sk_skb_reason_drop", 1, 0x3000, ""),
    AttachTarget("far_away", 5, 0x4000, ""),  # 6th parameter: no program
    AttachTarget("kfree_skbmem", 0, 0x5000, ""),  # reports, then forgets the skb
]


def context() -> TraceContext:
    no_btf = cast(KernelBtf, None)  # planning from a function list reads no BTF
    return TraceContext(Options(), no_btf, no_btf, lambda: Kallsyms.parse(""), lambda _n: True)


@pytest.mark.parametrize(
    ("backend", "kind", "prefix"),
    [
        (KprobeMultiBackend, ProbeKind.KPROBE_MULTI, "pwru_km_"),
        (KprobeBackend, ProbeKind.KPROBE, "pwru_kp_"),
    ],
)
def test_kprobe_plan_one_program_per_position(
    backend: type[KprobeBackend | KprobeMultiBackend], kind: ProbeKind, prefix: str
) -> None:
    table = ProbeTable()
    planned = backend(context(), FUNCS, [])
    requests = planned.plan(table)
    assert [(p.id, p.name, p.kind, p.addr) for p in planned.probes] == [
        (0, "ip_rcv", kind, 0x1000),
        (1, "ip_output", kind, 0x2000),
        (2, "sk_skb_reason_drop", kind, 0x3000),
        (3, "kfree_skbmem", kind, 0x5000),
    ]
    assert [p.program for p in planned.probes] == [
        prefix + "skb0",
        prefix + "skb2",
        prefix + "skdrop_reason",
        prefix + "free",
    ]
    # each program loads once: the cookie, not the instructions, tells probes apart
    assert [r.program for r in requests] == [
        prefix + "free",
        prefix + "skb0",
        prefix + "skb2",
        prefix + "skdrop_reason",
    ]
    assert all(r.probe_id is None for r in requests)
    assert len(table) == 4 and table.name(3) == "kfree_skbmem" and table.name(9) == "probe#9"
