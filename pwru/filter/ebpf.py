"""eBPF instructions as values that carry symbols.

An :class:`Insn` is one kernel ``struct bpf_insn`` (``ld_imm64`` is a single
``Insn`` that occupies two 8-byte slots). Besides the raw fields it may carry

* ``label``  -- the symbol of this instruction, and
* ``target`` -- the symbol a jump (or a BPF-to-BPF call) goes to,

so that instruction streams can be built, edited and concatenated without
hand-counted offsets: :func:`encode` resolves every ``target`` to a
pc-relative offset at the very end, and refuses dangling symbols and offsets
that do not fit their field. :func:`decode` goes the other way (numeric
offsets, no symbols); :func:`symbolize` turns numeric offsets back into
labels so that decoded code can be edited the same way.

:class:`Builder` is a small assembler: ``label()`` names the next
instruction, ``emit()`` appends; several labels on one instruction are allowed.

:func:`disassemble` prints the kernel/llvm-objdump dialect
(``r1 = *(u32 *)(r10 - 8)``, ``if w8 != 0x6 goto +3``), used by ``--debug``.

Everything here is pure Python and needs no kernel. Encodings follow
include/uapi/linux/bpf.h and bpf_common.h, with the opcode fields of
:mod:`pwru.filter.opcodes`; big-endian byte swaps (``ByteOrder.TO_BE``) assume
a little-endian target, like every architecture pwru supports.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from pwru.filter.opcodes import (
    OP_MASK,
    AluOp,
    AtomicOp,
    ByteOrder,
    CallSrc,
    Class,
    EbpfClass,
    EbpfMode,
    Imm64Src,
    JmpOp,
    Mode,
    OpcodeFields,
    Size,
    Source,
    mnemonic,
)

LD_IMM64 = Class.LD | Size.DW | Mode.IMM

# registers
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10
MAX_REG = 11

# helper ids used by pwru (enum bpf_func_id)
BPF_FUNC_probe_read_kernel = 113

HELPER_NAMES = {
    1: "map_lookup_elem",
    2: "map_update_elem",
    3: "map_delete_elem",
    4: "probe_read",
    5: "ktime_get_ns",
    6: "trace_printk",
    8: "get_smp_processor_id",
    14: "get_current_pid_tgid",
    16: "get_current_comm",
    112: "probe_read_user",
    113: "probe_read_kernel",
    114: "probe_read_user_str",
    115: "probe_read_kernel_str",
    130: "ringbuf_output",
    131: "ringbuf_reserve",
    132: "ringbuf_submit",
    133: "ringbuf_discard",
}

SLOT_SIZE = 8
_SLOT = struct.Struct("<BBhi")

_S16 = (-(1 << 15), (1 << 15) - 1)
_S32 = (-(1 << 31), (1 << 31) - 1)


class EncodeError(ValueError):
    """Instructions that cannot be turned into bytecode (dangling label, offset out of range...)."""


class DecodeError(ValueError):
    """Bytes that are not a sequence of eBPF instructions."""


def _to_s32(value: int, what: str = "imm") -> int:
    """Accept a signed or unsigned 32-bit value; return its signed form."""
    if not -(1 << 31) <= value < (1 << 32):
        raise EncodeError(f"{what} {value:#x} does not fit in 32 bits")
    return int(value - (1 << 32) if value >= (1 << 31) else value)


def _to_u64(value: int) -> int:
    if not -(1 << 63) <= value < (1 << 64):
        raise EncodeError(f"64-bit immediate {value:#x} does not fit in 64 bits")
    return value & 0xFFFF_FFFF_FFFF_FFFF


# --------------------------------------------------------------------------
# The instruction


@dataclass
class Insn(OpcodeFields):
    """One eBPF instruction; ``ld_imm64`` is one ``Insn`` with a 64-bit ``imm``.

    ``imm`` is kept signed 32-bit for ordinary instructions and unsigned 64-bit
    for ``ld_imm64`` (the constructors below normalise). ``off`` of a jump is
    ignored by :func:`encode` when ``target`` is set.
    """

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    label: str | None = None
    target: str | None = None

    @property
    def slots(self) -> int:
        """Number of 8-byte slots: 2 for ld_imm64, else 1."""
        return 2 if self.code == LD_IMM64 else 1

    @property
    def is_jump(self) -> bool:
        """A ja or conditional jump (not call, not exit)."""
        return self.cls in (Class.JMP, EbpfClass.JMP32) and self.op not in (JmpOp.CALL, JmpOp.EXIT)

    @property
    def is_conditional(self) -> bool:
        return self.is_jump and self.op != JmpOp.JA

    @property
    def is_local_call(self) -> bool:
        return self.code == Class.JMP | JmpOp.CALL and self.src == CallSrc.LOCAL

    @property
    def is_exit(self) -> bool:
        return self.code == Class.JMP | JmpOp.EXIT

    @property
    def jump_offset(self) -> int:
        """The pc-relative offset as encoded (``gotol`` keeps it in imm)."""
        if self.code == EbpfClass.JMP32 | JmpOp.JA or self.is_local_call:
            return self.imm
        return self.off

    def with_label(self, label: str | None) -> Insn:
        return dataclasses.replace(self, label=label)

    def __str__(self) -> str:
        return format_insn(self)


# --------------------------------------------------------------------------
# Constructors (names follow the kernel's BPF_* macros in lower case)

JumpTarget = Union[str, int]


def _jump(code: int, dst: int, src: int, imm: int, target: JumpTarget) -> Insn:
    """A jump to a label (str) or by a pc-relative offset (int)."""
    off, sym = (0, target) if isinstance(target, str) else (target, None)
    return Insn(code, dst, src, off, _to_s32(imm), target=sym)


def alu64_imm(op: AluOp, dst: int, imm: int) -> Insn:
    return Insn(EbpfClass.ALU64 | op | Source.K, dst, 0, 0, _to_s32(imm))


def alu64_reg(op: AluOp, dst: int, src: int) -> Insn:
    return Insn(EbpfClass.ALU64 | op | Source.X, dst, src)


def alu32_imm(op: AluOp, dst: int, imm: int) -> Insn:
    return Insn(Class.ALU | op | Source.K, dst, 0, 0, _to_s32(imm))


def alu32_reg(op: AluOp, dst: int, src: int) -> Insn:
    return Insn(Class.ALU | op | Source.X, dst, src)


def mov64_imm(dst: int, imm: int) -> Insn:
    """dst = imm, sign-extended to 64 bits."""
    return alu64_imm(AluOp.MOV, dst, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return alu64_reg(AluOp.MOV, dst, src)


def mov32_imm(dst: int, imm: int) -> Insn:
    """wdst = imm (32 bits, zero-extended): the way to load any u32 constant."""
    return alu32_imm(AluOp.MOV, dst, imm)


def mov32_reg(dst: int, src: int) -> Insn:
    return alu32_reg(AluOp.MOV, dst, src)


def neg32(dst: int) -> Insn:
    return Insn(Class.ALU | AluOp.NEG, dst)


def neg64(dst: int) -> Insn:
    return Insn(EbpfClass.ALU64 | AluOp.NEG, dst)


def endian(dst: int, bits: int, *, big: bool = True) -> Insn:
    """dst = be<bits>(dst) or le<bits>(dst); the result is zero-extended."""
    if bits not in (16, 32, 64):
        raise EncodeError(f"byte swap of {bits} bits")
    order = ByteOrder.TO_BE if big else ByteOrder.TO_LE
    return Insn(Class.ALU | AluOp.END | order, dst, 0, 0, bits)


_SIZES = {size.nbytes: size for size in Size}


def size_code(nbytes: int) -> Size:
    """The Size of an access of ``nbytes``."""
    try:
        return _SIZES[nbytes]
    except KeyError:
        raise EncodeError(f"no load/store of {nbytes} bytes") from None


def ldx_mem(nbytes: int, dst: int, src: int, off: int) -> Insn:
    """dst = *(u<8*nbytes> *)(src + off)."""
    return Insn(Class.LDX | Mode.MEM | size_code(nbytes), dst, src, off)


def stx_mem(nbytes: int, dst: int, src: int, off: int) -> Insn:
    """*(u<8*nbytes> *)(dst + off) = src."""
    return Insn(Class.STX | Mode.MEM | size_code(nbytes), dst, src, off)


def st_mem(nbytes: int, dst: int, off: int, imm: int) -> Insn:
    """*(u<8*nbytes> *)(dst + off) = imm."""
    return Insn(Class.ST | Mode.MEM | size_code(nbytes), dst, 0, off, _to_s32(imm))


def ld_imm64(dst: int, imm: int, src: int = 0) -> Insn:
    """dst = imm (64 bits); two slots. ``src`` selects a pseudo form (map fd, ...)."""
    return Insn(LD_IMM64, dst, src, 0, _to_u64(imm))


def ja(target: JumpTarget) -> Insn:
    return _jump(Class.JMP | JmpOp.JA, 0, 0, 0, target)


def jmp_imm(op: JmpOp, dst: int, imm: int, target: JumpTarget) -> Insn:
    """if dst <op> imm goto target (64-bit compare, imm sign-extended)."""
    return _jump(Class.JMP | op | Source.K, dst, 0, imm, target)


def jmp_reg(op: JmpOp, dst: int, src: int, target: JumpTarget) -> Insn:
    return _jump(Class.JMP | op | Source.X, dst, src, 0, target)


def jmp32_imm(op: JmpOp, dst: int, imm: int, target: JumpTarget) -> Insn:
    """if wdst <op> imm goto target (32-bit compare)."""
    return _jump(EbpfClass.JMP32 | op | Source.K, dst, 0, imm, target)


def jmp32_reg(op: JmpOp, dst: int, src: int, target: JumpTarget) -> Insn:
    return _jump(EbpfClass.JMP32 | op | Source.X, dst, src, 0, target)


def call_helper(helper_id: int) -> Insn:
    return Insn(Class.JMP | JmpOp.CALL, 0, 0, 0, helper_id)


def call_kfunc(btf_id: int) -> Insn:
    """A call of the vmlinux kfunc whose BTF FUNC id is ``btf_id``."""
    return Insn(Class.JMP | JmpOp.CALL, 0, CallSrc.KFUNC, 0, btf_id)


def probe_read_to_stack(slot: int, size: int, on_error: JumpTarget) -> list[Insn]:
    """bpf_probe_read_kernel(fp + slot, size, r3): copy ``size`` bytes from the kernel
    address in r3 to the stack; jump to ``on_error`` when the read fails. Clobbers r0-r5."""
    return [
        mov64_reg(R1, FP),
        alu64_imm(AluOp.ADD, R1, slot),
        mov64_imm(R2, size),
        call_helper(BPF_FUNC_probe_read_kernel),
        jmp_imm(JmpOp.JNE, R0, 0, on_error),
    ]


def call_local(target: JumpTarget) -> Insn:
    """BPF-to-BPF call; the offset lives in imm."""
    if isinstance(target, str):
        return Insn(Class.JMP | JmpOp.CALL, 0, CallSrc.LOCAL, 0, 0, target=target)
    return Insn(Class.JMP | JmpOp.CALL, 0, CallSrc.LOCAL, 0, target)


def exit_insn() -> Insn:
    return Insn(Class.JMP | JmpOp.EXIT)


# --------------------------------------------------------------------------
# Building streams


class Builder:
    """Append-only assembler with labels.

    ``label(name)`` attaches ``name`` to the next emitted instruction. An
    instruction has one ``label`` field, so when several labels land on the
    same instruction the later ones become aliases, and :meth:`build` rewrites
    targets that use an alias.
    """

    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._pending: list[str] = []
        self._alias: dict[str, str] = {}
        self._seen: set[str] = set()

    def label(self, name: str) -> None:
        if name in self._seen:
            raise EncodeError(f"label {name!r} defined twice")
        self._seen.add(name)
        self._pending.append(name)

    def emit(self, *insns: Insn) -> None:
        for insn in insns:
            if insn.label is not None:
                self.label(insn.label)
            if self._pending:
                first = self._pending[0]
                for other in self._pending[1:]:
                    self._alias[other] = first
                self._pending.clear()
                insn = insn.with_label(first)
            self._insns.append(insn)

    def __len__(self) -> int:
        return len(self._insns)

    def build(self) -> list[Insn]:
        if self._pending:
            raise EncodeError(f"label(s) {', '.join(self._pending)} at the end of the stream")
        out = []
        for insn in self._insns:
            if insn.target is not None and insn.target in self._alias:
                insn = dataclasses.replace(insn, target=self._alias[insn.target])
            out.append(insn)
        return out


def _has_target_field(insn: Insn) -> bool:
    return insn.is_jump or insn.is_local_call


def label_slots(insns: Sequence[Insn]) -> dict[str, int]:
    """Map each label to its slot index; duplicate labels are an error."""
    slots: dict[str, int] = {}
    pos = 0
    for insn in insns:
        if insn.label is not None:
            if insn.label in slots:
                raise EncodeError(f"label {insn.label!r} defined twice")
            slots[insn.label] = pos
        pos += insn.slots
    return slots


def resolve(insns: Sequence[Insn]) -> list[Insn]:
    """Copies of ``insns`` whose symbolic targets are turned into offsets.

    Labels and targets are kept (for disassembly); raises EncodeError for a
    target no instruction carries, or an offset that does not fit its field.
    """
    slots = label_slots(insns)
    out = []
    pos = 0
    for insn in insns:
        if insn.target is not None:
            if not _has_target_field(insn):
                raise EncodeError(f"target {insn.target!r} on a non-jump: {format_insn(insn)}")
            if insn.target not in slots:
                raise EncodeError(f"jump to undefined label {insn.target!r}")
            delta = slots[insn.target] - (pos + 1)
            if insn.code == EbpfClass.JMP32 | JmpOp.JA or insn.is_local_call:
                if not _S32[0] <= delta <= _S32[1]:
                    raise EncodeError(f"offset {delta} to {insn.target!r} does not fit s32")
                insn = dataclasses.replace(insn, imm=delta)
            else:
                if not _S16[0] <= delta <= _S16[1]:
                    raise EncodeError(
                        f"jump offset {delta} to {insn.target!r} does not fit s16; "
                        "the program is too long"
                    )
                insn = dataclasses.replace(insn, off=delta)
        out.append(insn)
        pos += insn.slots
    return out


def _check_reg(reg: int, insn: Insn) -> None:
    if not 0 <= reg < 16:
        raise EncodeError(f"register {reg} out of range in {insn!r}")


def encode(insns: Sequence[Insn]) -> bytes:
    """Bytecode (little-endian slots) for ``insns``, with all targets resolved."""
    chunks = []
    for insn in resolve(insns):
        _check_reg(insn.dst, insn)
        _check_reg(insn.src, insn)
        if not 0 <= insn.code <= 0xFF:
            raise EncodeError(f"opcode {insn.code:#x} out of range")
        if not _S16[0] <= insn.off <= _S16[1]:
            raise EncodeError(f"offset {insn.off} does not fit s16 in {insn!r}")
        regs = (insn.src << 4) | insn.dst
        if insn.code == LD_IMM64:
            imm = _to_u64(insn.imm)
            lo, hi = imm & 0xFFFFFFFF, imm >> 32
            chunks.append(_SLOT.pack(insn.code, regs, insn.off, _to_s32(lo)))
            chunks.append(_SLOT.pack(0, 0, 0, _to_s32(hi)))
        else:
            chunks.append(_SLOT.pack(insn.code, regs, insn.off, _to_s32(insn.imm)))
    return b"".join(chunks)


def decode(data: bytes) -> list[Insn]:
    """Instructions of ``data`` (numeric offsets, no labels)."""
    if len(data) % SLOT_SIZE:
        raise DecodeError(f"{len(data)} bytes is not a whole number of instructions")
    out = []
    i = 0
    count = len(data) // SLOT_SIZE
    while i < count:
        code, regs, off, imm = _SLOT.unpack_from(data, i * SLOT_SIZE)
        dst, src = regs & 0x0F, regs >> 4
        if code == LD_IMM64:
            if i + 1 >= count:
                raise DecodeError(f"ld_imm64 at slot {i} misses its second half")
            code2, regs2, off2, hi = _SLOT.unpack_from(data, (i + 1) * SLOT_SIZE)
            if code2 or regs2 or off2:
                raise DecodeError(f"bad second half of ld_imm64 at slot {i}")
            out.append(Insn(code, dst, src, off, ((hi & 0xFFFFFFFF) << 32) | (imm & 0xFFFFFFFF)))
            i += 2
        else:
            out.append(Insn(code, dst, src, off, imm))
            i += 1
    return out


def symbolize(insns: Sequence[Insn], prefix: str = "L") -> list[Insn]:
    """Give every numeric jump/call a symbolic target (labels ``<prefix><slot>``).

    Existing labels are reused. Afterwards instructions can be inserted or
    removed and :func:`encode` recomputes every offset.
    """
    slot_of: list[int] = []
    pos = 0
    for insn in insns:
        slot_of.append(pos)
        pos += insn.slots
    index_at = {s: i for i, s in enumerate(slot_of)}
    labels = [insn.label for insn in insns]
    targets: list[str | None] = [insn.target for insn in insns]
    for i, insn in enumerate(insns):
        if insn.target is not None or not _has_target_field(insn):
            continue
        dest = slot_of[i] + 1 + insn.jump_offset
        if dest not in index_at:
            raise DecodeError(f"jump at slot {slot_of[i]} lands outside the program or mid-insn")
        j = index_at[dest]
        if labels[j] is None:
            labels[j] = f"{prefix}{dest}"
        targets[i] = labels[j]
    return [
        dataclasses.replace(insn, label=labels[i], target=targets[i])
        for i, insn in enumerate(insns)
    ]


def remove_unreachable(insns: Sequence[Insn]) -> list[Insn]:
    """Drop instructions no path from the first one reaches (the verifier
    rejects unreachable code). Jumps must be symbolic; BPF-to-BPF call
    targets are kept as roots."""
    if not insns:
        return []
    insns = symbolize(insns, prefix=".unreach")
    slots = label_slots(insns)
    index_of_slot = {}
    pos = 0
    for i, insn in enumerate(insns):
        index_of_slot[pos] = i
        pos += insn.slots
    seen = [False] * len(insns)
    todo = [0]
    for insn in insns:
        if insn.is_local_call and insn.target is not None:
            todo.append(index_of_slot[slots[insn.target]])
    while todo:
        i = todo.pop()
        if seen[i]:
            continue
        seen[i] = True
        insn = insns[i]
        if insn.is_exit:
            continue
        if insn.is_jump:
            assert insn.target is not None
            dest = index_of_slot[slots[insn.target]]
            todo.append(dest)
            if insn.op == JmpOp.JA:
                continue
        if i + 1 < len(insns):
            todo.append(i + 1)
    return [insn for i, insn in enumerate(insns) if seen[i]]


# --------------------------------------------------------------------------
# Disassembly

_ALU_OPS: dict[int, str] = {
    AluOp.ADD: "+=",
    AluOp.SUB: "-=",
    AluOp.MUL: "*=",
    AluOp.DIV: "/=",
    AluOp.OR: "|=",
    AluOp.AND: "&=",
    AluOp.LSH: "<<=",
    AluOp.RSH: ">>=",
    AluOp.MOD: "%=",
    AluOp.XOR: "^=",
    AluOp.MOV: "=",
    AluOp.ARSH: "s>>=",
}

_JMP_OPS: dict[int, str] = {
    JmpOp.JEQ: "==",
    JmpOp.JGT: ">",
    JmpOp.JGE: ">=",
    JmpOp.JSET: "&",
    JmpOp.JNE: "!=",
    JmpOp.JSGT: "s>",
    JmpOp.JSGE: "s>=",
    JmpOp.JLT: "<",
    JmpOp.JLE: "<=",
    JmpOp.JSLT: "s<",
    JmpOp.JSLE: "s<=",
}

_SIZE_NAMES: dict[int, str] = {size: f"u{8 * size.nbytes}" for size in Size}
_SSIZE_NAMES: dict[int, str] = {size: f"s{8 * size.nbytes}" for size in Size}

_ATOMIC_OPS: dict[int, str] = {
    op: _ALU_OPS[op] for op in (AluOp.ADD, AluOp.OR, AluOp.AND, AluOp.XOR)
}


def _mem(size: int, reg: int, off: int, signed: bool = False) -> str:
    name = (_SSIZE_NAMES if signed else _SIZE_NAMES)[size]
    sign = "-" if off < 0 else "+"
    return f"*({name} *)(r{reg} {sign} {abs(off)})"


def _pcrel(delta: int) -> str:
    return f"+{delta}" if delta >= 0 else str(delta)


def _format_alu(insn: Insn) -> str:
    r = "r" if insn.cls == EbpfClass.ALU64 else "w"
    dst = f"{r}{insn.dst}"
    op = insn.op
    if op == AluOp.NEG:
        return f"{dst} = -{dst}"
    if op == AluOp.END:
        if insn.cls == EbpfClass.ALU64:
            return f"r{insn.dst} = bswap{insn.imm} r{insn.dst}"
        order = "be" if insn.code & ByteOrder.TO_BE else "le"
        return f"r{insn.dst} = {order}{insn.imm} r{insn.dst}"
    if op not in _ALU_OPS:
        return f"invalid alu op {insn.code:#04x}"
    sym = _ALU_OPS[op]
    if insn.off == 1 and op in (AluOp.DIV, AluOp.MOD):
        sym = "s" + sym
    src = f"{r}{insn.src}" if insn.code & Source.X else str(insn.imm)
    if op == AluOp.MOV and insn.code & Source.X and insn.off in (8, 16, 32):
        src = f"(s{insn.off}){src}"
    return f"{dst} {sym} {src}"


def _format_jump(insn: Insn, delta: str) -> str:
    op = insn.op
    if op == JmpOp.JA:
        return f"gotol {delta}" if insn.cls == EbpfClass.JMP32 else f"goto {delta}"
    if op not in _JMP_OPS:
        return f"invalid jump op {insn.code:#04x}"
    r = "w" if insn.cls == EbpfClass.JMP32 else "r"
    rhs = f"{r}{insn.src}" if insn.code & Source.X else f"{insn.imm & 0xFFFFFFFF:#x}"
    return f"if {r}{insn.dst} {_JMP_OPS[op]} {rhs} goto {delta}"


def _format_call(insn: Insn, delta: int | None) -> str:
    call = mnemonic(JmpOp.CALL)
    if insn.src == CallSrc.LOCAL:
        if insn.target is not None and delta is None:
            return f"{call} <{insn.target}>"
        text = f"{call} pc{_pcrel(insn.imm if delta is None else delta)}"
        return text + (f" <{insn.target}>" if insn.target else "")
    if insn.src == CallSrc.KFUNC:
        return f"{call} kfunc#{insn.imm}"
    name = HELPER_NAMES.get(insn.imm)
    return f"{call} bpf_{name}#{insn.imm}" if name else f"{call} {insn.imm}"


def _format_jmp_class(insn: Insn, delta: int | None) -> str:
    """Jumps, calls and exit (class JMP or JMP32)."""
    if insn.cls == Class.JMP and insn.op == JmpOp.EXIT:
        return mnemonic(JmpOp.EXIT)
    if insn.cls == Class.JMP and insn.op == JmpOp.CALL:
        return _format_call(insn, delta)
    if insn.target is not None and delta is None:
        return _format_jump(insn, f"<{insn.target}>")
    text = _format_jump(insn, _pcrel(insn.jump_offset if delta is None else delta))
    return text + (f" <{insn.target}>" if insn.target else "")


def _format_ld_imm64(insn: Insn) -> str:
    imm, dst = insn.imm, f"r{insn.dst}"
    if insn.src == 0:
        return f"{dst} = {imm:#x} ll"
    if insn.src in (Imm64Src.MAP_FD, Imm64Src.MAP_IDX):
        return f"{dst} = map[{imm & 0xFFFFFFFF}] ll"
    if insn.src in (Imm64Src.MAP_VALUE, Imm64Src.MAP_IDX_VALUE):
        return f"{dst} = map[{imm & 0xFFFFFFFF}]+{imm >> 32} ll"
    if insn.src == Imm64Src.FUNC:
        return f"{dst} = func pc{_pcrel(imm & 0xFFFFFFFF)} ll"
    return f"{dst} = {imm:#x} ll (src {insn.src})"


def _format_load_store(insn: Insn) -> str:
    """Classes LD (but ld_imm64), LDX, ST and STX."""
    cls, mode = insn.cls, insn.mode
    if cls == Class.LDX and mode in (Mode.MEM, EbpfMode.MEMSX):
        return f"r{insn.dst} = {_mem(insn.size, insn.src, insn.off, mode == EbpfMode.MEMSX)}"
    if cls == Class.STX and mode == Mode.MEM:
        return f"{_mem(insn.size, insn.dst, insn.off)} = r{insn.src}"
    if cls == Class.ST and mode == Mode.MEM:
        return f"{_mem(insn.size, insn.dst, insn.off)} = {insn.imm}"
    if cls == Class.STX and mode == EbpfMode.ATOMIC:
        return _format_atomic(insn)
    if cls == Class.LD and mode in (Mode.ABS, Mode.IND):
        where = f"r{insn.src} + {insn.imm}" if mode == Mode.IND else str(insn.imm)
        return f"r0 = *({_SIZE_NAMES[insn.size]} *)skb[{where}]"
    return f"invalid insn {insn.code:#04x}"


def format_insn(insn: Insn, delta: int | None = None) -> str:
    """One instruction as text. ``delta`` overrides the encoded jump offset
    (used once symbolic targets are resolved); a target is shown as ``<label>``."""
    if insn.cls in (Class.ALU, EbpfClass.ALU64):
        return _format_alu(insn)
    if insn.cls in (Class.JMP, EbpfClass.JMP32):
        return _format_jmp_class(insn, delta)
    if insn.code == LD_IMM64:
        return _format_ld_imm64(insn)
    return _format_load_store(insn)


def _format_atomic(insn: Insn) -> str:
    r = "r" if insn.size == Size.DW else "w"
    fn = "atomic64_" if insn.size == Size.DW else "atomic_"
    sign = "-" if insn.off < 0 else "+"
    addr = f"({_SIZE_NAMES[insn.size]} *)(r{insn.dst} {sign} {abs(insn.off)})"
    op = insn.imm & OP_MASK
    if insn.imm == AtomicOp.XCHG:
        return f"{r}{insn.src} = {fn}{mnemonic(AtomicOp.XCHG)}({addr}, {r}{insn.src})"
    if insn.imm == AtomicOp.CMPXCHG:
        return f"r0 = {fn}{mnemonic(AtomicOp.CMPXCHG)}({addr}, r0, {r}{insn.src})"
    if op in _ATOMIC_OPS:
        if insn.imm & AtomicOp.FETCH:
            fetch = f"{mnemonic(AtomicOp.FETCH)}_{mnemonic(AluOp(op))}"
            return f"{r}{insn.src} = {fn}{fetch}({addr}, {r}{insn.src})"
        return f"lock *{addr} {_ATOMIC_OPS[op]} {r}{insn.src}"
    return f"invalid atomic op {insn.imm:#x}"


def disassemble(insns: Iterable[Insn]) -> list[str]:
    """Listing of ``insns``: one line per instruction (``slot: text``) and a
    ``label:`` line before each labelled one. Targets that resolve show the
    pc-relative offset and the label; dangling ones show only the label."""
    seq = list(insns)
    try:
        slots: dict[str, int] = label_slots(seq)
    except EncodeError:
        slots = {}
    lines = []
    pos = 0
    for insn in seq:
        if insn.label is not None:
            lines.append(f"{insn.label}:")
        delta = None
        if insn.target is not None and insn.target in slots:
            delta = slots[insn.target] - (pos + 1)
        lines.append(f"{pos:5d}: {format_insn(insn, delta)}")
        pos += insn.slots
    return lines
