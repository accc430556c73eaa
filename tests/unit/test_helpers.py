"""pwru.trace.helpers: which kernel functions a traced program calls, and which
program probes each (the map programs with --output-bpfmap)."""

from __future__ import annotations

from pwru.filter import ebpf
from pwru.filter.opcodes import CallSrc, Class, JmpOp
from pwru.kernel.btf import KernelBtf, Kind
from pwru.kernel.kallsyms import Kallsyms
from pwru.trace import helpers
from pwru.trace.probes import ProbeKind, ProbeTable
from tests.unit.test_btf import Builder

BASE = 0xFFFFFFFF81200000  # __bpf_call_base
KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81200000 T __bpf_call_base
ffffffff81200100 T bpf_skb_load_bytes
ffffffff81200400 T htab_map_update_elem
ffffffff81200800 t __htab_map_lookup_elem
ffffffff81200c00 T array_map_update_elem
ffffffffc0001000 t bpf_prog_6deef7357e7b4530_vm_tc_maps\t[bpf]
"""


def call(src: int, target: int) -> ebpf.Insn:
    return ebpf.Insn(Class.JMP | JmpOp.CALL, src=src, imm=target - BASE if target else 0)


def xlated(*insns: ebpf.Insn) -> bytes:
    return ebpf.encode([*insns, ebpf.mov64_imm(0, 0), ebpf.exit_insn()])


def test_called_addresses_are_helpers_and_kfuncs() -> None:
    """Helper calls (src 0) and kfunc calls (src 2) carry the callee's offset from
    __bpf_call_base; BPF-to-BPF calls (src 1) are the program's own."""
    code = xlated(
        ebpf.ld_imm64(1, 0xFFFF888000001000),  # two slots: decoding keeps step
        call(CallSrc.HELPER, 0xFFFFFFFF81200100),
        call(CallSrc.LOCAL, 0),
        ebpf.Insn(Class.JMP | JmpOp.CALL, src=CallSrc.LOCAL, imm=3),
        call(CallSrc.KFUNC, 0xFFFFFFFF81200400),
        call(CallSrc.HELPER, 0xFFFFFFFF81180000),  # below the base: a negative imm
    )
    assert list(helpers.called_addresses(code, BASE)) == [
        0xFFFFFFFF81200100,
        0xFFFFFFFF81200400,
        0xFFFFFFFF81180000,
    ]


def test_callees_by_name_once_and_only_function_starts() -> None:
    ksyms = Kallsyms.parse(KALLSYMS)
    first = xlated(
        call(CallSrc.HELPER, 0xFFFFFFFF81200400),
        call(CallSrc.HELPER, 0xFFFFFFFF81200800),
        call(CallSrc.HELPER, 0xFFFFFFFF81200400),  # again
        call(CallSrc.HELPER, 0xFFFFFFFF81200104),  # not a function's first byte
    )
    second = xlated(
        call(CallSrc.HELPER, 0xFFFFFFFF81200100),
        call(CallSrc.KFUNC, 0xFFFFFFFFC0001000),  # a BPF program, not the kernel's
    )
    assert helpers.callees([first, second], ksyms) == [
        helpers.Callee("__htab_map_lookup_elem", 0xFFFFFFFF81200800),
        helpers.Callee("bpf_skb_load_bytes", 0xFFFFFFFF81200100),
        helpers.Callee("htab_map_update_elem", 0xFFFFFFFF81200400),
    ]
    assert helpers.callees([first], Kallsyms.parse("ffffffff81000000 T _stext\n")) == []


def map_btf() -> KernelBtf:
    b = Builder()
    u64 = b.int_("long long unsigned int", 8)
    u32 = b.int_("unsigned int", 4)
    bpf_map = b.struct("bpf_map", 8, [("id", u32, 0, 0)])
    map_ptr = b.ref(Kind.PTR, bpf_map)
    void_ptr = b.ref(Kind.PTR, 0)
    b.func("htab_map_update_elem", [("map", map_ptr), ("key", void_ptr), ("value", void_ptr)])
    b.func("__htab_map_lookup_elem", [("map", map_ptr), ("key", void_ptr)])
    b.func("array_map_delete_elem", [("map", map_ptr), ("key", void_ptr)])
    b.func("bpf_map_lookup_elem", [("map", u64), ("key", u64)])  # BPF_CALL_2: u64 arguments
    b.func("bpf_skb_load_bytes", [("skb", u64), ("offset", u64)])
    b.func("sock_map_update_elem_sys", [("sk", void_ptr), ("key", void_ptr)])
    return KernelBtf(b.build(), "maps")


def test_program_for_map_functions() -> None:
    btf = map_btf()
    chosen = {
        name: helpers.program_for(btf, name, bpfmap=True)
        for name in (
            "htab_map_update_elem",
            "__htab_map_lookup_elem",
            "array_map_delete_elem",
            "bpf_map_lookup_elem",
            "bpf_skb_load_bytes",
            "sock_map_update_elem_sys",  # no map parameter
            "not_in_btf_update_elem",
        )
    }
    assert chosen == {
        "htab_map_update_elem": "pwru_kp_map_update",
        "__htab_map_lookup_elem": "pwru_kp_map_lookup_htab",  # returns its htab_elem
        "array_map_delete_elem": "pwru_kp_map_delete",
        "bpf_map_lookup_elem": "pwru_kp_map_lookup",
        "bpf_skb_load_bytes": "pwru_kp_helper",
        "sock_map_update_elem_sys": "pwru_kp_helper",
        "not_in_btf_update_elem": "pwru_kp_helper",
    }
    assert helpers.program_for(btf, "htab_map_update_elem", bpfmap=False) == "pwru_kp_helper"


def test_events_without_cookies_are_named_by_address() -> None:
    """5.10: kprobe events carry PWRU_PROBE_BY_ADDR and the probed address."""
    table = ProbeTable()
    table.add("kfree_skb", ProbeKind.TRACEPOINT, "pwru_tp_kfree_skb_noreason", attach_btf_id=7)
    table.add("ip_rcv", ProbeKind.KPROBE, "pwru_kp_skb0", addr=0xFFFFFFFF81800000)
    table.add("htab_map_update_elem", ProbeKind.KPROBE, "pwru_kp_helper", addr=0xFFFFFFFF81200400)
    assert table.event_name(1, 0) == "ip_rcv"
    assert table.event_name(0xFFFFFFFF, 0xFFFFFFFF81800000) == "ip_rcv"
    assert table.event_name(0xFFFFFFFF, 0xFFFFFFFF81200400) == "htab_map_update_elem"
    assert table.event_name(0xFFFFFFFF, 0xFFFFFFFF81800001) == "0xffffffff81800001"
    table.add("ip_output", ProbeKind.KPROBE, "pwru_kp_skb2", addr=0xFFFFFFFF81900000)
    assert table.event_name(0xFFFFFFFF, 0xFFFFFFFF81900000) == "ip_output"  # index renewed
