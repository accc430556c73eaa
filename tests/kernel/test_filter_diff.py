"""The translated filters, run by this kernel, agree with libpcap on every packet.

The filters go through the product's own path: filters.compile_filters ->
loader.load (libpbf prepare-load hook, splice into the stubs) -> the kernel
verifier. The object's two self-test tc programs call the same stubs the
probes call; BPF_PROG_TEST_RUN puts each packet in a real skb, and the
filter reads it with bpf_probe_read_kernel as it does in a probe.

Reference: libpcap's own interpreter (pcap_offline_filter via pcapy) on the
same bytes, for DLT_EN10MB (whole frame) and DLT_RAW (frame minus Ethernet).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from functools import cache, lru_cache

import pcapy
import pytest

from pwru.bpf import libbpf, loader
from pwru.bpf.abi import Config
from pwru.bpf.config import choose_skb_loads
from pwru.bpf.loader import LoadRequest
from pwru.filter import cbpf
from pwru.filter.cbpf import DLT_EN10MB, DLT_RAW
from pwru.filter.pcap import compile_filters
from pwru.kernel.btf import KernelBtf
from pwru.trace.tracepoint import program_for
from tests.unit.test_translate import EXPRESSIONS, BoundHit, cbpf_run, ether, frame, ipv6

SNAPLEN = 262144  # what pwru.filter.cbpf.compile_filter asks libpcap for
NEUTRAL_ETHERTYPE = b"\x88\xb5"  # IEEE local experimental: the kernel leaves the payload alone
ALL_PROGRAMS = [
    *(f"pwru_tp_skb{i}" for i in range(5)),
    "pwru_tp_kfree_skb",
    "pwru_tp_consume_skb",
    "pwru_tp_consume_skb_loc",
    *(f"pwru_kp_skb{i}" for i in range(5)),
    *(f"pwru_km_skb{i}" for i in range(5)),
    "pwru_kp_kfree_reason",
    "pwru_kp_skdrop_reason",
    "pwru_km_kfree_reason",
    "pwru_km_skdrop_reason",
    "pwru_kp_skbmem",
    "pwru_kp_free",
    "pwru_km_free",
    "pwru_kp_nonskb",
    "pwru_kp_clone",
    "pwru_krp_clone",
    "pwru_selftest_l2",
    "pwru_selftest_l3",
]
TOTALS: Counter[str] = Counter()
# "" means no filter: pwru then never calls the stubs, so there is nothing to compare
KERNEL_EXPRESSIONS = [e for e in EXPRESSIONS if e.strip()]


@lru_cache(maxsize=1)
def kernel_packets() -> tuple[bytes, ...]:
    """10,300 Ethernet frames: well-formed, long IPv6 chains, truncated, corrupted, junk."""
    rnd = random.Random(0x6B65726E)
    good = [frame(rnd) for _ in range(5000)]
    good += [ether(rnd, 0x86DD, ipv6(rnd, chain=rnd.randrange(6, 40)), tags=0) for _ in range(200)]
    out = list(good)
    for pkt in rnd.sample(good, 2500):
        out.append(pkt[: rnd.randrange(len(pkt) + 1)])
    for pkt in rnd.sample(good, 2000):
        i = rnd.randrange(len(pkt))
        out.append(pkt[:i] + bytes([rnd.getrandbits(8)]) + pkt[i + 1 :])
    for _ in range(600):
        out.append(rnd.randbytes(rnd.choice([0, 1, 5, 13, 14, 20, 33, 54, 70, 150])))
    return tuple(out)


def libpcap_answers(expr: str, linktype: int, pkts: list[bytes]) -> list[int | None]:
    """libpcap's verdict per packet; None where libpcap 1.x would loop forever
    (its protochain walk on some malformed IPv6 chains) or the link type has no
    such packets (an L2-only expression on DLT_RAW: pwru rejects those)."""
    try:
        program = pcapy.compile(linktype, SNAPLEN, expr, 1, 0xFFFFFFFF)
    except pcapy.PcapError:
        return [0] * len(pkts)  # valid at L2 only (checked by the caller)
    prog = [cbpf.CbpfInsn(*t) for t in program.get_bpf()]
    loops = "protochain" in expr  # the only construct that makes libpcap loop
    answers: list[int | None] = []
    for pkt in pkts:
        if loops:
            try:
                cbpf_run(prog, pkt, 10_000, per_loop=False)
            except BoundHit:
                answers.append(None)
                continue
        answers.append(program.filter(pkt))
    return answers


def run_in_kernel(prog_fd: int, frames: list[bytes]) -> list[int | None]:
    """Return value per frame; None where the test run refuses the frame."""
    results: list[int | None] = []
    for pkt in frames:
        try:
            results.append(libbpf.prog_test_run(prog_fd, pkt).retval)
        except libbpf.LibbpfError:
            results.append(None)
    return results


@cache
def direct_loads_here() -> bool:
    """Whether tp_btf programs on this kernel run the direct-load filter bodies."""
    config = Config()
    choose_skb_loads(config, KernelBtf.load(), ["pwru_tp_skb0"], pcap_direct=True)
    return bool(config.filter_direct)


def test_direct_loads_probe_matches_the_kernel() -> None:
    """6.18 and later let tp_btf programs load skb->head's bytes: the probe must see
    it there (else the fast path silently goes unused), and refuse it before."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert direct_loads_here() == ((major, minor) >= (6, 18))


@pytest.fixture(scope="module", autouse=True)
def _report_totals() -> object:
    yield
    print(
        f"\nkernel differential: {TOTALS['expressions']} expressions, "
        f"{TOTALS['compared']} packet runs compared ({TOTALS['direct']} with direct loads), "
        f"{TOTALS['agree']} agree, "
        f"{TOTALS['refused']} refused by the test run, "
        f"{TOTALS['libpcap_hang']} skipped (libpcap hang)"
    )


@pytest.mark.parametrize("expr", KERNEL_EXPRESSIONS)
def test_kernel_filter_agrees_with_libpcap(expr: str) -> None:
    pkts = list(kernel_packets())
    assert len(pkts) >= 10_000
    compiled = compile_filters(expr)
    direct = compiled.direct and direct_loads_here()
    programs = ["pwru_selftest_l2", "pwru_selftest_l3"]
    if direct:
        programs += ["pwru_selftest_l2_direct", "pwru_selftest_l3_direct"]
    obj = loader.load(Config(), [LoadRequest(p) for p in programs], compiled.bodies, 4096)
    try:
        l2_frames = pkts
        raw = [p[14:] for p in pkts]
        l3_frames = [bytes(12) + NEUTRAL_ETHERTYPE + r for r in raw]
        l2_want = libpcap_answers(expr, DLT_EN10MB, pkts)
        l3_want = libpcap_answers(expr, DLT_RAW, raw)
        layers = {"l2": (l2_frames, l2_want), "l3": (l3_frames, l3_want)}
        # pwru_selftest_<layer>[_direct]
        checks = [(p, obj.program_fd(p), *layers[p.split("_")[2]]) for p in programs]
        for layer, fd, frames, want in checks:
            got = run_in_kernel(fd, frames)
            compared = 0
            for pkt, kernel, pcap in zip(frames, got, want):
                if pcap is None:
                    TOTALS["libpcap_hang"] += 1
                    continue
                if kernel is None:
                    TOTALS["refused"] += 1
                    continue
                assert kernel == pcap, (
                    f"{expr!r} {layer}: kernel {kernel} libpcap {pcap} on {pkt.hex()}"
                )
                compared += 1
            TOTALS["compared"] += compared
            TOTALS["agree"] += compared
            TOTALS["direct"] += compared if layer.endswith("_direct") else 0
            assert compared >= 9_000, f"{expr!r} {layer}: only {compared} packets compared"
        TOTALS["expressions"] += 1
    finally:
        obj.close()


def test_expression_set_is_broad() -> None:
    assert len(KERNEL_EXPRESSIONS) >= 50
    joined = " | ".join(KERNEL_EXPRESSIONS)
    for needle in (
        "host",
        "net",
        "portrange",
        "tcpflags",
        "icmptype",
        "vlan",
        "ether",
        "len",
        "arp",
        "protochain",
        "ip6",
        "not",
        "%",
        "&",
    ):
        assert needle in joined, needle


@pytest.mark.parametrize("plain_loads", [True, False], ids=["plain-loads", "helpers"])
@pytest.mark.parametrize("expr", KERNEL_EXPRESSIONS)
def test_every_probe_program_verifies_with_filter(expr: str, plain_loads: bool) -> None:
    """kprobe and kprobe-multi programs load here even though they cannot attach: with
    the skb read through bpf_rdonly_cast and the direct filter bodies where this
    kernel allows them (asserted for 6.18), and through helpers as older kernels do."""
    compiled = compile_filters(expr, tunnel_l2=expr, tunnel_l3="")
    # every optional part of the programs switched on, so the verifier sees it all
    config = Config(
        output_meta=1, output_tuple=1, output_tunnel=1, output_skb_metadata=1,
        have_pcap_filter=1, have_tunnel_filter=1, have_skb_expr=1, track_skb=1,
        track_skb_by_stackid=1,
        stack_frames=50, skb_text_len=4096, shinfo_text_len=4096,
        filter_loops=int(compiled.loops),
    )  # fmt: skip
    bodies = dict(compiled.bodies)
    if plain_loads:
        bodies |= choose_skb_loads(config, KernelBtf.load(), ALL_PROGRAMS, compiled.direct)
        assert config.kprobe_btf == int(direct_loads_here())
        assert config.filter_direct == int(compiled.direct and direct_loads_here())
    requests = [_request(name) for name in ALL_PROGRAMS]
    loaded = [r.program for r in requests if r is not None]
    assert len(loaded) >= len(ALL_PROGRAMS) - 1  # 6.18 has no tracepoint with the skb 5th
    obj = loader.load(config, [r for r in requests if r is not None], bodies, 4096)
    try:
        for name in loaded:
            assert obj.program_fd(name) > 0, name
    finally:
        obj.close()


@cache
def _request(program: str) -> LoadRequest | None:
    """What to load: tracepoint programs need a tracepoint with the skb where they
    read it (None when this kernel has none); kprobe programs load as they are."""
    if not program.startswith("pwru_tp"):
        return LoadRequest(program)
    for tp in KernelBtf.load().skb_tracepoints():
        # the one-argument consume_skb program also loads where consume_skb has two
        if program_for(tp) == program or (program == "pwru_tp_consume_skb" == f"pwru_tp_{tp.name}"):
            return LoadRequest(program, 0, tp.btf_id)
    return None
