"""pwru.kernel.btf: synthetic raw BTF blobs for every kind, split BTF and errors; then the
running kernel's BTF, cross-checked against bpftool."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pwru.kernel.btf import BtfError, KernelBtf, Kind, Member, SkbFunction, SkbTracepoint

VMLINUX = "/sys/kernel/btf/vmlinux"


class Builder:
    """A tiny raw-BTF encoder: each method appends one type and returns its id."""

    def __init__(self, base: Builder | None = None) -> None:
        self.base = base
        self.records: list[list[int]] = []
        self.strings = bytearray() if base else bytearray(b"\0")
        self.str_start: int = base.str_start + len(base.strings) if base else 0
        self.start_id: int = base.start_id + len(base.records) if base else 1

    def s(self, name: str) -> int:
        """Offset of ``name``, reusing the base's string table like libbpf does."""
        if not name:
            return 0
        if self.base is not None and b"\0" + name.encode() + b"\0" in self.base.strings:
            return self.base.s(name)
        needle = b"\0" + name.encode() + b"\0"
        found = self.strings.find(needle)
        if found >= 0:
            return self.str_start + found + 1
        self.strings += name.encode() + b"\0"
        return self.str_start + len(self.strings) - len(name) - 1

    def add(
        self,
        kind: Kind,
        name: str,
        word2: int,
        vlen: int = 0,
        kflag: int = 0,
        extra: tuple[int, ...] = (),
    ) -> int:
        info = kflag << 31 | kind << 24 | vlen
        self.records.append([self.s(name), info, word2, *extra])
        return self.start_id + len(self.records) - 1

    def int_(
        self, name: str, size: int, signed: bool = False, bits: int = 0, shift: int = 0
    ) -> int:
        return self.add(
            Kind.INT, name, size, extra=(int(signed) << 24 | shift << 16 | (bits or size * 8),)
        )

    def ref(self, kind: Kind, target: int, name: str = "") -> int:
        return self.add(kind, name, target)

    def array(self, elem: int, index: int, n: int) -> int:
        return self.add(Kind.ARRAY, "", 0, extra=(elem, index, n))

    def struct(
        self,
        name: str,
        size: int,
        members: list[tuple[str, int, int, int]],
        union: bool = False,
        kflag: int = 1,
    ) -> int:
        extra: list[int] = []
        for mname, mtype, offset, bits in members:
            extra += [self.s(mname), mtype, bits << 24 | offset if kflag else offset]
        kind = Kind.UNION if union else Kind.STRUCT
        return self.add(kind, name, size, len(members), kflag, tuple(extra))

    def enum(self, name: str, values: dict[str, int], signed: bool = False, size: int = 4) -> int:
        extra = [w for n, v in values.items() for w in (self.s(n), v & 0xFFFFFFFF)]
        return self.add(Kind.ENUM, name, size, len(values), int(signed), tuple(extra))

    def enum64(self, name: str, values: dict[str, int], signed: bool = False) -> int:
        extra = [
            w for n, v in values.items() for w in (self.s(n), v & 0xFFFFFFFF, v >> 32 & 0xFFFFFFFF)
        ]
        return self.add(Kind.ENUM64, name, 8, len(values), int(signed), tuple(extra))

    def proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra = [w for n, t in params for w in (self.s(n), t)]
        return self.add(Kind.FUNC_PROTO, "", ret, len(params), extra=tuple(extra))

    def func(self, name: str, params: list[tuple[str, int]], ret: int = 0) -> int:
        return self.add(Kind.FUNC, name, self.proto(ret, params), vlen=1)  # vlen: linkage global

    def tracepoint(self, name: str, args: list[tuple[str, int]], void_ptr: int) -> int:
        proto = self.proto(0, [("__data", void_ptr), *args])
        return self.ref(Kind.TYPEDEF, self.ref(Kind.PTR, proto), "btf_trace_" + name)

    def build(self, order: str = "<") -> bytes:
        types = b"".join(struct.pack(f"{order}{len(r)}I", *r) for r in self.records)
        header = struct.pack(
            f"{order}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return header + types + bytes(self.strings)


def kernel_like() -> tuple[Builder, dict[str, int]]:
    """A small base BTF shaped like vmlinux where sk_buff is concerned."""
    b = Builder()
    t: dict[str, int] = {}
    t["int"] = b.int_("int", 4, signed=True)
    t["u32"] = b.int_("unsigned int", 4)
    t["skb_fwd_ptr"] = b.ref(Kind.PTR, 4)  # refers forward: the struct comes next
    t["sk_buff"] = b.struct("sk_buff", 16, [("len", t["u32"], 0, 0), ("mark", t["u32"], 32, 0)])
    t["skb_ptr"] = t["skb_fwd_ptr"]
    t["skb_ptr_ptr"] = b.ref(Kind.PTR, t["skb_ptr"])
    t["const_skb"] = b.ref(Kind.CONST, t["sk_buff"])
    t["const_skb_ptr"] = b.ref(Kind.PTR, t["const_skb"])
    t["skb_ptr_const"] = b.ref(Kind.CONST, t["skb_ptr"])
    t["skb_t"] = b.ref(Kind.TYPEDEF, t["sk_buff"], "skb_t")
    t["skb_t_ptr"] = b.ref(Kind.PTR, t["skb_t"])
    t["void_ptr"] = b.ref(Kind.PTR, 0)
    t["other"] = b.struct("sock", 8, [("sk_mark", t["u32"], 0, 0)])
    t["other_ptr"] = b.ref(Kind.PTR, t["other"])
    return b, t


# ---- synthetic BTF -------------------------------------------------------------


def test_every_kind_is_indexed_and_walkable() -> None:
    b = Builder()
    i32 = b.int_("int", 4, signed=True)
    u8 = b.int_("unsigned char", 1)
    ptr = b.ref(Kind.PTR, i32)
    arr = b.array(u8, i32, 6)
    st = b.struct("pair", 8, [("a", i32, 0, 0), ("b", i32, 32, 0)])
    un = b.struct("either", 4, [("x", i32, 0, 0), ("y", u8, 0, 0)], union=True)
    en = b.enum("color", {"RED": 0, "GREEN": 1})
    fwd = b.add(Kind.FWD, "later", 0)
    td = b.ref(Kind.TYPEDEF, st, "pair_t")
    vol = b.ref(Kind.VOLATILE, td)
    cst = b.ref(Kind.CONST, vol)
    res = b.ref(Kind.RESTRICT, ptr)
    fn = b.func("add", [("x", i32), ("y", i32)], ret=i32)
    proto = fn - 1
    var = b.add(Kind.VAR, "counter", i32, extra=(1,))
    sec = b.add(Kind.DATASEC, ".data", 4, vlen=1, extra=(var, 0, 4))
    flt = b.add(Kind.FLOAT, "double", 8)
    tag = b.add(Kind.DECL_TAG, "user", fn, extra=(0xFFFFFFFF,))
    ttag = b.add(Kind.TYPE_TAG, "percpu", i32)
    e64 = b.enum64("big", {"HUGE": 1 << 40})
    last = b.int_("last", 2)
    btf = KernelBtf(b.build(), "test")

    kinds = {
        i32: Kind.INT,
        ptr: Kind.PTR,
        arr: Kind.ARRAY,
        st: Kind.STRUCT,
        un: Kind.UNION,
        en: Kind.ENUM,
        fwd: Kind.FWD,
        td: Kind.TYPEDEF,
        vol: Kind.VOLATILE,
        cst: Kind.CONST,
        res: Kind.RESTRICT,
        fn: Kind.FUNC,
        proto: Kind.FUNC_PROTO,
        var: Kind.VAR,
        sec: Kind.DATASEC,
        flt: Kind.FLOAT,
        tag: Kind.DECL_TAG,
        ttag: Kind.TYPE_TAG,
        e64: Kind.ENUM64,
        last: Kind.INT,
        0: Kind.VOID,
    }
    assert {tid: btf.kind(tid) for tid in kinds} == kinds
    names = {
        i32: "int",
        ptr: "",
        arr: "",
        st: "pair",
        fwd: "later",
        td: "pair_t",
        fn: "add",
        var: "counter",
        sec: ".data",
        flt: "double",
        tag: "user",
        ttag: "percpu",
        e64: "big",
        last: "last",
        0: "void",
    }
    assert {tid: btf.type_name(tid) for tid in names} == names
    assert [btf.target(x) for x in (ptr, arr, td, vol, cst, res, fn, proto, var, tag, ttag)] == [
        i32,
        u8,
        st,
        td,
        vol,
        ptr,
        proto,
        i32,
        i32,
        fn,
        i32,
    ]
    assert btf.resolve(cst) == st and btf.resolve(ttag) == i32 and btf.resolve(i32) == i32
    sizes = {i32: 4, u8: 1, arr: 6, st: 8, un: 4, en: 4, cst: 8, flt: 8, e64: 8, last: 2, ptr: 8}
    assert {tid: btf.type_size(tid) for tid in sizes} == sizes
    assert btf.is_signed(i32) and not btf.is_signed(u8) and not btf.is_signed(st)
    assert btf.func_params(fn) == [("x", i32), ("y", i32)] == btf.func_params(proto)
    assert btf.enum_values("big") == {"HUGE": 1 << 40}
    with pytest.raises(BtfError, match="no size"):
        btf.type_size(fwd)
    with pytest.raises(BtfError, match="refers to no type"):
        btf.target(st)
    with pytest.raises(BtfError, match="no type with id 99"):
        btf.kind(99)


def test_find_type_id() -> None:
    b = Builder()
    st = b.struct("thing", 4, [])
    td = b.ref(Kind.TYPEDEF, st, "thing")  # same name, other kind
    st2 = b.struct("thing", 4, [])  # a second one: the lowest id wins
    # A name offset that points into the middle of another string is legal BTF.
    b.strings += b"not_a_word\0"
    word = b.add(Kind.STRUCT, "", 0)
    b.records[-1][0] = len(b.strings) - len("a_word\0")
    btf = KernelBtf(b.build(), "test")
    assert btf.find_type_id("thing", "struct") == st != st2
    assert btf.find_type_id("thing", "typedef") == td
    assert btf.find_type_id("thing", Kind.TYPEDEF) == td
    assert btf.find_type_id("a_word", "struct") == word
    assert btf.find_type_id("thing", "union") is None
    assert btf.find_type_id("nothing", "struct") is None
    assert btf.find_type_id("", "struct") is None
    with pytest.raises(ValueError, match="unknown BTF kind"):
        btf.find_type_id("thing", "klass")


def test_struct_members_bitfields_and_anonymous_members() -> None:
    b = Builder()
    u32 = b.int_("unsigned int", 4)
    u8 = b.int_("unsigned char", 1)
    dev = b.struct("net_device", 8, [("ifindex", u32, 32, 0)])
    devp = b.ref(Kind.PTR, dev)
    inner = b.struct("", 8, [("dev", devp, 0, 0), ("dev_scratch", u32, 0, 0)], union=True)
    outer = b.struct("", 16, [("next", devp, 0, 0), ("", inner, 64, 0)])
    skb = b.struct(
        "sk_buff", 32, [("", outer, 0, 0), ("pkt_type", u8, 130, 3), ("len", u32, 160, 0)]
    )
    skb_t = b.ref(Kind.TYPEDEF, b.ref(Kind.CONST, skb), "skb_t")
    legacy_bits = b.int_("unsigned int", 4, bits=3, shift=2)
    legacy = b.struct("old", 4, [("flags", legacy_bits, 8, 0), ("whole", u32, 0, 0)], kflag=0)
    btf = KernelBtf(b.build(), "test")

    assert btf.struct_member(skb, "len") == Member(160, u32, 0)
    assert btf.struct_member(skb, "pkt_type") == Member(130, u8, 3)
    assert btf.struct_member(skb, "dev") == Member(64, devp, 0)  # through two anonymous levels
    assert btf.struct_member(skb_t, "next") == Member(0, devp, 0)
    assert btf.struct_member(btf.target(devp), "ifindex") == Member(32, u32, 0)
    assert btf.struct_member(skb, "nope") is None
    assert btf.struct_member(legacy, "flags") == Member(10, legacy_bits, 3)
    assert btf.struct_member(legacy, "whole") == Member(0, u32, 0)
    with pytest.raises(BtfError, match="not a struct or union"):
        btf.struct_member(u32, "x")


def test_enums_and_drop_reasons() -> None:
    b = Builder()
    b.enum(
        "skb_drop_reason",
        {
            "SKB_NOT_DROPPED_YET": 0,
            "SKB_CONSUMED": 1,
            "SKB_DROP_REASON_NETFILTER_DROP": 2,
            "SKB_DROP_REASON_ALIAS": 2,
        },
    )
    b.enum("signed_enum", {"MINUS_ONE": -1, "BIG": 0x7FFFFFFF}, signed=True)
    b.enum("unsigned_enum", {"TOP": 0xFFFFFFFF})
    b.enum64("e64", {"NEG": -5, "MIN": -(1 << 63)}, signed=True)
    b.enum64("u64", {"TOP": (1 << 64) - 1})
    btf = KernelBtf(b.build(), "test")
    assert btf.drop_reasons() == {
        0: "SKB_NOT_DROPPED_YET",
        1: "SKB_CONSUMED",
        2: "SKB_DROP_REASON_NETFILTER_DROP",
    }
    assert btf.enum_values("signed_enum") == {"MINUS_ONE": -1, "BIG": 0x7FFFFFFF}
    assert btf.enum_values("unsigned_enum") == {"TOP": 0xFFFFFFFF}
    assert btf.enum_values("e64") == {"NEG": -5, "MIN": -(1 << 63)}
    assert btf.enum_values("u64") == {"TOP": (1 << 64) - 1}
    assert btf.enum_values("absent") == {}
    assert KernelBtf(Builder().build(), "empty").drop_reasons() == {}


def test_skb_tracepoints() -> None:
    b, t = kernel_like()
    vp = t["void_ptr"]
    b.tracepoint("kfree_skb", [("skb", t["skb_ptr"]), ("location", vp), ("reason", t["int"])], vp)
    b.tracepoint(
        "qdisc_dequeue",
        [("q", t["other_ptr"]), ("txq", vp), ("packets", t["int"]), ("skb", t["skb_ptr"])],
        vp,
    )
    b.tracepoint("const_one", [("sk", t["other_ptr"]), ("skb", t["const_skb_ptr"])], vp)
    b.tracepoint("typedefd", [("skb", t["skb_t_ptr"]), ("again", t["skb_ptr"])], vp)
    b.tracepoint("double_ptr", [("pskb", t["skb_ptr_ptr"])], vp)
    b.tracepoint("no_skb", [("sk", t["other_ptr"])], vp)
    b.tracepoint("no_args", [], vp)
    b.ref(Kind.TYPEDEF, t["skb_ptr"], "not_a_tracepoint")
    btf = KernelBtf(b.build(), "test")
    kfree = btf.find_type_id("btf_trace_kfree_skb", "typedef")
    assert kfree is not None
    assert btf.skb_tracepoints() == [
        SkbTracepoint("const_one", 1, 2, kfree + 6),
        SkbTracepoint("kfree_skb", 0, 3, kfree),
        SkbTracepoint("qdisc_dequeue", 3, 4, kfree + 3),
        SkbTracepoint("typedefd", 0, 2, kfree + 9),
    ]


def test_release_forgets_every_type() -> None:
    b, t = kernel_like()
    btf = KernelBtf(b.build(), "test")
    assert btf.type_name(t["sk_buff"]) == "sk_buff"
    btf.release()
    with pytest.raises(BtfError, match="no type with id"):
        btf.type_name(t["sk_buff"])
    assert btf.find_type_id("sk_buff", "struct") is None
    assert btf.skb_tracepoints() == []


def test_skb_functions() -> None:
    b, t = kernel_like()
    i, skb = t["int"], t["skb_ptr"]
    ip_rcv = b.func("ip_rcv", [("skb", skb), ("dev", t["other_ptr"])])
    fifth = b.func("fifth", [("a", i), ("b", i), ("c", i), ("d", i), ("skb", skb)])
    b.func("sixth", [("a", i), ("b", i), ("c", i), ("d", i), ("e", i), ("skb", skb)])
    b.func("__netif_receive_skb_core", [("pskb", t["skb_ptr_ptr"]), ("x", i)])
    ro = b.func("reads_only", [("sk", t["other_ptr"]), ("skb", t["const_skb_ptr"])])
    cp = b.func("const_param", [("skb", t["skb_ptr_const"])])
    td = b.func("typedefd", [("skb", t["skb_t_ptr"])])
    va = b.func("variadic", [("skb", skb), ("", 0)])
    dup = b.func("dup", [("x", i), ("skb", skb)])
    b.func("dup", [("skb", skb)])  # same name, later id: ignored
    b.func("ret_only", [("x", i)], ret=skb)
    btf = KernelBtf(b.build(), "test")
    assert btf.skb_functions() == [
        SkbFunction("const_param", 0, cp),
        SkbFunction("dup", 1, dup),
        SkbFunction("fifth", 4, fifth),
        SkbFunction("ip_rcv", 0, ip_rcv),
        SkbFunction("reads_only", 1, ro),
        SkbFunction("typedefd", 0, td),
        SkbFunction("variadic", 0, va),
    ]
    assert btf.func_params(va)[-1] == ("", 0)


def test_split_btf() -> None:
    base_b, t = kernel_like()
    base_b.tracepoint("kfree_skb", [("skb", t["skb_ptr"])], t["void_ptr"])
    base_b.func("ip_rcv", [("skb", t["skb_ptr"])])
    mod = Builder(base_b)
    own_struct = mod.struct("mod_priv", 8, [("skb", t["skb_ptr"], 0, 0), ("mark", t["u32"], 32, 0)])
    own_ptr = mod.ref(Kind.PTR, t["const_skb"])  # the module's own pointer to a base type
    own_typedef = mod.ref(Kind.TYPEDEF, t["skb_ptr"], "mod_skb_ptr")
    f1 = mod.func("mod_rcv", [("priv", mod.ref(Kind.PTR, own_struct)), ("skb", t["skb_ptr"])])
    f2 = mod.func("mod_xmit", [("skb", own_ptr)])
    f3 = mod.func("mod_typedefd", [("skb", own_typedef)])
    tp = mod.tracepoint("mod_event", [("x", t["int"]), ("skb", own_typedef)], t["void_ptr"])
    mod.func("sock_only", [("sk", t["other_ptr"])])  # "sock_only" is new, "sk" is in base

    base = KernelBtf(base_b.build(), "vmlinux")
    split = KernelBtf(mod.build(), "mod", base=base)
    assert own_struct == base_b.start_id + len(base_b.records)
    assert split.type_name(t["sk_buff"]) == "sk_buff"  # base id, seen through the module
    assert split.type_name(own_struct) == "mod_priv"
    assert split.func_params(f1)[1] == ("skb", t["skb_ptr"])  # "skb" from base strings
    assert split.struct_member(own_struct, "mark") == Member(32, t["u32"], 0)
    assert split.find_type_id("sk_buff", "struct") == t["sk_buff"]
    assert split.find_type_id("mod_priv", "struct") == own_struct
    assert base.find_type_id("mod_priv", "struct") is None
    assert split.skb_functions() == [
        SkbFunction("mod_rcv", 1, f1),
        SkbFunction("mod_typedefd", 0, f3),
        SkbFunction("mod_xmit", 0, f2),
    ]
    assert [x.name for x in base.skb_functions()] == ["ip_rcv"]
    assert split.skb_tracepoints() == [SkbTracepoint("mod_event", 1, 2, tp)]
    with pytest.raises(BtfError, match="split"):
        KernelBtf(mod.build(), "mod")


def test_big_endian_blob() -> None:
    b, t = kernel_like()
    fn = b.func("ip_rcv", [("skb", t["skb_ptr"])])
    b.enum64("e", {"X": 1 << 33})
    btf = KernelBtf(b.build(">"), "be")
    assert btf.skb_functions() == [SkbFunction("ip_rcv", 0, fn)]
    assert btf.enum_values("e") == {"X": 1 << 33}
    assert btf.struct_member(t["sk_buff"], "mark") == Member(32, t["u32"], 0)


def test_load_from_file(tmp_path: Path) -> None:
    b, t = kernel_like()
    path = tmp_path / "btf"
    path.write_bytes(b.build())
    assert KernelBtf.load(str(path)).find_type_id("sk_buff", "struct") == t["sk_buff"]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", r"kernel BTF x: file is truncated \(0 bytes, no complete header\)"),
        (b"\x7fELF" + bytes(40), r"kernel BTF x: not a raw BTF file \(bad magic 0x457f\)"),
        (
            struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 1) + b"\0",
            "unsupported BTF version 2",
        ),
        (
            struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 10),
            r"truncated \(24 bytes, header says 46\)",
        ),
        (
            struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 5, 5, 1) + bytes(6),
            "not made of 4-byte words",
        ),
    ],
)
def test_malformed_headers(blob: bytes, message: str) -> None:
    with pytest.raises(BtfError, match=message):
        KernelBtf(blob, "x")


def test_malformed_types() -> None:
    b = Builder()
    b.struct("s", 8, [("a", 0, 0, 0), ("b", 0, 32, 0)])
    good = b.build()
    cut = Builder()
    cut.records = [b.records[0][:-2]]  # vlen says 2 members: 6 words, 4 are there
    cut.strings = b.strings
    with pytest.raises(BtfError, match="type section is truncated"):
        KernelBtf(cut.build(), "x")
    assert KernelBtf(good, "x").find_type_id("s", "struct") == 1
    unknown = Builder()
    unknown.add(Kind.INT, "", 4, extra=(32,))
    unknown.records[0][1] = 31 << 24
    with pytest.raises(BtfError, match="unsupported BTF type kind 31"):
        KernelBtf(unknown.build(), "x")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(BtfError) as err:
        KernelBtf.load(str(tmp_path / "missing"))
    assert str(err.value) == (
        f"cannot read kernel BTF {tmp_path / 'missing'}: No such file or "
        "directory (is CONFIG_DEBUG_INFO_BTF enabled?)"
    )
    with pytest.raises(BtfError, match="cannot read kernel BTF .*: Is a directory$"):
        KernelBtf.load(str(tmp_path))
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(BtfError, match="file is truncated"):
        KernelBtf.load(str(tmp_path / "empty"))


# ---- the running kernel --------------------------------------------------------

needs_vmlinux = pytest.mark.skipif(not os.path.exists(VMLINUX), reason="no kernel BTF")


@pytest.fixture(scope="module")
def vmlinux() -> KernelBtf:
    return KernelBtf.load()


@pytest.fixture(scope="module")
def bpftool_types() -> dict[int, tuple[str, str, dict[str, str], list[dict[str, str]]]]:
    """id -> (kind, name, attributes, items) from ``bpftool btf dump ... format raw``."""
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", VMLINUX, "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    types: dict[int, tuple[str, str, dict[str, str], list[dict[str, str]]]] = {}
    attr = re.compile(r"(\w+)=(\S+)")
    items: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.startswith("["):
            head = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
            assert head is not None, line
            items = []
            types[int(head[1])] = (head[2], head[3], dict(attr.findall(head[4])), items)
        else:
            item = dict(attr.findall(line))
            item["name"] = line.split("'")[1] if "'" in line else ""
            items.append(item)
    return types


@needs_vmlinux
@pytest.mark.kernel
def test_kernel_tracepoints(vmlinux: KernelBtf) -> None:
    tps = {tp.name: tp for tp in vmlinux.skb_tracepoints()}
    expected = {
        "kfree_skb": (0, 4),
        "consume_skb": (0, 2),
        "sock_rcvqueue_full": (1, 2),
        "udp_fail_queue_rcv_skb": (2, 3),
        "qdisc_dequeue": (3, 4),
        "qdisc_enqueue": (2, 3),
        "net_dev_queue": (0, 1),
        "netif_receive_skb": (0, 1),
        "tcp_retransmit_skb": (1, 3),
    }
    assert {name: (tps[name].skb_arg, tps[name].nargs) for name in expected} == expected
    assert tps["kfree_skb"].btf_id == vmlinux.find_type_id("btf_trace_kfree_skb", "typedef")
    assert list(tps) == sorted(tps)
    if os.uname().release.startswith("6.18."):
        assert len(tps) == 30


@needs_vmlinux
@pytest.mark.kernel
def test_kernel_drop_reasons_and_functions(vmlinux: KernelBtf) -> None:
    reasons = vmlinux.drop_reasons()
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons.values()
    assert reasons[0] == "SKB_NOT_DROPPED_YET"

    fns = {fn.name: fn for fn in vmlinux.skb_functions()}
    assert len(fns) >= 1000
    assert fns["ip_rcv"].skb_arg == 0
    assert fns["ip_rcv"].btf_id == vmlinux.find_type_id("ip_rcv", "func")
    # kfree_skb_reason() became an inline wrapper of sk_skb_reason_drop() in 6.11.
    if "kfree_skb_reason" in fns or vmlinux.find_type_id("sk_skb_reason_drop", "func") is None:
        assert fns["kfree_skb_reason"].skb_arg == 0
    else:
        assert fns["sk_skb_reason_drop"].skb_arg == 1
    assert vmlinux.find_type_id("__netif_receive_skb_core", "func") is not None
    assert "__netif_receive_skb_core" not in fns  # struct sk_buff **pskb
    assert list(fns) == sorted(fns)

    sk_buff = vmlinux.find_type_id("sk_buff", "struct")
    assert sk_buff is not None
    dev = vmlinux.struct_member(sk_buff, "dev")  # inside anonymous struct and union
    assert dev is not None and dev.bitfield_bits == 0
    net_device = vmlinux.resolve(vmlinux.target(dev.type_id))
    assert vmlinux.type_name(net_device) == "net_device"
    ifindex = vmlinux.struct_member(net_device, "ifindex")
    assert ifindex is not None and vmlinux.type_size(ifindex.type_id) == 4
    assert vmlinux.is_signed(ifindex.type_id)


@needs_vmlinux
@pytest.mark.kernel
def test_kernel_matches_bpftool(
    vmlinux: KernelBtf,
    bpftool_types: dict[int, tuple[str, str, dict[str, str], list[dict[str, str]]]],
) -> None:
    types = bpftool_types
    last = max(types)
    for tid in (1, 2, last // 2, last):
        assert (vmlinux.kind(tid).name, vmlinux.type_name(tid) or "(anon)") == types[tid][:2]
    with pytest.raises(BtfError):
        vmlinux.kind(last + 1)
    sk_buff = vmlinux.find_type_id("sk_buff", "struct")
    assert sk_buff is not None and types[sk_buff][:2] == ("STRUCT", "sk_buff")
    assert vmlinux.type_size(sk_buff) == int(types[sk_buff][2]["size"])
    len_item = next(m for m in types[sk_buff][3] if m["name"] == "len")
    assert vmlinux.struct_member(sk_buff, "len") == Member(
        int(len_item["bits_offset"]), int(len_item["type_id"]), 0
    )

    # Derive both lists again, independently, from bpftool's text.
    transparent = {"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"}

    def resolve(tid: int) -> int:
        while tid and types[tid][0] in transparent:
            tid = int(types[tid][2]["type_id"])
        return tid

    def is_skb_ptr(tid: int) -> bool:
        ptr = resolve(tid)
        if not ptr or types[ptr][0] != "PTR":
            return False
        pointee = resolve(int(types[ptr][2]["type_id"]))
        return pointee != 0 and types[pointee][:2] == ("STRUCT", "sk_buff")

    def first_skb(proto: int, skip: int, limit: int) -> int:
        params = [int(p["type_id"]) for p in types[proto][3]][skip:limit]
        return next((i for i, p in enumerate(params) if is_skb_ptr(p)), -1)

    tracepoints = []
    for tid, (kind, name, attrs, _) in types.items():
        if kind == "TYPEDEF" and name.startswith("btf_trace_"):
            proto = resolve(int(types[resolve(int(attrs["type_id"]))][2]["type_id"]))
            position = first_skb(proto, 1, 999)
            if position >= 0:
                tracepoints.append(
                    SkbTracepoint(name[10:], position, len(types[proto][3]) - 1, tid)
                )
    assert vmlinux.skb_tracepoints() == sorted(tracepoints, key=lambda tp: tp.name)

    functions: dict[str, SkbFunction] = {}
    for tid, (kind, name, attrs, _) in types.items():
        if kind == "FUNC" and name not in functions:
            position = first_skb(int(attrs["type_id"]), 0, 5)
            if position >= 0:
                functions[name] = SkbFunction(name, position, tid)
    assert vmlinux.skb_functions() == sorted(functions.values(), key=lambda fn: fn.name)


