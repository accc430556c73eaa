"""--filter-skb-expr / --output-skb-metadata (and their XDP twins): stub code from BTF.

``--filter-skb-expr 'skb->dev->ifindex == 2'`` keeps only the skbs for which a
comparison holds; ``--output-skb-metadata 'skb->hash,skb->mark'`` adds up to four
fields to every event. Both name a field by one C member-access chain that starts
at ``skb`` (``->`` follows a pointer, ``.`` enters an embedded struct or union,
members of anonymous structs/unions are found as in C), e.g.
``skb->dev->nd_net.net->ns.inum``. ``--filter-xdp-expr`` and ``--output-xdp-metadata``
do the same for the ``struct xdp_buff`` of XDP programs (--filter-trace-xdp), with
chains that start at ``xdp``: ``xdp->rxq->dev->ifindex == 9``,
``xdp->rxq->queue_index``. A filter compares that field with a constant::

    chain  OP  constant       OP: == (or =, as cilium/pwru accepts)  !=  <  <=  >  >=
                                  &  ("has any of these bits")
                              constant: 42, -1, 0x2a, 0o52, 0b101010 (C suffixes u/l
                              allowed), or an enumerator name from the kernel's BTF,
                              e.g. SKB_DROP_REASON_NOT_SPECIFIED

Offsets come from the running kernel's BTF, so the code is exact for this
kernel and needs no CO-RE relocation. The generated bodies replace the stubs
of bpf/pwru.bpf.c (spliced like the pcap filters, see pwru/splice.py):

* ``filter_skb_expr(struct sk_buff *skb)``: r1 = skb; r0 = 1 to keep the skb, 0 not.
* ``read_skb_metadata(struct sk_buff *skb, __u64 *out)``: r1 = skb, r2 = the
  event's four u64 slots (ring-buffer memory, written with plain stores); r0 = 0.
* ``filter_xdp_expr(struct xdp_buff *xdp)``, ``read_xdp_metadata(struct xdp_buff *xdp,
  __u64 *out)``: the same with r1 = the xdp_buff (a ``Root`` says which).

Every read goes through ``bpf_probe_read_kernel`` into the subprogram's own
stack (r10 - 8); a NULL pointer anywhere in the chain, or a read the kernel
refuses, means "no match" for the filter and 0 for a metadata field.

Decisions (what a value *is* before it is compared or stored):

* Big-endian fields (a typedef named ``__be16``/``__be32``/``__be64`` on the way
  to the integer type, like ``skb->protocol``) are byte-swapped to host order,
  so ``skb->protocol == 0x0800`` means IPv4 as users write it and ``<``/``>``
  order numerically. cilium/pwru gets the same ``==`` answers by swapping the
  constant instead; its metadata output shows the raw (swapped) number, pwru
  the host-order one, in hex (``protocol=0x0800``, like the PROTO column).
* Signed integers and signed enums are sign-extended to 64 bits and compared
  with signed jumps; unsigned ones are zero-extended. Metadata slots hold the
  same 64-bit value (two's complement for negative numbers).
* Bitfields (``skb->pkt_type``, ``skb->cloned``) read the fewest bytes (1, 2, 4
  or 8) that cover the field, then shift it out; signed bitfields are
  sign-extended. Bit numbering is little-endian, as on every CPU pwru supports.
* A constant must fit the field (``skb->protocol == 0x10000`` is an error, not
  a filter that never matches); comparisons are 64-bit, so no constant is
  silently truncated.
* Pointer fields can be compared and printed (``skb->sk != 0``); structs,
  unions, arrays and floats cannot.

Unlike cilium/pwru, ``.`` and ``->`` must be used as in C (cilium/pwru accepts
either and decides from the type); the error says which one to write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from pwru.errors import UsageError
from pwru.filter import ebpf
from pwru.filter.ebpf import (
    FP,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    Builder,
    Insn,
)
from pwru.filter.opcodes import AluOp, JmpOp
from pwru.kernel.btf import TRANSPARENT_KINDS, KernelBtf, Kind
from pwru.options import MAX_SKB_METADATA, Options

log = logging.getLogger("pwru.filter")


@dataclass(frozen=True)
class Root:
    """Where expressions start: the name they begin with, its struct, the stubs whose
    bodies they become and the flags that give them (for messages)."""

    name: str  # "skb"
    struct: str  # "sk_buff"
    example: str  # a member chain for messages: "skb->mark"
    filter_stub: str
    metadata_stub: str
    filter_flag: str
    metadata_flag: str


SKB = Root(
    "skb", "sk_buff", "skb->mark",
    "filter_skb_expr", "read_skb_metadata", "--filter-skb-expr", "--output-skb-metadata",
)  # fmt: skip
XDP = Root(
    "xdp", "xdp_buff", "xdp->rxq->queue_index",
    "filter_xdp_expr", "read_xdp_metadata", "--filter-xdp-expr", "--output-xdp-metadata",
)  # fmt: skip

_BUF = -8  # the stack slot every read lands in
_MASK64 = (1 << 64) - 1
_S32_MIN, _S32_MAX = -(1 << 31), (1 << 31) - 1

# BTF_INT_* encoding bits (include/uapi/linux/btf.h)
_INT_CHAR = 2
_INT_BOOL = 4

# operator -> (unsigned jump, signed jump)
_JUMPS = {
    "==": (JmpOp.JEQ, JmpOp.JEQ),
    "!=": (JmpOp.JNE, JmpOp.JNE),
    "<": (JmpOp.JLT, JmpOp.JSLT),
    "<=": (JmpOp.JLE, JmpOp.JSLE),
    ">": (JmpOp.JGT, JmpOp.JSGT),
    ">=": (JmpOp.JGE, JmpOp.JSGE),
    "&": (JmpOp.JSET, JmpOp.JSET),
}


class SkbExprError(UsageError):
    """An expression pwru cannot turn into code: the message names the flag, the
    expression and what is wrong, on one line."""

    def __init__(self, flag: str, expr: str, problem: str) -> None:
        super().__init__(f"invalid {flag} {expr!r}: {problem}")
        self.flag = flag
        self.expr = expr
        self.problem = problem


class _Problem(Exception):
    """Raised below the public functions, which add the flag and the expression."""


# --------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Step:
    """One member access: ``->name`` (arrow) or ``.name``."""

    arrow: bool
    name: str

    def __str__(self) -> str:
        return ("->" if self.arrow else ".") + self.name


@dataclass(frozen=True)
class Comparison:
    """``chain op constant``; the constant is a number or an enumerator name."""

    chain: tuple[Step, ...]
    op: str  # one of _JUMPS ("=" is stored as "==")
    number: int | None
    enumerator: str | None
    negative: bool = False  # "-NAME"
    text: str = ""  # the constant as written, for messages


_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "=", "&")
_NUMBER = re.compile(
    r"(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0|[1-9][0-9]*)"  # value
    r"([uU]?[lL]{0,2}|[lL]{1,2}[uU])"  # C suffix
)
_WORD = re.compile(r"\w+", re.ASCII)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, text) pairs: name, number, arrow, dot, op, minus."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("->", i):
            yield "arrow", "->"
            i += 2
        elif c == ".":
            yield "dot", "."
            i += 1
        elif c == "-":
            yield "minus", "-"
            i += 1
        elif c.isascii() and (c.isalnum() or c == "_"):
            m = _WORD.match(text, i)
            assert m is not None
            yield ("number" if c.isdigit() else "name"), m.group()
            i = m.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                raise _Problem(f"unexpected character {c!r} at position {i}")
            yield "op", op
            i += len(op)


def parse_number(text: str) -> int:
    """A C integer literal: decimal, 0x, 0o or 0b, with an optional u/l suffix."""
    m = _NUMBER.fullmatch(text)
    if m is None:
        if re.fullmatch(r"0[0-9]+[uUlL]*", text):
            raise _Problem(
                f"ambiguous constant {text!r}: write 0o{text[1:]} for octal "
                f"or {text.lstrip('0')} for decimal"
            )
        raise _Problem(f"bad constant {text!r} (use decimal, 0x hex, 0o octal or 0b binary)")
    return int(m.group(1), 0)


class _Parser:
    def __init__(self, text: str, root: Root) -> None:
        self.toks = list(_tokens(text))
        self.pos = 0
        self.root = root

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> tuple[str, str] | None:
        tok = self.peek()
        self.pos += tok is not None
        return tok

    def chain(self) -> tuple[Step, ...]:
        first = self.take()
        root = self.root
        if first is None:
            raise _Problem("empty expression")
        if first != ("name", root.name):
            raise _Problem(f"must start with {root.name} (e.g. {root.example}), not {first[1]!r}")
        steps: list[Step] = []
        while (tok := self.peek()) is not None and tok[0] in ("arrow", "dot"):
            self.take()
            name = self.take()
            if name is None or name[0] != "name":
                found = "the end" if name is None else repr(name[1])
                raise _Problem(f"expected a member name after {tok[1]!r}, found {found}")
            steps.append(Step(tok[0] == "arrow", name[1]))
        if not steps:
            raise _Problem(f"name a member of {root.name}, e.g. {root.example}")
        return tuple(steps)

    def end(self, what: str) -> None:
        tok = self.peek()
        if tok is not None:
            raise _Problem(f"unexpected {tok[1]!r} after {what}")


def parse_chain(text: str, root: Root = SKB) -> tuple[Step, ...]:
    """The member-access chain of an --output-skb-metadata field."""
    p = _Parser(text, root)
    chain = p.chain()
    p.end(f"the member access ({root.metadata_flag} takes a field, not a comparison)")
    return chain


def parse_comparison(text: str, root: Root = SKB) -> Comparison:
    """``skb->a->b OP constant``."""
    p = _Parser(text, root)
    chain = p.chain()
    op = p.take()
    if op is None:
        raise _Problem(f"missing comparison, e.g. {root.example} == 0x42")
    if op[0] != "op":
        raise _Problem(
            f"expected an operator (== != < <= > >= &) after the member, found {op[1]!r}"
        )
    negative = False
    value = p.take()
    if value is not None and value[0] == "minus":
        negative = True
        value = p.take()
    if value is None or value[0] not in ("number", "name"):
        found = "nothing" if value is None else repr(value[1])
        raise _Problem(f"expected a number or an enum name after {op[1]!r}, found {found}")
    p.end("the constant")
    name = "==" if op[1] == "=" else op[1]
    written = ("-" if negative else "") + value[1]
    if value[0] == "number":
        number = parse_number(value[1])
        return Comparison(chain, name, -number if negative else number, None, text=written)
    return Comparison(chain, name, None, value[1], negative, written)


def type_text(btf: KernelBtf, tid: int, depth: int = 0) -> str:
    """A C spelling of a type for messages: ``struct net_device *``, ``__u32``."""
    kind = btf.kind(tid)
    name = btf.type_name(tid)
    if depth > 8:
        return "..."
    if kind == Kind.PTR:
        return type_text(btf, btf.target(tid), depth + 1) + " *"
    if kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
        return type_text(btf, btf.target(tid), depth + 1)
    if kind == Kind.ARRAY:
        return type_text(btf, btf.target(tid), depth + 1) + "[]"
    tag = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ", Kind.ENUM64: "enum "}
    if kind in tag:
        return tag[kind] + (name or "(anonymous)")
    if kind == Kind.FWD:
        return f"struct {name} (declared only)"
    return name or kind.name.lower()


def _big_endian(btf: KernelBtf, tid: int) -> bool:
    """A ``__be*`` typedef on the way from ``tid`` to its integer type."""
    for _ in range(64):
        kind = btf.kind(tid)
        if kind not in TRANSPARENT_KINDS:
            return False
        if kind == Kind.TYPEDEF and btf.type_name(tid).startswith("__be"):
            return True
        tid = btf.target(tid)
    return False


def _suggest(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str:
    import difflib  # only for a misspelt name

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------
# Resolving a chain into reads


@dataclass(frozen=True)
class Access:
    """How to read a field from the skb address.

    ``derefs``: byte offsets, in order, of the pointers to follow (each relative
    to the previous pointer, the first to skb); then ``size`` bytes at
    ``offset`` from the last pointer, whose bits ``shift`` .. ``shift + bits``
    are the value.
    """

    text: str  # the chain as written, normalised: skb->dev->ifindex
    name: str  # its last member: ifindex
    derefs: tuple[int, ...]
    offset: int
    size: int
    shift: int
    bits: int
    type_id: int
    kind: str  # "int", "enum", "pointer", "bool", "char"
    signed: bool
    big_endian: bool
    bitfield: bool


def resolve_chain(btf: KernelBtf, chain: Sequence[Step], root: Root = SKB) -> Access:
    """Walk ``chain`` from ``struct sk_buff *skb`` (or the root's struct) through the BTF
    (see module doc)."""
    start = btf.find_type_id(root.struct, Kind.STRUCT)
    if start is None:
        raise _Problem(f"the kernel's BTF has no struct {root.struct}")
    text = root.name
    derefs: list[int] = []
    offset_bits = 0
    container: int | None = None  # struct/union the next member is looked up in
    field = 0  # type of the value reached so far (0: skb itself)
    bitfield = 0
    for step in chain:
        if step.arrow:
            if field == 0:
                container = start
            else:
                ptr = btf.resolve(field)
                if btf.kind(ptr) != Kind.PTR:
                    hint = ": use '.'" if _is_aggregate(btf, field) else ""
                    raise _Problem(
                        f"{text} is not a pointer ({type_text(btf, field)}), "
                        f"so '{step}' cannot follow it{hint}"
                    )
                pointee = btf.resolve(btf.target(ptr))
                if btf.kind(pointee) not in (Kind.STRUCT, Kind.UNION):
                    raise _Problem(
                        f"{text} points to {type_text(btf, btf.target(ptr))}, "
                        f"not a struct or union: '{step}' cannot follow it"
                    )
                derefs.append(offset_bits // 8)
                container = pointee
            offset_bits = 0
        else:
            if field == 0 or btf.kind(btf.resolve(field)) == Kind.PTR:
                what = f"struct {root.struct} *" if field == 0 else type_text(btf, field)
                raise _Problem(f"{text} is a pointer ({what}): use '->{step.name}'")
            if not _is_aggregate(btf, field):
                raise _Problem(
                    f"{text} has type {type_text(btf, field)}, not a struct or union: "
                    f"'{step}' cannot follow it"
                )
            container = btf.resolve(field)
        assert container is not None
        member = btf.struct_member(container, step.name)
        if member is None:
            owner = type_text(btf, container)
            raise _Problem(
                f"{owner} has no member {step.name!r}"
                + _suggest(step.name, btf.member_names(container))
            )
        offset_bits += member.offset_bits
        field = member.type_id
        bitfield = member.bitfield_bits
        text += str(step)
    return _leaf(btf, text, chain[-1].name, tuple(derefs), offset_bits, field, bitfield)


def _is_aggregate(btf: KernelBtf, tid: int) -> bool:
    return btf.kind(btf.resolve(tid)) in (Kind.STRUCT, Kind.UNION)


def _leaf(
    btf: KernelBtf,
    text: str,
    name: str,
    derefs: tuple[int, ...],
    offset_bits: int,
    tid: int,
    bitfield: int,
) -> Access:
    """The Access for a final field of type ``tid`` at ``offset_bits``."""
    real = btf.resolve(tid)
    kind = btf.kind(real)
    signed = btf.is_signed(real)
    if kind == Kind.INT:
        encoding = btf.int_encoding(real)
        leaf_kind = "bool" if encoding & _INT_BOOL else "char" if encoding & _INT_CHAR else "int"
    elif kind in (Kind.ENUM, Kind.ENUM64):
        leaf_kind = "enum"
    elif kind == Kind.PTR:
        leaf_kind = "pointer"
    elif kind in (Kind.STRUCT, Kind.UNION):
        members = btf.member_names(real)
        example = f", e.g. {text}.{members[0]}" if members else ""
        raise _Problem(f"{text} has type {type_text(btf, tid)}: name one of its members{example}")
    else:
        raise _Problem(
            f"{text} has type {type_text(btf, tid)}; only integers, enums and pointers can be used"
        )
    size = btf.type_size(real)
    if size not in (1, 2, 4, 8):
        raise _Problem(f"{text} is {size} bytes wide; pwru reads fields of 1, 2, 4 or 8 bytes")
    if bitfield:
        shift = offset_bits % 8
        need = (shift + bitfield + 7) // 8
        read = next((n for n in (1, 2, 4, 8) if n >= need), 0)
        if not read:
            raise _Problem(f"{text} is a bitfield spread over more than 8 bytes")
        return Access(
            text, name, derefs, offset_bits // 8, read, shift, bitfield, tid, leaf_kind, signed,
            False, True,
        )  # fmt: skip
    big = size > 1 and _big_endian(btf, tid)
    return Access(
        text, name, derefs, offset_bits // 8, size, 0, 8 * size, tid, leaf_kind, signed, big,
        False,
    )  # fmt: skip


# --------------------------------------------------------------------------
# Code generation


def _emit_read(b: Builder, access: Access, skb: int, fail: str) -> None:
    """r1 = the field's value (extended to 64 bits); jump to ``fail`` on a NULL
    pointer or a refused read. ``skb`` holds the sk_buff address; r1..r5 and r0
    are clobbered."""

    def probe_read(size: int) -> None:
        b.emit(*ebpf.probe_read_to_stack(_BUF, size, fail))

    b.emit(ebpf.mov64_reg(R3, skb), ebpf.jmp_imm(JmpOp.JEQ, R3, 0, fail))
    for off in access.derefs:
        if off:
            b.emit(ebpf.alu64_imm(AluOp.ADD, R3, off))
        probe_read(8)
        b.emit(ebpf.ldx_mem(8, R3, FP, _BUF), ebpf.jmp_imm(JmpOp.JEQ, R3, 0, fail))
    if access.offset:
        b.emit(ebpf.alu64_imm(AluOp.ADD, R3, access.offset))
    probe_read(access.size)
    b.emit(ebpf.ldx_mem(access.size, R1, FP, _BUF))
    width = 8 * access.size
    if access.bitfield:
        left = 64 - access.shift - access.bits
        right = 64 - access.bits
        if left:
            b.emit(ebpf.alu64_imm(AluOp.LSH, R1, left))
        if right:
            op = AluOp.ARSH if access.signed else AluOp.RSH
            b.emit(ebpf.alu64_imm(op, R1, right))
    elif access.signed and width < 64:
        b.emit(
            ebpf.alu64_imm(AluOp.LSH, R1, 64 - width),
            ebpf.alu64_imm(AluOp.ARSH, R1, 64 - width),
        )
    elif access.big_endian:
        b.emit(ebpf.endian(R1, width, big=True))


def _value_range(access: Access) -> tuple[int, int]:
    """Smallest and largest value the field can hold."""
    if access.signed:
        return -(1 << (access.bits - 1)), (1 << (access.bits - 1)) - 1
    return 0, (1 << access.bits) - 1


def _describe(btf: KernelBtf, access: Access) -> str:
    sign = "signed" if access.signed else "unsigned"
    what = f"{access.bits}-bit bitfield" if access.bitfield else type_text(btf, access.type_id)
    return f"{access.text} ({what}, {sign})" if access.bitfield else f"{access.text} ({what})"


# Names users reach for that are #defines (so not in BTF), for a helpful error.
_DEFINES = {
    "PACKET_HOST": 0,
    "PACKET_BROADCAST": 1,
    "PACKET_MULTICAST": 2,
    "PACKET_OTHERHOST": 3,
    "PACKET_OUTGOING": 4,
    "PACKET_LOOPBACK": 5,
    "ETH_P_IP": 0x0800,
    "ETH_P_ARP": 0x0806,
    "ETH_P_8021Q": 0x8100,
    "ETH_P_IPV6": 0x86DD,
    "CHECKSUM_NONE": 0,
    "CHECKSUM_UNNECESSARY": 1,
    "CHECKSUM_COMPLETE": 2,
    "CHECKSUM_PARTIAL": 3,
}


def _find_enumerator(btf: KernelBtf, name: str, access: Access) -> int:
    """Value of enumerator ``name``: the field's own enum first, then any enum."""
    if access.kind == "enum":
        for ename, value in btf.enumerators(access.type_id):
            if ename == name:
                return value
    values = {
        value for tid in btf.enum_ids() for ename, value in btf.enumerators(tid) if ename == name
    }
    if len(values) == 1:
        return values.pop()
    if values:
        listed = ", ".join(str(v) for v in sorted(values))
        raise _Problem(f"{name} has different values in different kernel enums ({listed})")
    if name in _DEFINES:
        value = _DEFINES[name]
        written = f"{value:#06x}" if value > 0xFF else str(value)
        raise _Problem(
            f"{name} is a #define, not an enum, so BTF does not know it: write {written}"
        )
    hint = ""
    if access.kind == "enum":
        hint = _suggest(name, [n for n, _ in btf.enumerators(access.type_id)])
    if not hint:
        everything = [n for tid in btf.enum_ids() for n, _ in btf.enumerators(tid)]
        # difflib over ~20k names takes a quarter second: try likely ones first
        hint = _suggest(name, [n for n in everything if n[:3] == name[:3]], cutoff=0.8)
    hint = hint or " (a #define is not in BTF: write its number)"
    raise _Problem(f"unknown name {name!r}: no enum of the kernel has it{hint}")


def _constant(btf: KernelBtf, cmp: Comparison, access: Access) -> int:
    if cmp.enumerator is not None:
        value = _find_enumerator(btf, cmp.enumerator, access)
        if cmp.negative:
            value = -value
        shown = f"{cmp.text} ({value})"
    else:
        assert cmp.number is not None
        value = cmp.number
        shown = cmp.text
    low, high = _value_range(access)
    if not low <= value <= high:
        raise _Problem(f"{shown} does not fit {_describe(btf, access)}, which holds {low}..{high}")
    if cmp.op == "&" and value == 0:
        raise _Problem("'& 0' never matches: name the bits to test, e.g. & 0x4")
    return value


def filter_insns(expr: str, btf: KernelBtf, root: Root = SKB) -> list[Insn]:
    """The body of ``filter_skb_expr`` (or the root's filter stub) for ``expr`` (first
    instruction labelled with the stub's name). Raises SkbExprError."""
    try:
        cmp = parse_comparison(expr, root)
        access = resolve_chain(btf, cmp.chain, root)
        value = _constant(btf, cmp, access)
    except _Problem as problem:
        raise SkbExprError(root.filter_flag, expr, str(problem)) from None
    name = root.filter_stub
    match, reject = f"{name}.match", f"{name}.reject"
    b = Builder()
    b.label(name)
    _emit_read(b, access, R1, reject)
    op = _JUMPS[cmp.op][access.signed]
    if _S32_MIN <= value <= _S32_MAX:
        # imm is sign-extended to 64 bits, exactly like the value when it is signed
        b.emit(ebpf.jmp_imm(op, R1, value, match))
    else:
        b.emit(ebpf.ld_imm64(R2, value & _MASK64), ebpf.jmp_reg(op, R1, R2, match))
    b.label(reject)
    b.emit(ebpf.mov32_imm(R0, 0), ebpf.exit_insn())
    b.label(match)
    b.emit(ebpf.mov32_imm(R0, 1), ebpf.exit_insn())
    return b.build()


def compile_filter_expr(expr: str, btf: KernelBtf, root: Root = SKB) -> bytes:
    """Encoded body for the ``filter_skb_expr`` stub (see module doc)."""
    return ebpf.encode(filter_insns(expr, btf, root))


# --------------------------------------------------------------------------
# Metadata


@dataclass(frozen=True)
class MetadataField:
    """One --output-skb-metadata field: what the event slot holds and how to print it.

    The slot holds the field's value extended to 64 bits (sign-extended when
    ``signed``, host order for big-endian fields, 0 when it could not be read).
    """

    expr: str  # as given on the command line
    size: int  # bytes of the field's type (a bitfield's storage type)
    signed: bool
    is_enum: str | None  # the enum's name ("" when anonymous), None when not an enum
    name: str = ""  # the label pwru prints: the last member name ("mark")
    kind: str = "int"  # "int", "enum", "pointer", "bool" or "char"
    bits: int = 0  # width of a bitfield, else 0
    big_endian: bool = False  # a __be16/__be32/__be64 field (stored in host order)
    enumerators: tuple[tuple[int, str], ...] = ()  # (value, name), for enums

    @cached_property
    def _enumerator_names(self) -> dict[int, str]:
        """value -> name (the first name of a value), for the per-event lookup."""
        names: dict[int, str] = {}
        for number, enumerator in self.enumerators:
            names.setdefault(number, enumerator)
        return names

    def value(self, raw: int) -> int:
        """The slot's u64 as the number it stands for (negative for signed fields)."""
        raw &= _MASK64
        return raw - (1 << 64) if self.signed and raw >> 63 else raw

    def format(self, raw: int) -> str:
        """The value as pwru prints it after ``name=``: decimal for integers (signed
        ones with their sign), the enumerator's name for enums (decimal when none
        matches), hex for pointers, zero-padded hex for big-endian fields,
        ``true``/``false`` for bools, a quoted character for printable chars."""
        value = self.value(raw)
        if self.kind == "pointer":
            return f"{value:#x}"
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "char" and 0x20 <= value < 0x7F:
            return repr(chr(value))
        if self.kind == "char":
            return f"{value:#x}"
        if self.kind == "enum":
            return self._enumerator_names.get(value) or str(value)
        if self.big_endian:
            return f"{value:#0{2 + 2 * self.size}x}"
        return str(value)


def _metadata_field(btf: KernelBtf, expr: str, access: Access) -> MetadataField:
    enum_name: str | None = None
    enumerators: tuple[tuple[int, str], ...] = ()
    if access.kind == "enum":
        enum_name = btf.type_name(btf.resolve(access.type_id))
        enumerators = tuple((v, n) for n, v in btf.enumerators(access.type_id))
    return MetadataField(
        expr=expr,
        size=btf.type_size(access.type_id),
        signed=access.signed,
        is_enum=enum_name,
        name=access.name,
        kind=access.kind,
        bits=access.bits if access.bitfield else 0,
        big_endian=access.big_endian,
        enumerators=enumerators,
    )


def metadata_insns(
    fields: Sequence[str], btf: KernelBtf, root: Root = SKB
) -> tuple[list[Insn], list[MetadataField]]:
    """The body of ``read_skb_metadata`` (or the root's metadata stub) and a description
    of each slot. Empty entries (``skb->mark,``) are skipped, as cilium/pwru does."""
    exprs = [f for f in fields if f.strip()]
    if len(exprs) > MAX_SKB_METADATA:
        raise SkbExprError(
            root.metadata_flag,
            ",".join(exprs),
            f"at most {MAX_SKB_METADATA} fields, got {len(exprs)}",
        )
    if not exprs:
        raise SkbExprError(root.metadata_flag, ",".join(fields), "no field given")
    accesses: list[Access] = []
    described: list[MetadataField] = []
    for expr in exprs:
        try:
            access = resolve_chain(btf, parse_chain(expr, root), root)
        except _Problem as problem:
            raise SkbExprError(root.metadata_flag, expr, str(problem)) from None
        accesses.append(access)
        described.append(_metadata_field(btf, expr, access))
    name = root.metadata_stub
    skb, out = R6, R7  # callee-saved: they survive the helper calls
    b = Builder()
    b.label(name)
    b.emit(ebpf.mov64_reg(skb, R1), ebpf.mov64_reg(out, R2))
    for i, access in enumerate(accesses):
        fail, store = f"{name}.f{i}.fail", f"{name}.f{i}.store"
        _emit_read(b, access, skb, fail)
        b.emit(ebpf.ja(store))
        b.label(fail)
        b.emit(ebpf.mov64_imm(R1, 0))
        b.label(store)
        b.emit(ebpf.stx_mem(8, out, R1, 8 * i))
    b.emit(ebpf.mov32_imm(R0, 0), ebpf.exit_insn())
    return b.build(), described


def compile_metadata(
    fields: Sequence[str], btf: KernelBtf, root: Root = SKB
) -> tuple[bytes, list[MetadataField]]:
    """Encoded body for the ``read_skb_metadata`` stub, and what each slot holds."""
    insns, described = metadata_insns(fields, btf, root)
    return ebpf.encode(insns), described


# --------------------------------------------------------------------------
# For the session


@dataclass
class SkbExprs:
    """Compiled --filter-skb-expr / --output-skb-metadata and their XDP twins: stub
    bodies by name, and each root's metadata slots (for the renderer)."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    fields: list[MetadataField] = field(default_factory=list)
    xdp_fields: list[MetadataField] = field(default_factory=list)

    @property
    def has_filter(self) -> bool:
        return SKB.filter_stub in self.bodies

    @property
    def has_metadata(self) -> bool:
        return SKB.metadata_stub in self.bodies

    @property
    def has_xdp_filter(self) -> bool:
        return XDP.filter_stub in self.bodies

    @property
    def has_xdp_metadata(self) -> bool:
        return XDP.metadata_stub in self.bodies


def compile_skb_exprs(options: Options, btf: KernelBtf) -> SkbExprs:
    """Stub bodies for the options that ask for them (none: no bodies). ``btf`` must
    describe the running kernel: the offsets in the code are its own. Raises
    SkbExprError."""
    result = SkbExprs()
    for root, expr, fields in (
        (SKB, options.filter_skb_expr, options.output_skb_metadata),
        (XDP, options.filter_xdp_expr, options.output_xdp_metadata),
    ):
        if expr.strip():
            insns = filter_insns(expr, btf, root)
            result.bodies[root.filter_stub] = _encoded(insns, root.filter_stub, repr(expr))
        if any(f.strip() for f in fields):
            insns, described = metadata_insns(fields, btf, root)
            what = ",".join(fields)
            result.bodies[root.metadata_stub] = _encoded(insns, root.metadata_stub, what)
            if root is SKB:
                result.fields = described
            else:
                result.xdp_fields = described
    return result


def _encoded(insns: list[Insn], stub: str, what: str) -> bytes:
    """The stub's body; with --debug, its instructions are logged first."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s for %s:", stub, what)
        for line in ebpf.disassemble(insns):
            log.debug("  ebpf  %s", line)
    return ebpf.encode(insns)
