"""pwru.filter.skbexpr: parsing, errors, and the generated code run in the test interpreter.

The code runs in tests/unit/ebpf_interp.py against fake kernel memory. Fields
are written into that memory by this file's own encoder (little-endian, two's
complement, big-endian for ``__be*``, bitfields at their bit offsets), using
the offsets ``KernelBtf.struct_member`` reports, and the expected answer is
computed from the Python value written, not from pwru.filter.skbexpr's own view of
the field. Most tests use a small synthetic BTF shaped like the kernel's (so
they run anywhere and cover signed bitfields, signed enums, ENUM64...); the
rest use the running kernel's BTF.
"""

from __future__ import annotations

import operator
import os
import random
import struct
from collections.abc import Callable
from functools import cache

import pytest

from pwru.errors import UsageError
from pwru.filter import ebpf, skbexpr
from pwru.filter.opcodes import Class, JmpOp
from pwru.filter.skbexpr import (
    MetadataField,
    SkbExprError,
    compile_filter_expr,
    compile_metadata,
    compile_skb_exprs,
    parse_comparison,
)
from pwru.kernel.btf import KernelBtf, Kind
from pwru.options import Options
from tests.unit.ebpf_interp import InterpError, Machine
from tests.unit.test_btf import Builder

VMLINUX = "/sys/kernel/btf/vmlinux"
needs_vmlinux = pytest.mark.skipif(not os.path.exists(VMLINUX), reason="no kernel BTF")

SKB = 0xFFFF_8880_0100_0000
DEV = 0xFFFF_8880_0200_0000
NET = 0xFFFF_8880_0300_0000
UNMAPPED = 0xFFFF_8880_0900_0000
OUT = 0xFFFF_8880_0A00_0000  # the event's four metadata slots
XDP_BUFF = 0xFFFF_8880_0B00_0000
RXQ = 0xFFFF_8880_0C00_0000

# --------------------------------------------------------------------------
# A synthetic kernel BTF


@cache
def mini() -> tuple[KernelBtf, dict[str, int]]:
    """sk_buff -> net_device -> net -> ns_common, with one field of every shape."""
    b = Builder()
    t: dict[str, int] = {}
    t["int"] = b.int_("int", 4, signed=True)
    t["u8"] = b.int_("unsigned char", 1)
    t["u16"] = b.int_("unsigned short", 2)
    t["u32"] = b.int_("unsigned int", 4)
    t["u64"] = b.int_("long long unsigned int", 8)
    t["s64"] = b.int_("long long int", 8, signed=True)
    t["s16"] = b.int_("short", 2, signed=True)
    t["bool"] = b.add(Kind.INT, "_Bool", 1, extra=(4 << 24 | 8,))
    t["char"] = b.add(Kind.INT, "char", 1, extra=(2 << 24 | 8,))
    t["i128"] = b.int_("__int128", 16, signed=True)
    t["__u16"] = b.ref(Kind.TYPEDEF, t["u16"], "__u16")
    t["__be16"] = b.ref(Kind.TYPEDEF, t["__u16"], "__be16")
    t["__be32"] = b.ref(Kind.TYPEDEF, t["u32"], "__be32")
    t["__be64"] = b.ref(Kind.TYPEDEF, t["u64"], "__be64")
    t["const_be32"] = b.ref(Kind.CONST, t["__be32"])
    t["float"] = b.add(Kind.FLOAT, "double", 8)
    t["color"] = b.enum("color", {"RED": 0, "GREEN": 1, "BLUE": 2})
    t["temp"] = b.enum("temp", {"COLD": -10, "MILD": 15, "HOT": 40}, signed=True)
    t["big"] = b.enum64("big", {"SMALL": 1, "HUGE": 1 << 40})
    t["anon"] = b.enum("", {"ANON_A": 7, "ANON_B": 9}, size=1)
    t["clash1"] = b.enum("clash1", {"TWICE": 1, "SAME": 5})
    t["clash2"] = b.enum("clash2", {"TWICE": 2, "SAME": 5})
    t["ns_common"] = b.struct(
        "ns_common", 8, [("stashed", t["u32"], 0, 0), ("inum", t["u32"], 32, 0)]
    )
    t["net"] = b.struct("net", 24, [("passive", t["u64"], 0, 0), ("ns", t["ns_common"], 64, 0)])
    t["net_ptr"] = b.ref(Kind.PTR, t["net"])
    t["possible_net"] = b.struct("", 8, [("net", t["net_ptr"], 0, 0)])
    t["possible_net_t"] = b.ref(Kind.TYPEDEF, t["possible_net"], "possible_net_t")
    t["net_device"] = b.struct(
        "net_device",
        32,
        [
            ("mtu", t["u32"], 0, 0),
            ("ifindex", t["int"], 32, 0),
            ("nd_net", t["possible_net_t"], 64, 0),
            ("color", t["color"], 128, 2),  # an enum bitfield
            ("up", t["u8"], 130, 1),
            ("stat_type", t["color"], 136, 8),
            ("flags", t["u32"], 160, 0),
        ],
    )
    t["dev_ptr"] = b.ref(Kind.PTR, t["net_device"])
    t["sock_fwd"] = b.add(Kind.FWD, "sock", 0)
    t["sock_ptr"] = b.ref(Kind.PTR, t["sock_fwd"])
    t["u8_ptr"] = b.ref(Kind.PTR, t["u8"])
    t["refcount"] = b.struct("", 4, [("refs", t["int"], 0, 0)])
    t["refcount_t"] = b.ref(Kind.TYPEDEF, t["refcount"], "refcount_t")
    t["cb"] = b.array(t["u8"], t["int"], 8)
    t["dev_union"] = b.struct(
        "", 8, [("dev", t["dev_ptr"], 0, 0), ("dev_scratch", t["u64"], 0, 0)], union=True
    )
    t["sk_buff"] = b.struct(
        "sk_buff",
        128,
        [
            ("", t["dev_union"], 0, 0),  # anonymous: skb->dev
            ("mark", t["u32"], 64, 0),
            ("protocol", t["__be16"], 96, 0),
            ("pkt_type", t["u8"], 112, 3),
            ("ip_summed", t["u8"], 117, 2),
            ("sbits", t["int"], 120, 5),  # signed bitfield
            ("wide", t["u64"], 132, 40),  # 4 + 40 bits: an 8-byte read
            ("tstamp", t["s64"], 192, 0),
            ("temp", t["temp"], 256, 0),
            ("e64", t["big"], 320, 0),
            ("daddr", t["const_be32"], 384, 0),
            ("flag", t["bool"], 416, 0),
            ("c", t["char"], 424, 0),
            ("small", t["s16"], 432, 0),
            ("users", t["refcount_t"], 448, 0),
            ("cb", t["cb"], 480, 0),
            ("head", t["u8_ptr"], 576, 0),
            ("sk", t["sock_ptr"], 640, 0),
            ("anon", t["anon"], 704, 0),
            ("seq", t["__be64"], 768, 0),
            ("weight", t["float"], 832, 0),
            ("huge", t["i128"], 896, 0),
        ],
    )
    t["rxq"] = b.struct(
        "xdp_rxq_info", 16, [("dev", t["dev_ptr"], 0, 0), ("queue_index", t["u32"], 64, 0)]
    )
    t["rxq_ptr"] = b.ref(Kind.PTR, t["rxq"])
    t["xdp_buff"] = b.struct(
        "xdp_buff",
        32,
        [("data", t["u8_ptr"], 0, 0), ("rxq", t["rxq_ptr"], 64, 0), ("frame_sz", t["u32"], 128, 0)],
    )
    return KernelBtf(b.build(), "mini"), t


# --------------------------------------------------------------------------
# Fake kernel memory


class Memory:
    """Kernel objects at fixed addresses, written through BTF member offsets."""

    def __init__(self, btf: KernelBtf) -> None:
        self.btf = btf
        self.objects: dict[int, tuple[int, bytearray]] = {}  # addr -> (struct id, bytes)

    def add(self, addr: int, struct_name: str, fill: int = 0) -> None:
        tid = self.btf.find_type_id(struct_name, Kind.STRUCT)
        assert tid is not None, struct_name
        self.objects[addr] = (tid, bytearray([fill]) * self.btf.type_size(tid))

    def set(self, addr: int, path: str, value: int, *, big: bool = False) -> None:
        """Write ``value`` into member ``path`` ("mark", "nd_net.net") of the object."""
        tid, data = self.objects[addr]
        offset_bits, bits, size = 0, 0, 0
        for name in path.split("."):
            member = self.btf.struct_member(tid, name)
            assert member is not None, path
            offset_bits += member.offset_bits
            tid, bits = member.type_id, member.bitfield_bits
            size = self.btf.type_size(tid)
        if bits:
            start, shift = offset_bits // 8, offset_bits % 8
            nbytes = (shift + bits + 7) // 8
            word = int.from_bytes(data[start : start + nbytes], "little")
            mask = ((1 << bits) - 1) << shift
            word = (word & ~mask) | ((value << shift) & mask)
            data[start : start + nbytes] = word.to_bytes(nbytes, "little")
        else:
            start = offset_bits // 8
            raw = value & ((1 << (8 * size)) - 1)
            data[start : start + size] = raw.to_bytes(size, "big" if big else "little")

    def regions(self) -> list[tuple[int, bytes]]:
        return [(addr, bytes(data)) for addr, (_, data) in self.objects.items()]


def mini_memory(fill: int = 0) -> Memory:
    """skb -> dev -> net, every other byte ``fill`` (noise around the fields)."""
    btf, _ = mini()
    mem = Memory(btf)
    mem.add(SKB, "sk_buff", fill)
    mem.add(DEV, "net_device", fill)
    mem.add(NET, "net", fill)
    mem.set(SKB, "dev", DEV)
    mem.set(DEV, "nd_net.net", NET)
    return mem


def xdp_memory() -> Memory:
    """xdp_buff -> xdp_rxq_info -> net_device, on top of mini_memory's objects."""
    mem = mini_memory(fill=0x5A)
    mem.add(XDP_BUFF, "xdp_buff", 0x5A)
    mem.add(RXQ, "xdp_rxq_info", 0x5A)
    mem.set(XDP_BUFF, "rxq", RXQ)
    mem.set(RXQ, "dev", DEV)
    mem.set(RXQ, "queue_index", 3)
    mem.set(DEV, "ifindex", 9)
    mem.set(XDP_BUFF, "frame_sz", 4096)
    return mem


def run_filter(code: bytes, mem: Memory, skb: int = SKB, *, fault_reads: bool = False) -> int:
    return Machine(code).run((skb,), mem.regions(), fault_reads=fault_reads)


class OutMachine(Machine):
    """The interpreter, plus the event's metadata slots as writable memory."""

    def __init__(self, code: bytes) -> None:
        super().__init__(code)
        self.out = bytearray(b"\xaa" * 32)

    def _store(self, addr: int, size: int, value: int, i: int) -> None:
        if OUT <= addr < OUT + len(self.out):
            if addr + size > OUT + len(self.out) or addr % size:
                raise InterpError(f"insn {i}: bad store of {size} bytes at slot {addr - OUT}")
            self.out[addr - OUT : addr - OUT + size] = value.to_bytes(8, "little")[:size]
            return
        super()._store(addr, size, value, i)

    def slots(self) -> tuple[int, ...]:
        return struct.unpack("<4Q", self.out)


def run_metadata(
    code: bytes, mem: Memory, skb: int = SKB, *, fault_reads: bool = False
) -> tuple[int, ...]:
    m = OutMachine(code)
    assert m.run((skb, OUT), mem.regions(), fault_reads=fault_reads) == 0
    return m.slots()


# --------------------------------------------------------------------------
# Parsing


def test_parse_comparisons() -> None:
    c = parse_comparison("skb->dev->nd_net.net->ns.inum==0x10")
    assert [str(s) for s in c.chain] == ["->dev", "->nd_net", ".net", "->ns", ".inum"]
    assert (c.op, c.number, c.enumerator) == ("==", 16, None)
    assert parse_comparison("  skb -> mark  =  7 ").op == "=="  # cilium/pwru's '='
    assert parse_comparison("skb->mark != 0o17").number == 15
    assert parse_comparison("skb->mark >= 0b101").number == 5
    assert parse_comparison("skb->mark <= 42UL").number == 42
    assert parse_comparison("skb->mark < 0").number == 0
    assert parse_comparison("skb->tstamp > -0x10").number == -16
    assert parse_comparison("skb->mark & 0x4").op == "&"
    named = parse_comparison("skb->temp == -COLD")
    assert (named.number, named.enumerator, named.negative) == (None, "COLD", True)


BAD_SYNTAX = [
    ("", "empty expression"),
    ("skb", "name a member of skb"),
    ("dev->ifindex == 1", "must start with skb"),
    ("skbx->mark == 1", "must start with skb"),
    ("skb->mark", "missing comparison"),
    ("skb->mark ==", "expected a number or an enum name after '==', found nothing"),
    ("skb->mark == == 1", "expected a number or an enum name"),
    ("skb-> == 1", "expected a member name after '->'"),
    ("skb->mark 1", "expected an operator"),
    ("skb->mark ~ 1", r"unexpected character '~' at position 10"),
    ("skb->mark == 1 && skb->len > 2", "unexpected '&'"),
    ("skb->mark == 0xZZ", "bad constant '0xZZ'"),
    ("skb->mark == 12abc", "bad constant '12abc'"),
    ("skb->mark == 0x", "bad constant '0x'"),
    ("skb->mark == 010", "ambiguous constant '010': write 0o10 for octal or 10 for decimal"),
    ("skb->mark == 1.5", "unexpected '.' after the constant"),
    ("skb->mark == 1 2", "unexpected '2' after the constant"),
]


@pytest.mark.parametrize(("expr", "message"), BAD_SYNTAX)
def test_syntax_errors(expr: str, message: str) -> None:
    btf, _ = mini()
    with pytest.raises(SkbExprError, match=message) as info:
        compile_filter_expr(expr, btf)
    text = str(info.value)
    assert text.startswith(f"invalid --filter-skb-expr {expr!r}: ")
    assert "\n" not in text
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


BAD_MEANING = [
    ("skb->mrk == 1", r"struct sk_buff has no member 'mrk' \(did you mean 'mark'\?\)"),
    ("skb->devv->ifindex == 1", r"no member 'devv' \(did you mean 'dev'\?\)"),
    ("skb->dev->ifindx == 1", r"struct net_device has no member 'ifindx' \(did you mean 'ifindex'"),
    ("skb->zzzzzz == 1", r"struct sk_buff has no member 'zzzzzz'$"),
    ("skb.mark == 1", r"skb is a pointer \(struct sk_buff \*\): use '->mark'"),
    ("skb->dev.ifindex == 1", r"skb->dev is a pointer \(struct net_device \*\): use '->ifindex'"),
    ("skb->users->refs == 1", r"skb->users is not a pointer \(refcount_t\).*: use '\.'"),
    ("skb->mark->x == 1", r"skb->mark is not a pointer \(unsigned int\)"),
    ("skb->mark.x == 1", r"skb->mark has type unsigned int, not a struct or union"),
    ("skb->head->x == 1", r"skb->head points to unsigned char, not a struct or union"),
    (
        "skb->sk->sk_mark == 1",
        r"skb->sk points to struct sock \(declared only\), not a struct or union",
    ),
    (
        "skb->users == 1",
        r"skb->users has type refcount_t: name one of its members, e\.g\. skb->users\.refs",
    ),
    ("skb->dev->nd_net == 1", r"has type possible_net_t: name one of its members"),
    ("skb->cb == 1", r"skb->cb has type unsigned char\[\]; only integers, enums and pointers"),
    ("skb->weight == 1", r"skb->weight has type double; only integers"),
    ("skb->huge == 1", r"skb->huge is 16 bytes wide"),
    ("skb->mark == NOPE", r"unknown name 'NOPE': no enum of the kernel has it \(a #define"),
    ("skb->mark == GREN", r"unknown name 'GREN'.*did you mean 'GREEN'"),
    ("skb->dev->color == BLU", r"did you mean 'BLUE'"),
    ("skb->mark == TWICE", r"TWICE has different values in different kernel enums \(1, 2\)"),
    (
        "skb->mark == 0x100000000",
        r"0x100000000 does not fit skb->mark \(unsigned int\), which holds 0\.\.4294967295",
    ),
    ("skb->mark == -1", r"-1 does not fit skb->mark"),
    ("skb->protocol == 0x10000", r"does not fit skb->protocol \(__be16\), which holds 0\.\.65535"),
    (
        "skb->pkt_type == 8",
        r"8 does not fit skb->pkt_type \(3-bit bitfield, unsigned\), which holds 0\.\.7",
    ),
    (
        "skb->sbits == 16",
        r"16 does not fit skb->sbits \(5-bit bitfield, signed\), which holds -16\.\.15",
    ),
    ("skb->sbits == -17", r"-17 does not fit"),
    ("skb->small > 40000", r"40000 does not fit skb->small \(short\), which holds -32768\.\.32767"),
    ("skb->pkt_type == -HOT", r"-HOT \(-40\) does not fit skb->pkt_type"),
    ("skb->wide & 0x10000000000", r"0x10000000000 does not fit skb->wide \(40-bit bitfield"),
    ("skb->anon == 256", r"does not fit"),
    ("skb->mark & 0", r"'& 0' never matches"),
]


@pytest.mark.parametrize(("expr", "message"), BAD_MEANING)
def test_meaning_errors(expr: str, message: str) -> None:
    btf, _ = mini()
    with pytest.raises(SkbExprError, match=message) as info:
        compile_filter_expr(expr, btf)
    assert str(info.value).startswith(f"invalid --filter-skb-expr {expr!r}: ")


def test_metadata_errors() -> None:
    btf, _ = mini()
    five = ["skb->mark", "skb->len", "skb->hash", "skb->protocol", "skb->pkt_type"]
    with pytest.raises(SkbExprError, match="at most 4 fields, got 5"):
        compile_metadata(five, btf)
    with pytest.raises(
        SkbExprError, match=r"invalid --output-skb-metadata 'skb->mark == 1': .*not a comparison"
    ):
        compile_metadata(["skb->mark == 1"], btf)
    with pytest.raises(
        SkbExprError,
        match=r"'skb->markk': struct sk_buff has no member 'markk' \(did you mean 'mark'",
    ):
        compile_metadata(["skb->mark", "skb->markk"], btf)
    with pytest.raises(SkbExprError, match="no field given"):
        compile_metadata(["", " "], btf)
    with pytest.raises(SkbExprError, match="name one of its members"):
        compile_metadata(["skb->users"], btf)
    # an empty entry (a trailing comma) is skipped, as cilium/pwru does
    _, fields = compile_metadata(["skb->mark", ""], btf)
    assert [f.expr for f in fields] == ["skb->mark"]


# --------------------------------------------------------------------------
# The filter, run


def test_code_shape() -> None:
    btf, _ = mini()
    insns = skbexpr.filter_insns("skb->dev->nd_net.net->ns.inum == 5", btf)
    assert insns[0].label == "filter_skb_expr"
    assert all(i.label is None or i.label.startswith("filter_skb_expr") for i in insns)
    code = compile_filter_expr("skb->dev->nd_net.net->ns.inum == 5", btf)
    assert code == ebpf.encode(insns)
    helpers = [i for i in ebpf.decode(code) if i.code == Class.JMP | JmpOp.CALL]
    assert len(helpers) == 3 and {i.imm for i in helpers} == {ebpf.BPF_FUNC_probe_read_kernel}
    # only r0..r3 and the frame pointer: the caller's r6..r9 are never touched
    used = {r for i in ebpf.decode(code) for r in (i.dst, i.src)}
    assert used <= {0, 1, 2, 3, 10}
    # every read lands in the one 8-byte slot below the frame pointer
    mem = [i for i in ebpf.decode(code) if i.cls in (Class.LDX, Class.STX, Class.ST)]
    assert {(i.src if i.cls == Class.LDX else i.dst, i.off) for i in mem} == {(10, -8)}


def test_chain_through_pointers_and_embedded_structs() -> None:
    btf, _ = mini()
    mem = mini_memory(fill=0x5A)
    mem.set(NET, "ns.inum", 4026531840)
    mem.set(DEV, "ifindex", 7)
    yes = compile_filter_expr("skb->dev->nd_net.net->ns.inum == 4026531840", btf)
    no = compile_filter_expr("skb->dev->nd_net.net->ns.inum == 4026531841", btf)
    assert run_filter(yes, mem) == 1
    assert run_filter(no, mem) == 0
    assert run_filter(compile_filter_expr("skb->dev->ifindex == 7", btf), mem) == 1
    # the anonymous union's other member reads the same 8 bytes
    assert run_filter(compile_filter_expr(f"skb->dev_scratch == {DEV:#x}", btf), mem) == 1


@pytest.mark.parametrize("op", ["==", "!=", "<", ">", "<=", ">=", "&"])
def test_null_pointer_or_failed_read_never_matches(op: str) -> None:
    """Whatever the operator: NULL dev, NULL net, a bad pointer, a NULL skb."""
    btf, _ = mini()
    code = compile_filter_expr(f"skb->dev->nd_net.net->ns.inum {op} 1", btf)
    always = compile_filter_expr(f"skb->dev->ifindex {op} 1", btf)
    mem = mini_memory()
    mem.set(NET, "ns.inum", 3)  # 3 matches all seven operators against 1...
    mem.set(DEV, "ifindex", {"<": 0, "!=": 3, ">": 3}.get(op, 1))
    assert run_filter(code, mem) == (0 if op in ("==", "<", "<=") else 1)
    assert run_filter(always, mem) == 1
    mem.set(SKB, "dev", 0)  # ...but not through a NULL pointer
    assert run_filter(code, mem) == 0
    assert run_filter(always, mem) == 0
    mem = mini_memory()
    mem.set(NET, "ns.inum", 3)
    mem.set(DEV, "nd_net.net", 0)
    assert run_filter(code, mem) == 0
    mem.set(DEV, "nd_net.net", UNMAPPED)  # the kernel refuses the read: -EFAULT
    assert run_filter(code, mem, fault_reads=True) == 0
    assert run_filter(code, mem, skb=0) == 0
    assert run_filter(code, mem, skb=UNMAPPED, fault_reads=True) == 0


def test_bitfields_are_isolated_from_their_neighbours() -> None:
    btf, _ = mini()
    for fill in (0x00, 0xFF, 0xA5):
        mem = mini_memory(fill)
        mem.set(SKB, "pkt_type", 5)
        mem.set(SKB, "ip_summed", 2)
        mem.set(SKB, "sbits", -3)
        mem.set(SKB, "wide", 0xAB_CDEF_0123)
        mem.set(DEV, "color", 2)
        mem.set(DEV, "up", 1)
        checks = {
            "skb->pkt_type == 5": 1,
            "skb->pkt_type == 4": 0,
            "skb->pkt_type > 4": 1,
            "skb->ip_summed == 2": 1,
            "skb->sbits == -3": 1,
            "skb->sbits < 0": 1,
            "skb->sbits < -3": 0,
            "skb->sbits > -4": 1,
            "skb->wide == 0xabcdef0123": 1,
            "skb->wide > 0xabcdef0122": 1,
            "skb->wide & 0x8000000000": 1,  # bit 39, the field's top bit
            "skb->wide <= 0xffffffffff": 1,
            "skb->dev->color == BLUE": 1,
            "skb->dev->color == GREEN": 0,
            "skb->dev->up == 1": 1,
        }
        for expr, want in checks.items():
            got = run_filter(compile_filter_expr(expr, btf), mem)
            assert got == want, (expr, fill)


def test_big_endian_fields_compare_in_host_order() -> None:
    btf, _ = mini()
    mem = mini_memory()
    mem.set(SKB, "protocol", 0x0800, big=True)
    mem.set(SKB, "daddr", 0xC0000202, big=True)  # 192.0.2.2
    mem.set(SKB, "seq", 0x0102030405060708, big=True)
    for expr, want in {
        "skb->protocol == 0x0800": 1,
        "skb->protocol == 0x0008": 0,
        "skb->protocol < 0x86dd": 1,
        "skb->protocol > 0x0700": 1,
        "skb->daddr == 0xc0000202": 1,
        "skb->daddr > 0xc0000201": 1,
        "skb->seq == 0x0102030405060708": 1,
        "skb->seq & 0x0100000000000000": 1,
    }.items():
        assert run_filter(compile_filter_expr(expr, btf), mem) == want, expr


def test_signedness_and_wide_constants() -> None:
    btf, _ = mini()
    mem = mini_memory()
    mem.set(DEV, "ifindex", -5)
    mem.set(SKB, "mark", 0xFFFF_FFFE)
    mem.set(SKB, "tstamp", -(1 << 40))
    mem.set(SKB, "temp", -10)
    mem.set(SKB, "e64", 1 << 40)
    mem.set(SKB, "small", -2)
    for expr, want in {
        "skb->dev->ifindex == -5": 1,
        "skb->dev->ifindex < 0": 1,  # a signed int: -5 is not 0xfffffffb
        "skb->dev->ifindex > -6": 1,
        "skb->dev->ifindex < 2147483647": 1,
        "skb->mark == 0xfffffffe": 1,  # does not fit an imm: compared through a register
        "skb->mark > 0x7fffffff": 1,
        "skb->mark < 0xffffffff": 1,
        "skb->mark >= 0xffffffff": 0,
        "skb->tstamp == -0x10000000000": 1,
        "skb->tstamp < -0xffffffffff": 1,
        "skb->tstamp > 0": 0,
        "skb->temp == COLD": 1,
        "skb->temp < MILD": 1,  # a signed enum
        "skb->temp == -10": 1,
        "skb->e64 == HUGE": 1,
        "skb->e64 > SMALL": 1,
        "skb->small == -2": 1,
        "skb->small < -1": 1,
        "skb->small > 32766": 0,
    }.items():
        assert run_filter(compile_filter_expr(expr, btf), mem) == want, expr


def test_enumerator_names() -> None:
    btf, _ = mini()
    mem = mini_memory()
    mem.set(SKB, "anon", 9)
    mem.set(SKB, "mark", 5)
    assert run_filter(compile_filter_expr("skb->anon == ANON_B", btf), mem) == 1
    # a name from any enum, when every enum that has it agrees on its value
    assert run_filter(compile_filter_expr("skb->mark == SAME", btf), mem) == 1
    assert run_filter(compile_filter_expr("skb->mark != GREEN", btf), mem) == 1


def test_pointers_compare_as_addresses() -> None:
    btf, _ = mini()
    mem = mini_memory()
    assert run_filter(compile_filter_expr("skb->dev != 0", btf), mem) == 1
    assert run_filter(compile_filter_expr(f"skb->dev == {DEV:#x}", btf), mem) == 1
    assert run_filter(compile_filter_expr("skb->sk == 0", btf), mem) == 1
    mem.set(SKB, "dev", 0)
    assert run_filter(compile_filter_expr("skb->dev == 0", btf), mem) == 1


# (chain, how the test writes it, lowest, highest, signed)
RANDOM_FIELDS: list[tuple[str, str, str, int, int]] = [
    ("skb->mark", "SKB", "mark", 0, (1 << 32) - 1),
    ("skb->protocol", "SKB", "protocol", 0, 0xFFFF),
    ("skb->pkt_type", "SKB", "pkt_type", 0, 7),
    ("skb->ip_summed", "SKB", "ip_summed", 0, 3),
    ("skb->sbits", "SKB", "sbits", -16, 15),
    ("skb->wide", "SKB", "wide", 0, (1 << 40) - 1),
    ("skb->tstamp", "SKB", "tstamp", -(1 << 63), (1 << 63) - 1),
    ("skb->small", "SKB", "small", -(1 << 15), (1 << 15) - 1),
    ("skb->seq", "SKB", "seq", 0, (1 << 64) - 1),
    ("skb->dev->ifindex", "DEV", "ifindex", -(1 << 31), (1 << 31) - 1),
    ("skb->dev->stat_type", "DEV", "stat_type", 0, 255),
    ("skb->dev->nd_net.net->ns.inum", "NET", "ns.inum", 0, (1 << 32) - 1),
]
PY_OPS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "&": lambda a, b: bool(a & b),
}


def _pick(rnd: random.Random, low: int, high: int) -> int:
    edges = [low, high, 0, 1, -1, low + 1, high - 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
    if rnd.random() < 0.4:
        return min(max(rnd.choice(edges), low), high)
    return rnd.randint(low, high)


def test_random_comparisons_against_python() -> None:
    """Every field shape x every operator x edge and random values and constants."""
    btf, _ = mini()
    rnd = random.Random(0x736B62)
    bases = {"SKB": SKB, "DEV": DEV, "NET": NET}
    compiled: dict[str, bytes] = {}
    runs = 0
    for _ in range(60):
        mem = mini_memory(rnd.choice([0, 0xFF, rnd.getrandbits(8)]))
        values = {}
        for chain, where, path, low, high in RANDOM_FIELDS:
            values[chain] = value = _pick(rnd, low, high)
            mem.set(bases[where], path, value, big=path in ("protocol", "seq"))
        regions = mem.regions()
        for chain, _, _, low, high in RANDOM_FIELDS:
            for op, fn in PY_OPS.items():
                constant = _pick(rnd, low, high)
                if op == "&" and constant == 0:
                    constant = 1
                expr = f"{chain} {op} {constant}"
                code = compiled.get(expr)
                if code is None:
                    code = compiled[expr] = compile_filter_expr(expr, btf)
                got = Machine(code).run((SKB,), regions)
                assert got == int(fn(values[chain], constant)), (expr, values[chain])
                runs += 1
    assert runs == 60 * len(RANDOM_FIELDS) * len(PY_OPS)


# --------------------------------------------------------------------------
# Metadata, run


def test_metadata_values_and_failures() -> None:
    btf, _ = mini()
    code, fields = compile_metadata(
        ["skb->mark", "skb->dev->ifindex", "skb->protocol", "skb->dev->nd_net.net->ns.inum"], btf
    )
    mem = mini_memory(0xEE)
    mem.set(SKB, "mark", 0x42)
    mem.set(DEV, "ifindex", -2)
    mem.set(SKB, "protocol", 0x86DD, big=True)
    mem.set(NET, "ns.inum", 4026532000)
    slots = run_metadata(code, mem)
    assert slots == (0x42, (1 << 64) - 2, 0x86DD, 4026532000)
    assert [f.value(s) for f, s in zip(fields, slots)] == [0x42, -2, 0x86DD, 4026532000]
    # unreadable fields are 0 (the slots start as 0xaa.. here), readable ones still read
    mem.set(DEV, "nd_net.net", 0)
    assert run_metadata(code, mem) == (0x42, (1 << 64) - 2, 0x86DD, 0)
    mem.set(SKB, "dev", UNMAPPED)
    assert run_metadata(code, mem, fault_reads=True) == (0x42, 0, 0x86DD, 0)
    assert run_metadata(code, mem, skb=0) == (0, 0, 0, 0)


def test_metadata_writes_only_its_slots() -> None:
    btf, _ = mini()
    code, _ = compile_metadata(["skb->pkt_type", "skb->sbits"], btf)
    mem = mini_memory(0xFF)
    mem.set(SKB, "pkt_type", 3)
    mem.set(SKB, "sbits", -1)
    m = OutMachine(code)
    m.run((SKB, OUT), mem.regions())
    assert m.slots()[:2] == (3, (1 << 64) - 1)
    assert bytes(m.out[16:]) == b"\xaa" * 16  # the event's unused slots: left alone
    insns = ebpf.decode(code)
    # skb and the slots live in r6/r7 across the helper calls
    assert insns[0] == ebpf.mov64_reg(6, 1) and insns[1] == ebpf.mov64_reg(7, 2)


def test_metadata_descriptions() -> None:
    btf, _ = mini()
    _, fields = compile_metadata(
        ["skb->mark", "skb->dev->ifindex", "skb->protocol", "skb->dev->color"], btf
    )
    mark, ifindex, protocol, color = fields
    assert mark == MetadataField("skb->mark", 4, False, None, name="mark")
    assert (ifindex.name, ifindex.signed, ifindex.size) == ("ifindex", True, 4)
    assert (protocol.name, protocol.big_endian, protocol.size) == ("protocol", True, 2)
    assert (color.kind, color.is_enum, color.bits) == ("enum", "color", 2)
    assert color.enumerators == ((0, "RED"), (1, "GREEN"), (2, "BLUE"))
    _, (anon, temp, flag, c) = compile_metadata(
        ["skb->anon", "skb->temp", "skb->flag", "skb->c"], btf
    )
    _, (head,) = compile_metadata(["skb->head"], btf)
    assert (anon.is_enum, anon.kind, anon.size) == ("", "enum", 1)
    assert (temp.signed, temp.kind) == (True, "enum")
    assert (flag.kind, c.kind, head.kind) == ("bool", "char", "pointer")


def test_metadata_format() -> None:
    btf, _ = mini()
    _, fields = compile_metadata(
        ["skb->mark", "skb->dev->ifindex", "skb->protocol", "skb->temp"], btf
    )
    mark, ifindex, protocol, temp = fields
    assert mark.format(66) == "66"  # decimal, like cilium/pwru's " mark=66"
    assert ifindex.format((1 << 64) - 2) == "-2"
    assert protocol.format(0x0800) == "0x0800"
    assert temp.format((1 << 64) - 10) == "COLD"
    assert temp.format(3) == "3"
    _, (daddr, seq, flag, c) = compile_metadata(
        ["skb->daddr", "skb->seq", "skb->flag", "skb->c"], btf
    )
    _, (head,) = compile_metadata(["skb->head"], btf)
    assert daddr.format(0xC0000202) == "0xc0000202"
    assert seq.format(1) == "0x0000000000000001"
    assert (flag.format(0), flag.format(1)) == ("false", "true")
    assert (c.format(ord("a")), c.format(7)) == ("'a'", "0x7")
    assert head.format(0xFFFF888012345678) == "0xffff888012345678"
    assert head.format(0) == "0x0"


# --------------------------------------------------------------------------
# The session's entry point


def test_compile_skb_exprs() -> None:
    btf, _ = mini()
    nothing = compile_skb_exprs(Options(), btf)
    assert (nothing.bodies, nothing.fields, nothing.has_filter, nothing.has_metadata) == (
        {},
        [],
        False,
        False,
    )
    options = Options(filter_skb_expr="skb->mark == 1", output_skb_metadata=["skb->mark"])
    both = compile_skb_exprs(options, btf)
    assert set(both.bodies) == {"filter_skb_expr", "read_skb_metadata"}
    assert both.has_filter and both.has_metadata
    assert both.bodies["filter_skb_expr"] == compile_filter_expr("skb->mark == 1", btf)
    assert [f.expr for f in both.fields] == ["skb->mark"]
    metadata = compile_skb_exprs(Options(output_skb_metadata=["skb->pkt_type"]), btf)
    assert set(metadata.bodies) == {"read_skb_metadata"} and metadata.fields[0].bits == 3
    assert not metadata.has_filter
    with pytest.raises(SkbExprError, match="--filter-skb-expr"):
        compile_skb_exprs(Options(filter_skb_expr="skb->nope == 1"), btf)


def test_debug_listing(caplog: pytest.LogCaptureFixture) -> None:
    btf, _ = mini()
    with caplog.at_level("DEBUG", logger="pwru.filter"):
        compile_skb_exprs(
            Options(filter_skb_expr="skb->mark == 1", output_skb_metadata=["skb->mark"]), btf
        )
    text = caplog.text
    assert "filter_skb_expr for 'skb->mark == 1'" in text
    assert "call bpf_probe_read_kernel#113" in text
    assert "read_skb_metadata for skb->mark" in text


# --------------------------------------------------------------------------
# The running kernel's BTF


@cache
def kernel() -> KernelBtf:
    return KernelBtf.load()


def kernel_memory() -> Memory:
    btf = kernel()
    mem = Memory(btf)
    mem.add(SKB, "sk_buff", 0x77)
    mem.add(DEV, "net_device", 0x77)
    mem.add(NET, "net", 0x77)
    mem.set(SKB, "dev", DEV)
    mem.set(DEV, "nd_net.net", NET)
    return mem


@needs_vmlinux
def test_kernel_fields() -> None:
    btf = kernel()
    mem = kernel_memory()
    mem.set(SKB, "mark", 0x42)
    mem.set(SKB, "len", 1500)
    mem.set(SKB, "protocol", 0x86DD, big=True)
    mem.set(SKB, "pkt_type", 3)  # PACKET_OTHERHOST, a bitfield
    mem.set(SKB, "cloned", 1)
    mem.set(SKB, "hash", 0xDEADBEEF)
    mem.set(DEV, "ifindex", 2)
    mem.set(NET, "ns.inum", 4026531840)
    for expr, want in {
        "skb->mark == 0x42": 1,
        "skb->mark == 0x43": 0,
        "skb->len > 1000": 1,
        "skb->protocol == 0x86dd": 1,
        "skb->protocol == 0x0800": 0,
        "skb->pkt_type == 3": 1,
        "skb->pkt_type != 0": 1,
        "skb->cloned == 1": 1,
        "skb->hash == 0xdeadbeef": 1,
        "skb->dev->ifindex == 2": 1,
        "skb->dev->ifindex == 3": 0,
        "skb->dev->nd_net.net->ns.inum == 4026531840": 1,
        "skb->sk == 0": 0,  # 0x7777...: the fill
        "skb->dev != 0": 1,
    }.items():
        code = compile_filter_expr(expr, btf)
        assert run_filter(code, mem) == want, expr
    mem.set(SKB, "dev", 0)
    assert run_filter(compile_filter_expr("skb->dev->ifindex == 2", btf), mem) == 0
    assert run_filter(compile_filter_expr("skb->dev->ifindex != 2", btf), mem) == 0


@needs_vmlinux
def test_kernel_enums_and_drop_reasons() -> None:
    btf = kernel()
    reasons = btf.enum_values("skb_drop_reason")
    code = compile_filter_expr("skb->mark == SKB_DROP_REASON_NOT_SPECIFIED", btf)
    mem = kernel_memory()
    mem.set(SKB, "mark", reasons["SKB_DROP_REASON_NOT_SPECIFIED"])
    assert run_filter(code, mem) == 1
    with pytest.raises(SkbExprError, match=r"did you mean 'SKB_DROP_REASON_NOT_SPECIFIED'"):
        compile_filter_expr("skb->mark == SKB_DROP_REASON_NOT_SPECIFED", btf)
    with pytest.raises(SkbExprError, match=r"PACKET_HOST is a #define, not an enum.*write 0$"):
        compile_filter_expr("skb->pkt_type == PACKET_HOST", btf)
    with pytest.raises(SkbExprError, match=r"ETH_P_IPV6 is a #define.*write 0x86dd$"):
        compile_filter_expr("skb->protocol == ETH_P_IPV6", btf)
    with pytest.raises(SkbExprError, match=r"unknown name 'PACKET_HOSTT'.*a #define is not in BTF"):
        compile_filter_expr("skb->pkt_type == PACKET_HOSTT", btf)
    # an enum-typed field, when this kernel has one on net_device
    member = btf.struct_member(btf.find_type_id("net_device", Kind.STRUCT) or 0, "pcpu_stat_type")
    if member is not None and btf.kind(btf.resolve(member.type_id)) == Kind.ENUM:
        values = dict(btf.enumerators(member.type_id))
        mem.set(DEV, "pcpu_stat_type", values["NETDEV_PCPU_STAT_DSTATS"])
        expr = "skb->dev->pcpu_stat_type == NETDEV_PCPU_STAT_DSTATS"
        assert run_filter(compile_filter_expr(expr, btf), mem) == 1
        code, (field,) = compile_metadata(["skb->dev->pcpu_stat_type"], btf)
        assert field.format(run_metadata(code, mem)[0]) == "NETDEV_PCPU_STAT_DSTATS"


@needs_vmlinux
def test_kernel_errors() -> None:
    btf = kernel()
    for expr, message in [
        (
            "skb->devv->ifindex == 2",
            r"struct sk_buff has no member 'devv' \(did you mean 'dev'\?\)",
        ),
        (
            "skb->dev.ifindex == 2",
            r"skb->dev is a pointer \(struct net_device \*\): use '->ifindex'",
        ),
        ("skb->users->refs == 1", r"skb->users is not a pointer \(refcount_t\)"),
        ("skb->protocol == 0x10000", r"does not fit skb->protocol \(__be16\)"),
        ("skb->mark == SKB_DROP_REASON_NOPE_NOPE_NOPE", r"unknown name"),
    ]:
        with pytest.raises(SkbExprError, match=message):
            compile_filter_expr(expr, btf)


@needs_vmlinux
def test_kernel_metadata() -> None:
    btf = kernel()
    exprs = ["skb->mark", "skb->len", "skb->protocol", "skb->dev->ifindex"]
    code, fields = compile_metadata(exprs, btf)
    mem = kernel_memory()
    mem.set(SKB, "mark", 0x42)
    mem.set(SKB, "len", 60)
    mem.set(SKB, "protocol", 0x0800, big=True)
    mem.set(DEV, "ifindex", 2)
    slots = run_metadata(code, mem)
    assert [f.format(v) for f, v in zip(fields, slots)] == ["66", "60", "0x0800", "2"]
    assert [f.name for f in fields] == ["mark", "len", "protocol", "ifindex"]


# --------------------------------------------------------------------------
# XDP: the same compiler, rooted at struct xdp_buff


def test_xdp_filter_runs_on_xdp_buff() -> None:
    """--filter-xdp-expr 'xdp->rxq->dev->ifindex == 9': chains start at the xdp_buff and
    the code is the filter_xdp_expr stub's (the skb stub's name appears nowhere)."""
    btf, _ = mini()
    mem = xdp_memory()
    insns = skbexpr.filter_insns("xdp->rxq->dev->ifindex == 9", btf, skbexpr.XDP)
    assert insns[0].label == "filter_xdp_expr"
    assert all(i.label is None or i.label.startswith("filter_xdp_expr") for i in insns)
    yes = ebpf.encode(insns)
    no = compile_filter_expr("xdp->rxq->dev->ifindex == 8", btf, skbexpr.XDP)
    assert run_filter(yes, mem, XDP_BUFF) == 1
    assert run_filter(no, mem, XDP_BUFF) == 0
    assert run_filter(compile_filter_expr("xdp->frame_sz > 2048", btf, skbexpr.XDP), mem, XDP_BUFF)
    mem.set(XDP_BUFF, "rxq", 0)  # a NULL pointer on the way never matches
    assert run_filter(yes, mem, XDP_BUFF) == 0


def test_xdp_metadata_slots() -> None:
    btf, _ = mini()
    code, fields = compile_metadata(
        ["xdp->rxq->queue_index", "xdp->rxq->dev->ifindex", "xdp->frame_sz"], btf, skbexpr.XDP
    )
    assert [f.name for f in fields] == ["queue_index", "ifindex", "frame_sz"]
    assert run_metadata(code, xdp_memory(), XDP_BUFF) == (3, 9, 4096, 0xAAAAAAAAAAAAAAAA)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("skb->mark == 1", r"must start with xdp \(e.g. xdp->rxq->queue_index\), not .skb."),
        ("xdp", "name a member of xdp, e.g. xdp->rxq->queue_index"),
        ("xdp.rxq == 0", r"xdp is a pointer \(struct xdp_buff \*\): use '->rxq'"),
        ("xdp->rxqq == 0", r"struct xdp_buff has no member 'rxqq' \(did you mean 'rxq'"),
        ("xdp->rxq->queue_index", "missing comparison, e.g. xdp->rxq->queue_index == 0x42"),
    ],
)
def test_xdp_errors_name_the_xdp_flag(expr: str, problem: str) -> None:
    btf, _ = mini()
    with pytest.raises(SkbExprError, match=f"invalid --filter-xdp-expr .*: {problem}"):
        compile_filter_expr(expr, btf, skbexpr.XDP)
    with pytest.raises(SkbExprError, match="invalid --output-xdp-metadata 'xdp->rxq == 1'"):
        compile_metadata(["xdp->rxq == 1"], btf, skbexpr.XDP)


def test_compile_skb_exprs_for_both_roots() -> None:
    """Each option fills its own stub; XDP fields are described apart from skb ones."""
    btf, _ = mini()
    options = Options(
        filter_skb_expr="skb->mark == 1",
        output_skb_metadata=["skb->mark"],
        filter_xdp_expr="xdp->rxq->queue_index == 3",
        output_xdp_metadata=["xdp->rxq->queue_index", "xdp->frame_sz"],
    )
    result = compile_skb_exprs(options, btf)
    assert set(result.bodies) == {
        "filter_skb_expr", "read_skb_metadata", "filter_xdp_expr", "read_xdp_metadata"
    }  # fmt: skip
    assert (result.has_filter, result.has_metadata) == (True, True)
    assert (result.has_xdp_filter, result.has_xdp_metadata) == (True, True)
    assert [f.name for f in result.fields] == ["mark"]
    assert [f.name for f in result.xdp_fields] == ["queue_index", "frame_sz"]
    only_xdp = compile_skb_exprs(Options(filter_xdp_expr="xdp->frame_sz != 0"), btf)
    assert set(only_xdp.bodies) == {"filter_xdp_expr"} and not only_xdp.has_filter


@needs_vmlinux
def test_xdp_expressions_on_the_running_kernel() -> None:
    """The issue's examples compile against this kernel's struct xdp_buff."""
    btf = KernelBtf.load(VMLINUX)
    compile_filter_expr("xdp->rxq->dev->ifindex == 9", btf, skbexpr.XDP)
    _, fields = compile_metadata(["xdp->rxq->queue_index"], btf, skbexpr.XDP)
    assert (fields[0].name, fields[0].size, fields[0].signed) == ("queue_index", 4, False)
