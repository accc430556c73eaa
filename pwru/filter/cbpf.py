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

:func:`disassemble` prints a program the way ``tcpdump -d`` does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pwru.errors import UsageError

# instruction classes
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_MISC = 0x07

# load sizes
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10

# load modes
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_LEN = 0x80
BPF_MSH = 0xA0

# ALU operations
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0

# jump operations
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40

# operand source (ALU, JMP) and return value (RET)
BPF_K = 0x00
BPF_X = 0x08
BPF_A = 0x10

# BPF_MISC operations
BPF_TAX = 0x00
BPF_TXA = 0x80

BPF_MEMWORDS = 16

# link types (pcap/dlt.h): the two the probes feed their filters with
DLT_EN10MB = 1
DLT_RAW = 12

SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1}

_SOCK_FILTER = struct.Struct("<HBBI")


@dataclass(frozen=True)
class CbpfInsn:
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
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def size(self) -> int:
        """BPF_W/H/B of a load."""
        return self.code & 0x18

    @property
    def mode(self) -> int:
        """BPF_IMM/ABS/IND/MEM/LEN/MSH of a load."""
        return self.code & 0xE0

    @property
    def op(self) -> int:
        """ALU or jump operation."""
        return self.code & 0xF0

    @property
    def src(self) -> int:
        """BPF_K or BPF_X."""
        return self.code & 0x08

    @property
    def rval(self) -> int:
        """BPF_K or BPF_A of a return."""
        return self.code & 0x18

    @property
    def miscop(self) -> int:
        return self.code & 0xF8

    @property
    def is_conditional(self) -> bool:
        return self.cls == BPF_JMP and self.op != BPF_JA

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


def compile_filter(
    expression: str, linktype: int, *, snaplen: int = 262144, optimize: bool = True
) -> list[CbpfInsn] | None:
    """libpcap's cBPF program for ``expression`` on ``linktype`` (DLT_* value).

    Returns None when the expression is valid but can match no packet of
    this link type (libpcap: "expression rejects all packets", e.g. ``arp``
    on DLT_RAW). Raises FilterError when libpcap cannot compile it.
    """
    import pcapy  # imported here so the rest of pwru works without it

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

_ALU_NAMES = {
    BPF_ADD: "add",
    BPF_SUB: "sub",
    BPF_MUL: "mul",
    BPF_DIV: "div",
    BPF_OR: "or",
    BPF_AND: "and",
    BPF_LSH: "lsh",
    BPF_RSH: "rsh",
    BPF_MOD: "mod",
    BPF_XOR: "xor",
}
_JMP_NAMES = {BPF_JEQ: "jeq", BPF_JGT: "jgt", BPF_JGE: "jge", BPF_JSET: "jset"}
_LD_SUFFIX = {BPF_W: "", BPF_H: "h", BPF_B: "b"}


def _operands(insn: CbpfInsn, pc: int) -> tuple[str, str] | None:
    """(mnemonic, operand) of a valid instruction, None for an unknown one."""
    cls, k = insn.cls, insn.k
    if cls == BPF_RET:
        operand = {BPF_K: f"#{k}", BPF_A: "a"}.get(insn.rval)
        return None if operand is None else ("ret", operand)
    if cls == BPF_LD:
        name = "ld" + _LD_SUFFIX.get(insn.size, "?")
        mode = insn.mode
        if mode == BPF_ABS:
            return name, f"[{k}]"
        if mode == BPF_IND:
            return name, f"[x + {k}]"
        if insn.size != BPF_W:
            return None
        if mode == BPF_IMM:
            return "ld", f"#{k:#x}"
        if mode == BPF_LEN:
            return "ld", "#pktlen"
        if mode == BPF_MEM:
            return "ld", f"M[{k}]"
        return None
    if cls == BPF_LDX:
        if insn.code == BPF_LDX | BPF_B | BPF_MSH:
            return "ldxb", f"4*([{k}]&0xf)"
        if insn.size != BPF_W:
            return None
        mode = insn.mode
        if mode == BPF_IMM:
            return "ldx", f"#{k:#x}"
        if mode == BPF_LEN:
            return "ldx", "#pktlen"
        if mode == BPF_MEM:
            return "ldx", f"M[{k}]"
        return None
    if cls in (BPF_ST, BPF_STX) and insn.code in (BPF_ST, BPF_STX):
        return ("st" if cls == BPF_ST else "stx"), f"M[{k}]"
    if cls == BPF_ALU:
        if insn.op == BPF_NEG:
            return "neg", ""
        alu = _ALU_NAMES.get(insn.op)
        if alu is None:
            return None
        return alu, "x" if insn.src == BPF_X else f"#{k}"
    if cls == BPF_JMP:
        if insn.op == BPF_JA:
            return "ja", str(pc + 1 + insn.sk)
        jmp = _JMP_NAMES.get(insn.op)
        if jmp is None:
            return None
        return jmp, "x" if insn.src == BPF_X else f"#{k:#x}"
    if cls == BPF_MISC:
        if insn.miscop == BPF_TAX:
            return "tax", ""
        if insn.miscop == BPF_TXA:
            return "txa", ""
    return None


def format_insn(insn: CbpfInsn, pc: int) -> str:
    """Instruction ``pc`` of a program, as one ``tcpdump -d`` line."""
    parts = _operands(insn, pc)
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
    codes = {BPF_RET | BPF_K, BPF_RET | BPF_A, BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA}
    codes |= {BPF_LD | size | mode for size in (BPF_W, BPF_H, BPF_B) for mode in (BPF_ABS, BPF_IND)}
    codes |= {BPF_LD | BPF_W | mode for mode in (BPF_IMM, BPF_MEM, BPF_LEN)}
    codes |= {BPF_LDX | BPF_W | mode for mode in (BPF_IMM, BPF_MEM, BPF_LEN)}
    codes |= {BPF_LDX | BPF_B | BPF_MSH, BPF_ST, BPF_STX, BPF_ALU | BPF_NEG, BPF_JMP | BPF_JA}
    codes |= {BPF_ALU | op | src for op in _ALU_NAMES for src in (BPF_K, BPF_X)}
    codes |= {BPF_JMP | op | src for op in _JMP_NAMES for src in (BPF_K, BPF_X)}
    return frozenset(codes)


VALID_CODES = _valid_codes()


def is_valid(insn: CbpfInsn) -> bool:
    """True for the opcodes libpcap's interpreter runs (and pwru translates)."""
    return insn.code in VALID_CODES
