"""tcpdump expressions -> the bodies spliced into the BPF filter stubs.

Each expression is compiled by libpcap twice, because pwru meets packets in
two shapes: with their MAC header (``DLT_EN10MB``, for filter_pcap_l2) and,
earlier on the way out, with only a network header (``DLT_RAW``, for
filter_pcap_l3). An expression that only makes sense with a MAC header
(``arp``, ``ether host ...``, ``vlan``) is an error for DLT_RAW in libpcap; for
pwru it means "no L3-only packet matches", so its L3 body rejects everything.
The tunnel filters work the same way on the inner packet of VXLAN/Geneve.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pwru.filter import cbpf, ebpf, translate
from pwru.filter.cbpf import DLT_EN10MB, DLT_RAW, FilterError

log = logging.getLogger("pwru.filter")

L2_STUB = "filter_pcap_l2"
L3_STUB = "filter_pcap_l3"
L2_DIRECT_STUB = "filter_pcap_l2_direct"  # the same filters with plain packet loads
L3_DIRECT_STUB = "filter_pcap_l3_direct"
TUNNEL_L2_STUB = "filter_pcap_tunnel_l2"
TUNNEL_L3_STUB = "filter_pcap_tunnel_l3"


@dataclass
class CompiledFilters:
    """Encoded stub bodies, by stub name, and which filter groups are active."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    pcap: bool = False
    tunnel: bool = False
    loops: bool = False  # some body jumps backwards (protochain)
    direct: bool = False  # the pcap filter also has direct-load bodies (it does not loop)
    seconds: float = 0.0  # compile + translate time, for --debug and benchmarks


def _compile(expression: str, linktype: int, l2_only_ok: bool) -> tuple[cbpf.CbpfInsn, ...] | None:
    """libpcap's program; None for one valid at L2 only (checked by the caller) and
    meaningless at L3."""
    try:
        prog = cbpf.compile_filter(expression, linktype)
    except FilterError:
        if not l2_only_ok:
            raise
        return None
    return None if prog is None else tuple(prog)


def _body(
    stub: str, expression: str, linktype: int, prog: tuple[cbpf.CbpfInsn, ...] | None, direct: bool
) -> bytes:
    """Translate and encode one stub body; log both programs with --debug."""
    if prog is None:
        insns = translate.reject_all(name=stub)
    else:
        insns = translate.translate(prog, name=stub, direct=direct)
    if log.isEnabledFor(logging.DEBUG):
        kind = "L2 (DLT_EN10MB)" if linktype == DLT_EN10MB else "L3 (DLT_RAW)"
        log.debug("%s for %r, %s:", stub, expression, kind)
        for line in cbpf.disassemble(prog) if prog else ["(matches nothing)"]:
            log.debug("  cbpf  %s", line)
        for line in ebpf.disassemble(insns):
            log.debug("  ebpf  %s", line)
    return ebpf.encode(insns)


_DIRECT_STUBS = {L2_STUB: L2_DIRECT_STUB, L3_STUB: L3_DIRECT_STUB}


def compile_filters(pcap: str, tunnel_l2: str = "", tunnel_l3: str = "") -> CompiledFilters:
    """Bodies for every stub an option asks for; no expression, no body (stubs accept all).

    Raises FilterError (a usage error naming the expression and libpcap's
    message) when libpcap cannot compile an expression.
    """
    started = time.perf_counter()
    result = CompiledFilters()
    wanted: list[tuple[str, str, int, bool]] = []
    if pcap.strip():
        wanted += [(L2_STUB, pcap, DLT_EN10MB, False), (L3_STUB, pcap, DLT_RAW, True)]
        result.pcap = True
    if tunnel_l2.strip() or tunnel_l3.strip():
        # The inner packet must match both; an absent one accepts all ("" in libpcap).
        wanted += [(TUNNEL_L2_STUB, tunnel_l2, DLT_EN10MB, False)]
        wanted += [(TUNNEL_L3_STUB, tunnel_l3, DLT_RAW, False)]
        result.tunnel = True
    progs = [(stub, expr, link, _compile(expr, link, ok)) for stub, expr, link, ok in wanted]
    result.loops = any(prog is not None and translate.loops(prog) for *_, prog in progs)
    # a looping body keeps every filter on the helper path (see read_view in the BPF code)
    result.direct = result.pcap and not result.loops
    for stub, expression, linktype, prog in progs:
        result.bodies[stub] = _body(stub, expression, linktype, prog, direct=False)
        if result.direct and stub in _DIRECT_STUBS:
            direct = _DIRECT_STUBS[stub]
            result.bodies[direct] = _body(direct, expression, linktype, prog, direct=True)
    result.seconds = time.perf_counter() - started
    return result
