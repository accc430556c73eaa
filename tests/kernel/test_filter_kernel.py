"""Translated filters in the running kernel: the verifier accepts them, and
BPF_PROG_TEST_RUN gives libpcap's answers.

Each filter body is called, as a BPF-to-BPF subprogram with the stub's
calling convention, from a small tc (SCHED_CLS) program: test runs of tc
programs put the packet in a real skb, so the filter reads kernel memory
with bpf_probe_read_kernel exactly as it does under pwru. The caller turns
skb->data / data_end into plain numbers first (the stubs get numbers, not
packet pointers), and adds 14 for the DLT_RAW flavour.
"""

from __future__ import annotations

import errno
import os

import pytest

from pwru.bpf import libbpf
from pwru.filter import cbpf, ebpf, translate
from pwru.filter.cbpf import DLT_EN10MB, DLT_RAW
from pwru.filter.ebpf import FP, R1, R2, R3, R6, Insn
from pwru.filter.opcodes import AluOp
from tests.unit.test_translate import EXPRESSIONS, BoundHit, cbpf_run, packets

SKB_DATA = 76  # offsetof(struct __sk_buff, data)
SKB_DATA_END = 80  # offsetof(struct __sk_buff, data_end)
ETH_HLEN = 14


def harness(body: list[Insn], name: str, linktype: int) -> bytes:
    main = [
        ebpf.mov64_reg(R6, R1),
        ebpf.ldx_mem(4, R2, R6, SKB_DATA),
        ebpf.ldx_mem(4, R3, R6, SKB_DATA_END),
        ebpf.stx_mem(8, FP, R2, -8),
        ebpf.stx_mem(8, FP, R3, -16),
        # copy both pointers through the helper: the callee gets plain scalars
        ebpf.mov64_reg(R1, FP),
        ebpf.alu64_imm(AluOp.ADD, R1, -32),
        ebpf.mov64_imm(R2, 16),
        ebpf.mov64_reg(R3, FP),
        ebpf.alu64_imm(AluOp.ADD, R3, -16),
        ebpf.call_helper(ebpf.BPF_FUNC_probe_read_kernel),
        ebpf.ldx_mem(8, R2, FP, -32),
        ebpf.ldx_mem(8, R1, FP, -24),
    ]
    if linktype == DLT_RAW:
        main.append(ebpf.alu64_imm(AluOp.ADD, R1, ETH_HLEN))
    main += [ebpf.call_local(name), ebpf.exit_insn()]
    return ebpf.encode(main + body)


def load(prog: list[cbpf.CbpfInsn] | None, linktype: int, **kwargs: int) -> int:
    name = "filter_pcap_l2" if linktype == DLT_EN10MB else "filter_pcap_l3"
    if prog is None:
        body = translate.reject_all(name=name)
    else:
        body = translate.translate(prog, name=name, **kwargs)
    code = harness(body, name, linktype)
    return libbpf.prog_load(libbpf.BPF_PROG_TYPE_SCHED_CLS, "pwru_filter", code)


def _close(fd: int) -> None:
    os.close(fd)


def _sample(linktype: int) -> list[bytes]:
    """Frames BPF_PROG_TEST_RUN accepts for tc programs: at least an Ethernet
    header, and a whole IPv4/IPv6 header when the ethertype says IP. The
    DLT_RAW filter never sees the Ethernet header, so there the ethertype is
    replaced with an experimental one and truncated IP packets get in too."""
    frames = [p for p in packets()[::3] if len(p) >= ETH_HLEN]
    if linktype == DLT_RAW:
        return [p[:12] + b"\x88\xb5" + p[ETH_HLEN:] for p in frames]
    probe = load(cbpf.compile_filter("", DLT_EN10MB), DLT_EN10MB)
    try:
        out = []
        for pkt in frames:
            try:
                libbpf.prog_test_run(probe, pkt)
            except libbpf.LibbpfError as err:
                if err.errno != errno.EINVAL:
                    raise
                continue
            out.append(pkt)
        return out
    finally:
        _close(probe)


@pytest.mark.parametrize("linktype", [DLT_EN10MB, DLT_RAW], ids=["EN10MB", "RAW"])
def test_kernel_agrees_with_libpcap(linktype: int) -> None:
    import pcapy

    sample = _sample(linktype)
    assert len(sample) > 800
    for expr in EXPRESSIONS:
        try:
            program = pcapy.compile(linktype, 262144, expr, 1, 0xFFFFFFFF)
        except pcapy.PcapError:
            continue
        prog = [cbpf.CbpfInsn(*t) for t in program.get_bpf()]
        fd = load(prog, linktype)
        try:
            for frame in sample:
                pkt = frame if linktype == DLT_EN10MB else frame[ETH_HLEN:]
                try:
                    cbpf_run(prog, pkt, translate.DEFAULT_MAX_BACKWARD_JUMPS, per_loop=True)
                    want = program.filter(pkt)
                except BoundHit:
                    want = 0  # libpcap 1.10.3 would not return; newer libpcap gives 0
                got = libbpf.prog_test_run(fd, frame).retval
                assert got == want, f"{expr!r}: libpcap {want}, kernel {got} for {frame.hex()}"
        finally:
            _close(fd)


@pytest.mark.parametrize(
    "expr",
    [
        "ip6 protochain 6",
        "protochain 6 or protochain 17 or protochain 58 or protochain 50",
        "ip6 protochain 6 and ip6 protochain 17 and ip6 protochain 58 and ip6 protochain 59",
        "(host 10.0.0.1 or net 2001:db8::/32) and (tcp portrange 1-1024 or udp port 53)"
        " and tcp[tcpflags] & tcp-syn != 0 or ip[2:2] / ip[8] > 5 or ip6 protochain 44",
    ],
)
def test_verifier_accepts_heavy_filters(expr: str) -> None:
    for linktype in (DLT_EN10MB, DLT_RAW):
        fd = load(cbpf.compile_filter(expr, linktype), linktype)  # a rejection raises
        try:
            assert fd > 0
        finally:
            _close(fd)


def test_reject_all_loads() -> None:
    assert cbpf.compile_filter("arp", DLT_RAW) is None
    fd = load(None, DLT_RAW)
    try:
        assert libbpf.prog_test_run(fd, bytes(60)).retval == 0
    finally:
        _close(fd)
