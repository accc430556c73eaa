"""Opcode fields of classic and extended BPF, one table for both dialects.

An opcode packs an instruction class with either a size and a mode (loads
and stores) or an operation and a source (ALU, jumps), as in
include/uapi/linux/bpf_common.h and linux/bpf.h. Classic BPF (cbpf) and eBPF
(ebpf) share that layout and most values, so both build opcodes from these
enums and read their fields through :class:`OpcodeFields`. Where one value
means different things in the two dialects (class 6 is cBPF's RET and eBPF's
JMP32), each dialect has its own enum: IntEnum members with equal values would
be aliases of each other.

Member names are the kernel's macro names without ``BPF_`` (the src_reg
enums name what the value means); the disassemblers print them, lower-cased,
where the mnemonic is the name (``ld``, ``jeq``, ``tax``, ``atomic_xchg``).
"""

from __future__ import annotations

from enum import IntEnum

# the fields of an opcode (BPF_CLASS(), BPF_SIZE(), ... in bpf_common.h)
CLASS_MASK = 0x07
SIZE_MASK = 0x18
MODE_MASK = 0xE0
OP_MASK = 0xF0
SRC_MASK = 0x08
RVAL_MASK = 0x18  # classic RET: K or A
MISCOP_MASK = 0xF8  # classic MISC: TAX or TXA


class Class(IntEnum):
    """Instruction classes of both dialects (ALU is 32-bit in eBPF)."""

    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05


class CbpfClass(IntEnum):
    RET = 0x06
    MISC = 0x07


class EbpfClass(IntEnum):
    JMP32 = 0x06
    ALU64 = 0x07


class Size(IntEnum):
    """Width of a load or store; DW is eBPF only."""

    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18

    @property
    def nbytes(self) -> int:
        return _NBYTES[self]


_NBYTES = {Size.W: 4, Size.H: 2, Size.B: 1, Size.DW: 8}


class Mode(IntEnum):
    """Load/store modes of both dialects (ABS and IND read the packet)."""

    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60


class CbpfMode(IntEnum):
    LEN = 0x80  # the packet length
    MSH = 0xA0  # 4 * (P[k] & 0xf), the IPv4 header length


class EbpfMode(IntEnum):
    MEMSX = 0x80  # sign-extending load
    ATOMIC = 0xC0


class AluOp(IntEnum):
    """ALU operations; MOV, ARSH and END are eBPF only."""

    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xA0
    MOV = 0xB0
    ARSH = 0xC0
    END = 0xD0  # byte swap, see ByteOrder


class JmpOp(IntEnum):
    """Jump operations; classic BPF has JA, JEQ, JGT, JGE and JSET."""

    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0


class Source(IntEnum):
    """Operand of an ALU op or jump: the immediate (K) or the register (X).

    A, the accumulator, is what a classic RET may return instead of K (its
    field is RVAL_MASK wide)."""

    K = 0x00
    X = 0x08
    A = 0x10


class MiscOp(IntEnum):
    """Classic MISC: copy A to X (TAX) or X to A (TXA)."""

    TAX = 0x00
    TXA = 0x80


class ByteOrder(IntEnum):
    """Order an eBPF END converts to (it sits in the source bit)."""

    TO_LE = 0x00
    TO_BE = 0x08


class AtomicOp(IntEnum):
    """imm of an eBPF STX|ATOMIC, besides AluOp ADD, OR, AND and XOR (| FETCH)."""

    FETCH = 0x01
    XCHG = 0xE0 | FETCH
    CMPXCHG = 0xF0 | FETCH


class Imm64Src(IntEnum):
    """src_reg of ld_imm64 (BPF_PSEUDO_*): what the immediate refers to; 0 is a number."""

    MAP_FD = 1
    MAP_VALUE = 2
    BTF_ID = 3
    FUNC = 4
    MAP_IDX = 5
    MAP_IDX_VALUE = 6


class CallSrc(IntEnum):
    """src_reg of an eBPF call: what imm names."""

    HELPER = 0  # a helper id
    LOCAL = 1  # BPF_PSEUDO_CALL: a BPF-to-BPF call, imm is pc-relative
    KFUNC = 2  # BPF_PSEUDO_KFUNC_CALL: imm is a BTF id


class OpcodeFields:
    """The fields of ``self.code`` that both dialects' instructions read alike."""

    code: int

    @property
    def cls(self) -> int:
        return self.code & CLASS_MASK

    @property
    def size(self) -> int:
        """A Size (loads and stores)."""
        return self.code & SIZE_MASK

    @property
    def mode(self) -> int:
        """A Mode, CbpfMode or EbpfMode (loads and stores)."""
        return self.code & MODE_MASK

    @property
    def op(self) -> int:
        """An AluOp or JmpOp."""
        return self.code & OP_MASK


def mnemonic(member: IntEnum) -> str:
    """The lower-case name a disassembler prints for an opcode field."""
    return member.name.lower()
