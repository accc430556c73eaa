"""Classic BPF: the programs libpcap compiles pcap-filter expressions into.

A program is a list of :class:`CbpfInsn` ``(code, jt, jf, k)``, the layout
of ``struct sock_filter``. The machine has a 32-bit accumulator A, an index
register X, sixteen 32-bit scratch words M[0..15] and read-only access to the
packet; loads are big-endian and a load past the end of the packet ends the
program with 0 ("no match"). Conditional jumps are relative and forward
(``jt``/``jf`` are 8-bit); ``ja`` has a 32-bit ``k``, which libpcap also uses
to jump *backwards* for ``protochain``.

:func:`compile_filter` asks libpcap (through pcapy) for the program of an
expression on a link type. It tells apart an invalid expression
(:class:`FilterError`) from a valid one that can never match on that link
type, such as ``arp`` on ``DLT_RAW`` (returns ``None``).

:func:`disassemble` prints a program the way ``tcpdump -d`` does. Opcodes
are built and read with the enums of :mod:`pwru.filter.opcodes`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pwru.errors import EnvironmentProblem, UsageError
from pwru.filter.opcodes import (
    MISCOP_MASK,
    RVAL_MASK,
    SRC_MASK,
    AluOp,
    CbpfClass,
    CbpfMode,
    Class,
    JmpOp,
    MiscOp,
    Mode,
    OpcodeFields,
    Size,
    Source,
    mnemonic,
)

BPF_MEMWORDS = 16

# link types (pcap/dlt.h): the two the probes feed their filters with
DLT_EN10MB = 1
DLT_RAW = 12

_SOCK_FILTER = struct.Struct("<HBBI")


@dataclass(frozen=True)
class CbpfInsn(OpcodeFields):
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"cBPF opcode {self.code:#x} out of range")
        if not (0 <= self.jt <= 0xFF and 0 <= self.jf <= 0xFF):
            raise ValueError(f"cBPF jump offsets ({self.jt}, {self.jf}) out of range")
        if not 0 <= self.k <= 0xFFFFFFFF:
            raise ValueError(f"cBPF k {self.k:#x} is not a u32")

    @property
    def src(self) -> int:
        """Source.K or Source.X."""
        return self.code & SRC_MASK

    @property
    def rval(self) -> int:
        """Source.K or Source.A of a return."""
        return self.code & RVAL_MASK

    @property
    def miscop(self) -> int:
        return self.code & MISCOP_MASK

    @property
    def is_conditional(self) -> bool:
        return self.cls == Class.JMP and self.op != JmpOp.JA

    @property
    def sk(self) -> int:
        """k read as a signed 32-bit value (the offset of a ``ja``)."""
        return self.k - (1 << 32) if self.k >= (1 << 31) else self.k

    @classmethod
    def of(cls, raw: tuple[int, int, int, int]) -> CbpfInsn:
        return cls(*raw)


class FilterError(UsageError, ValueError):
    """libpcap refused the expression; carries the expression and libpcap's words."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(f"invalid filter expression {expression!r}: {message}")
        self.expression = expression
        self.message = message


_REJECTS_ALL = "expression rejects all packets"


def _pcapy() -> Any:
    """The pcapy module (libpcap); imported on first use so the rest of pwru works
    without it. A broken install is an environment problem, said in one line."""
    try:
        import pcapy
    except ImportError as error:
        raise EnvironmentProblem(
            f"cannot load libpcap through pcapy-ng ({error}); reinstall pwru, or install "
            "what the message names (pcapy-ng needs libstdc++)"
        ) from None
    return pcapy


def compile_filter(
    expression: str, linktype: int, *, snaplen: int = 262144, optimize: bool = True
) -> list[CbpfInsn] | None:
    """libpcap's cBPF program for ``expression`` on ``linktype`` (DLT_* value).

    Returns None when the expression is valid but can match no packet of
    this link type (libpcap: "expression rejects all packets", e.g. ``arp``
    on DLT_RAW). Raises FilterError when libpcap cannot compile it.
    """
    pcapy = _pcapy()
    try:
        program = pcapy.compile(linktype, snaplen, expression, int(optimize), 0xFFFFFFFF)
    except pcapy.PcapError as err:
        message = str(err)
        if _REJECTS_ALL in message:
            return None
        raise FilterError(expression, message) from None
    return [CbpfInsn.of(tuple(raw)) for raw in program.get_bpf()]


def encode(prog: Iterable[CbpfInsn]) -> bytes:
    """``struct sock_filter`` array (host is little-endian on every supported arch)."""
    return b"".join(_SOCK_FILTER.pack(i.code, i.jt, i.jf, i.k) for i in prog)


def decode(data: bytes) -> list[CbpfInsn]:
    if len(data) % _SOCK_FILTER.size:
        raise ValueError(f"{len(data)} bytes is not a whole number of cBPF instructions")
    return [CbpfInsn(*t) for t in _SOCK_FILTER.iter_unpack(data)]


# --------------------------------------------------------------------------
# Disassembly (tcpdump -d)

# classic BPF's ALU operations with an operand are ADD..XOR but NEG, its
# conditional jumps JEQ..JSET
_ALU_NAMES: dict[int, str] = {
    op: mnemonic(op) for op in AluOp if op <= AluOp.XOR and op != AluOp.NEG
}
_JMP_NAMES: dict[int, str] = {op: mnemonic(op) for op in JmpOp if JmpOp.JEQ <= op <= JmpOp.JSET}
_MISC_NAMES: dict[int, str] = {op: mnemonic(op) for op in MiscOp}
_SIZE_SUFFIX: dict[int, str] = {Size.W: "", Size.H: "h", Size.B: "b"}

_Operands = Optional[tuple[str, str]]  # (mnemonic, operand), None for an unknown opcode


def _ret(insn: CbpfInsn, pc: int) -> _Operands:
    operands: dict[int, str] = {Source.K: f"#{insn.k}", Source.A: "a"}
    operand = operands.get(insn.rval)
    return None if operand is None else (mnemonic(CbpfClass.RET), operand)


def _word_load(insn: CbpfInsn, name: str) -> _Operands:
    """The loads ld and ldx share: a constant, the packet length or M[k], all words."""
    operands: dict[int, str] = {
        Mode.IMM: f"#{insn.k:#x}",
        CbpfMode.LEN: "#pktlen",
        Mode.MEM: f"M[{insn.k}]",
    }
    operand = operands.get(insn.mode) if insn.size == Size.W else None
    return None if operand is None else (name, operand)


def _ld(insn: CbpfInsn, pc: int) -> _Operands:
    sized = mnemonic(Class.LD) + _SIZE_SUFFIX.get(insn.size, "?")
    if insn.mode == Mode.ABS:
        return sized, f"[{insn.k}]"
    if insn.mode == Mode.IND:
        return sized, f"[x + {insn.k}]"
    return _word_load(insn, mnemonic(Class.LD))


def _ldx(insn: CbpfInsn, pc: int) -> _Operands:
    if insn.code == Class.LDX | Size.B | CbpfMode.MSH:
        return mnemonic(Class.LDX) + _SIZE_SUFFIX[Size.B], f"4*([{insn.k}]&0xf)"
    return _word_load(insn, mnemonic(Class.LDX))


def _store(insn: CbpfInsn, pc: int) -> _Operands:
    """st (A) or stx (X) to M[k]; every other opcode bit is 0."""
    return (mnemonic(Class(insn.cls)), f"M[{insn.k}]") if insn.code == insn.cls else None


def _alu(insn: CbpfInsn, pc: int) -> _Operands:
    if insn.op == AluOp.NEG:
        return mnemonic(AluOp.NEG), ""
    name = _ALU_NAMES.get(insn.op)
    if name is None:
        return None
    return name, "x" if insn.src == Source.X else f"#{insn.k}"


def _jmp(insn: CbpfInsn, pc: int) -> _Operands:
    if insn.op == JmpOp.JA:
        return mnemonic(JmpOp.JA), str(pc + 1 + insn.sk)
    name = _JMP_NAMES.get(insn.op)
    if name is None:
        return None
    return name, "x" if insn.src == Source.X else f"#{insn.k:#x}"


def _misc(insn: CbpfInsn, pc: int) -> _Operands:
    name = _MISC_NAMES.get(insn.miscop)
    return None if name is None else (name, "")


_OPERANDS: dict[int, Callable[[CbpfInsn, int], _Operands]] = {
    Class.LD: _ld,
    Class.LDX: _ldx,
    Class.ST: _store,
    Class.STX: _store,
    Class.ALU: _alu,
    Class.JMP: _jmp,
    CbpfClass.RET: _ret,
    CbpfClass.MISC: _misc,
}


def format_insn(insn: CbpfInsn, pc: int) -> str:
    """Instruction ``pc`` of a program, as one ``tcpdump -d`` line."""
    parts = _OPERANDS[insn.cls](insn, pc)
    if parts is None:
        return f"({pc:03d}) unimp    {insn.code:#x}"
    op, operand = parts
    if insn.is_conditional:
        return f"({pc:03d}) {op:<8} {operand:<16} jt {pc + 1 + insn.jt}\tjf {pc + 1 + insn.jf}"
    return f"({pc:03d}) {op:<8} {operand}"


def disassemble(prog: Sequence[CbpfInsn]) -> list[str]:
    """The program as ``tcpdump -d`` prints it."""
    return [format_insn(insn, pc) for pc, insn in enumerate(prog)]


def _valid_codes() -> frozenset[int]:
    ret, misc, ld, ldx = CbpfClass.RET, CbpfClass.MISC, Class.LD, Class.LDX
    codes = {ret | Source.K, ret | Source.A, misc | MiscOp.TAX, misc | MiscOp.TXA}
    codes |= {ld | size | mode for size in _SIZE_SUFFIX for mode in (Mode.ABS, Mode.IND)}
    word_modes = (Mode.IMM, Mode.MEM, CbpfMode.LEN)
    codes |= {cls | Size.W | mode for cls in (ld, ldx) for mode in word_modes}
    codes |= {ldx | Size.B | CbpfMode.MSH, Class.ST, Class.STX}
    codes |= {Class.ALU | AluOp.NEG, Class.JMP | JmpOp.JA}
    codes |= {Class.ALU | op | src for op in _ALU_NAMES for src in (Source.K, Source.X)}
    codes |= {Class.JMP | op | src for op in _JMP_NAMES for src in (Source.K, Source.X)}
    return frozenset(codes)


VALID_CODES = _valid_codes()


def is_valid(insn: CbpfInsn) -> bool:
    """True for the opcodes libpcap's interpreter runs (and pwru translates)."""
    return insn.code in VALID_CODES
