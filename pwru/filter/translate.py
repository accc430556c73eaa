"""Translate a classic BPF filter into the body of an eBPF subprogram.

The result replaces the body of a ``__noinline`` stub in bpf/pwru.bpf.c
(``filter_pcap_l2`` and friends) and follows its contract:

* on entry ``r1`` = address of the first packet byte, ``r2`` = address one
  past the last one. Both are kernel addresses held as plain numbers, so every
  packet byte is fetched with ``bpf_probe_read_kernel`` into this function's
  own stack frame;
* on return ``r0`` = the cBPF return value (non-zero: the packet matches).

Registers and stack (r6..r9 are ours: the caller's copies live in its frame)::

    r6  loop counter  r8  A (kept as a zero-extended 32-bit value, ALU in w8)
    r7  data          r9  X (likewise, w9)
    r0..r5            scratch; helper calls clobber them

    r10 - 8           read buffer for one packet load (4 bytes used)
    r10 - 16          length = data_end - data (0 if data_end < data)
    r10 - 24          window length (programs with a window, see below)
    r10 - 24 - W      the window: the packet's first W bytes (W <= 64, see below)
    below that        counters of further overlapping loops (libpcap emits
                      none), then M[k] for the scratch words used, 4 bytes each

The window. Every packet load is a helper call (``bpf_probe_read_kernel``,
tens of nanoseconds), and a filter runs at every probe hit. So a program
with two or more constant-offset loads inside the first 64 bytes (EtherType, IP protocol,
IPv6 addresses and ports, ...) reads min(length, W) bytes into its frame
once, up front, and serves those loads from there, byte by byte (the
verifier insists on aligned stack access). W is the end of the furthest
such load rounded up to 8 bytes (40 for ``ip host 192.0.2.1`` on Ethernet): a
shorter copy and fewer slots to zero. If that read fails the window
length is 0 and every load takes the helper path, which then fails (and
rejects) exactly as before. Loads at X + k, and beyond 64 bytes, always take
the helper path.

Direct loads. Where the kernel lets a program read packet memory with plain
loads (tp_btf programs on Linux 6.18+, whose ``skb->head`` the verifier types
as read-only untrusted memory; the kernel fixes up a faulting load to 0), a
second body of each filter (``direct=True``) reads every field with one
load instruction after the same bounds check: no window, no helper call.
Filters that loop keep the helper body: a pointer-typed data register
defeats the verifier's pruning in protochain's loops.

Semantics are libpcap's interpreter (bpf_filter.c): A, X and M[] start at 0;
loads are big-endian and a load that does not fit in ``length`` bytes returns
0; ``len`` is ``length``; division or modulo by X == 0 returns 0; shifts by 32
or more give 0. A packet read the kernel refuses also returns 0.

Verifier cost. The verifier explores paths and prunes a path when its state
is no more specific than one already proven safe; a register only matters
for that comparison once it has been marked "precise" (some branch outcome
depended on its exact range). Two choices keep pruning effective:

* The length is written to its stack slot as two 4-byte halves and
  reloaded (8 bytes) for every bounds check. The verifier tracks registers
  only through whole spills, so each reload is a fresh unknown value (a
  helper copying the slot onto itself did the same, at the price of a
  helper call per probe hit): bounds checks never teach it anything about the length,
  later checks are never decided by earlier ones, and the length never
  becomes precise. Kept in a register instead, each check raises the
  length's known minimum, a later constant check becomes decidable, the
  length turns precise, and states that differ only in that minimum (e.g.
  after different numbers of loop iterations) stop pruning each other.
* Loop counters live in r6, so a counter is dead (ignored) once its loop
  is left.

With both, ``ip6 protochain 6`` costs about 10k verified instructions at the
default bound and two protochains about twice that, where a naive
translation exceeds the verifier's 1M-instruction budget.

Backward jumps (libpcap's ``protochain`` walks IPv6 extension headers with
them) become bounded loops the verifier can follow. A loop is the code from
a backward jump's target (its header) to the last backward jump there. Each
loop has a counter: forward edges into the header go through a reset to 0,
each backward jump adds 1 and the filter returns 0 ("no match") once the
counter exceeds ``max_backward_jumps``. The default, 64, is the limit newer
libpcap interpreters put on backward jumps per packet (libpcap 1.10.3 has
none). Loops that do not overlap share r6; only overlapping ones get stack
counters.

Every instruction carries symbols (``<name>.L<pc>`` for the first eBPF
instruction of cBPF instruction ``pc``), so the output can be spliced and
concatenated with :mod:`pwru.filter.ebpf` without offset arithmetic. The first
instruction is labelled ``name``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pwru.errors import UsageError
from pwru.filter import cbpf, ebpf
from pwru.filter.cbpf import CbpfInsn
from pwru.filter.ebpf import (
    FP,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    BPF_FUNC_probe_read_kernel,
    Builder,
    Insn,
)
from pwru.filter.opcodes import (
    AluOp,
    CbpfClass,
    CbpfMode,
    Class,
    JmpOp,
    MiscOp,
    Mode,
    Size,
    Source,
)

DEFAULT_MAX_BACKWARD_JUMPS = 64

# frame layout (offsets from r10)
_BUF = -8
_LEN_SLOT = -16
_WINLEN_SLOT = -24
WINDOW = 64  # bytes at most; a program's window ends with its furthest load in it

REG_A = R8
REG_X = R9
_COUNTER = R6
_DATA = R7


class TranslateError(UsageError, ValueError):
    """A cBPF program pwru cannot (or must not) turn into eBPF."""


# a cBPF condition's negation in eBPF, where there is one
_NEGATED = {JmpOp.JEQ: JmpOp.JNE, JmpOp.JGT: JmpOp.JLE, JmpOp.JGE: JmpOp.JLT}


def _reads_mem(insn: CbpfInsn) -> bool:
    return insn.cls in (Class.LD, Class.LDX) and insn.mode == Mode.MEM


def _uses_mem(insn: CbpfInsn) -> bool:
    return insn.cls in (Class.ST, Class.STX) or _reads_mem(insn)


def _check(prog: Sequence[CbpfInsn]) -> None:
    """Reject what libpcap's validator rejects, with the instruction at fault."""
    if not prog:
        raise TranslateError("empty cBPF program")
    n = len(prog)
    for pc, insn in enumerate(prog):
        where = f"cBPF instruction {pc} ({cbpf.format_insn(insn, pc)})"
        if not cbpf.is_valid(insn):
            raise TranslateError(f"unsupported {where}")
        cls = insn.cls
        if _uses_mem(insn) and insn.k >= cbpf.BPF_MEMWORDS:
            raise TranslateError(f"scratch memory index out of range in {where}")
        if (
            cls == Class.ALU
            and insn.src == Source.K
            and insn.op in (AluOp.DIV, AluOp.MOD)
            and insn.k == 0
        ):
            raise TranslateError(f"division by zero in {where}")
        if cls == Class.JMP:
            if insn.op == JmpOp.JA:
                dest = pc + 1 + insn.sk
                if not 0 <= dest < n:
                    raise TranslateError(f"jump out of the program in {where}")
                if dest == pc:
                    raise TranslateError(f"infinite loop in {where}")
            elif pc + 1 + max(insn.jt, insn.jf) >= n:
                raise TranslateError(f"jump out of the program in {where}")
    if prog[-1].cls != CbpfClass.RET:
        raise TranslateError("cBPF program does not end with a return")


class _Translator:
    def __init__(
        self, prog: Sequence[CbpfInsn], name: str, max_backward_jumps: int, direct: bool = False
    ) -> None:
        self.prog = prog
        self.direct = direct
        self.name = name
        self.max_backward_jumps = max_backward_jumps
        self.b = Builder()
        # loops: header pc -> last pc of a backward jump to it
        self.loop_end: dict[int, int] = {}
        for pc, insn in enumerate(prog):
            if _jumps_back(insn):
                head = pc + 1 + insn.sk
                self.loop_end[head] = max(pc, self.loop_end.get(head, pc))
        # loop header -> None (counter in r6) or the stack offset of its counter
        colour = _loop_colours(self.loop_end)
        # one read of the window costs what one load costs: worth it from two loads
        # (direct loads need no window: each load is one instruction already)
        ends = [insn.k + Size(insn.size).nbytes for insn in prog if _in_window(insn)]
        self.windowed = not direct and len(ends) >= 2
        self.window = -(-max(ends, default=0) // 8) * 8 if self.windowed else 0
        self.win = _WINLEN_SLOT - self.window  # the window: r10 + win .. r10 + win + window
        top = self.win if self.windowed else _LEN_SLOT  # lowest slot of the fixed layout
        self.counter_slot: dict[int, int | None] = {
            head: None if c == 0 else top - 8 * c for head, c in colour.items()
        }
        bottom = min([top, *(o for o in self.counter_slot.values() if o is not None)])
        used = sorted({insn.k for insn in prog if _uses_mem(insn)})
        self.mem_off = {k: bottom - 4 * (i + 1) for i, k in enumerate(used)}
        self.mem_read = sorted({insn.k for insn in prog if _reads_mem(insn)})
        self.frame_size = -min([bottom, *self.mem_off.values()])

    # labels -------------------------------------------------------------

    def at(self, pc: int) -> str:
        """Label of cBPF instruction ``pc`` (``len(prog)`` is the reject block)."""
        return f"{self.name}.L{pc}"

    @property
    def reject(self) -> str:
        return f"{self.name}.reject"

    def local(self, pc: int, what: str) -> str:
        return f"{self.name}.L{pc}.{what}"

    def forward(self, pc: int) -> str:
        """Label for a forward edge to ``pc``: loop headers are entered
        through their counter reset."""
        return self.local(pc, "enter") if pc in self.loop_end else self.at(pc)

    # pieces ---------------------------------------------------------------

    def prologue(self) -> None:
        b = self.b
        ok = f"{self.name}.len_ok"
        b.label(self.name)
        b.emit(
            ebpf.mov64_reg(_DATA, R1),
            # data_end < data would make the length huge: treat it as empty
            ebpf.jmp_reg(JmpOp.JGE, R2, R1, ok),
            ebpf.mov64_reg(R2, R1),
        )
        b.label(ok)
        b.emit(
            ebpf.alu64_reg(AluOp.SUB, R2, R1),
            # stored as two halves: the verifier tracks no register through
            # that, so every 8-byte reload is a fresh unknown (see module doc)
            ebpf.stx_mem(4, FP, R2, _LEN_SLOT),
            ebpf.alu64_imm(AluOp.RSH, R2, 32),
            ebpf.stx_mem(4, FP, R2, _LEN_SLOT + 4),
            ebpf.mov32_imm(REG_A, 0),
            ebpf.mov32_imm(REG_X, 0),
        )
        if self.windowed:
            self.read_window()
        for k in self.mem_read:
            b.emit(ebpf.st_mem(4, FP, self.mem_off[k], 0))
        # counters start at 0 even on paths that would enter a loop sideways
        first_use: dict[int | None, int] = {}
        for head, slot in sorted(self.counter_slot.items()):
            first_use.setdefault(slot, head)
        for head in first_use.values():
            self.reset_counter(head)

    def read_window(self) -> None:
        """Copy min(length, window) packet bytes into the window (see module doc)."""
        short, done = f"{self.name}.win_short", f"{self.name}.win_done"
        b = self.b
        b.emit(
            ebpf.ldx_mem(8, R2, FP, _LEN_SLOT),
            ebpf.jmp_imm(JmpOp.JLE, R2, self.window, short),
            ebpf.mov64_imm(R2, self.window),
        )
        b.label(short)
        b.emit(ebpf.stx_mem(8, FP, R2, _WINLEN_SLOT))
        # zeroed first: the verifier then knows every window byte is initialised
        b.emit(*(ebpf.st_mem(8, FP, self.win + off, 0) for off in range(0, self.window, 8)))
        b.emit(
            ebpf.mov64_reg(R1, FP),
            ebpf.alu64_imm(AluOp.ADD, R1, self.win),
            ebpf.mov64_reg(R3, _DATA),
            ebpf.call_helper(BPF_FUNC_probe_read_kernel),
            ebpf.jmp_imm(JmpOp.JEQ, R0, 0, done),
            ebpf.st_mem(8, FP, _WINLEN_SLOT, 0),
        )
        b.label(done)

    def load_from_window(self, pc: int, insn: CbpfInsn, dst: int) -> str:
        """dst = the field, from the window when it holds it; returns the label of
        the helper path the code jumps to when it does not."""
        b = self.b
        size = Size(insn.size).nbytes
        slow, done = self.local(pc, "slow"), self.local(pc, "loaded")
        base = self.win + insn.k
        b.emit(
            ebpf.ldx_mem(8, R0, FP, _WINLEN_SLOT),
            ebpf.jmp_imm(JmpOp.JLT, R0, insn.k + size, slow),
            ebpf.ldx_mem(1, dst, FP, base),
        )
        for i in range(1, size):
            b.emit(
                ebpf.ldx_mem(1, R1, FP, base + i),
                ebpf.alu32_imm(AluOp.LSH, dst, 8),
                ebpf.alu32_reg(AluOp.OR, dst, R1),
            )
        b.emit(ebpf.ja(done))
        b.label(slow)
        return done

    def reset_counter(self, head: int) -> None:
        slot = self.counter_slot[head]
        if slot is None:
            self.b.emit(ebpf.mov64_imm(_COUNTER, 0))
        else:
            self.b.emit(ebpf.mov64_imm(R0, 0), ebpf.stx_mem(8, FP, R0, slot))

    def load(self, pc: int, insn: CbpfInsn, dst: int) -> None:
        """dst = the (big-endian) packet field at k or X + k; out of bounds -> return 0."""
        b = self.b
        size = Size(insn.size).nbytes
        indexed = insn.mode == Mode.IND
        k = insn.k
        done = self.load_from_window(pc, insn, dst) if self.windowed and _in_window(insn) else None
        if not indexed and k + size <= 0x7FFFFFFF:
            # constant offset: one compare against the length
            b.emit(
                ebpf.ldx_mem(8, R0, FP, _LEN_SLOT),
                ebpf.jmp_imm(JmpOp.JLT, R0, k + size, self.reject),
                ebpf.mov64_reg(R3, _DATA),
                ebpf.alu64_imm(AluOp.ADD, R3, k),
            )
        else:
            # 64-bit arithmetic on zero-extended u32s cannot overflow
            b.emit(ebpf.mov32_imm(R1, k))
            if indexed:
                b.emit(ebpf.alu64_reg(AluOp.ADD, R1, REG_X))
            b.emit(
                ebpf.mov64_reg(R2, R1),
                ebpf.alu64_imm(AluOp.ADD, R2, size),
                ebpf.ldx_mem(8, R0, FP, _LEN_SLOT),
                ebpf.jmp_reg(JmpOp.JGT, R2, R0, self.reject),
                ebpf.mov64_reg(R3, _DATA),
                ebpf.alu64_reg(AluOp.ADD, R3, R1),
            )
        if self.direct:
            b.emit(ebpf.ldx_mem(size, dst, R3, 0))
        else:
            b.emit(*ebpf.probe_read_to_stack(_BUF, size, self.reject))
            b.emit(ebpf.ldx_mem(size, dst, FP, _BUF))
        if size > 1:
            b.emit(ebpf.endian(dst, 8 * size, big=True))
        if done is not None:
            b.label(done)

    def alu(self, pc: int, insn: CbpfInsn) -> None:
        b = self.b
        if insn.op == AluOp.NEG:
            b.emit(ebpf.neg32(REG_A))
            return
        op = AluOp(insn.op)  # cBPF and eBPF share the ALU operations
        shift = insn.op in (AluOp.LSH, AluOp.RSH)
        if insn.src == Source.K:
            if shift and insn.k >= 32:
                b.emit(ebpf.mov32_imm(REG_A, 0))
            else:
                b.emit(ebpf.alu32_imm(op, REG_A, insn.k))
            return
        if insn.op in (AluOp.DIV, AluOp.MOD):
            b.emit(
                ebpf.jmp32_imm(JmpOp.JEQ, REG_X, 0, self.reject),
                ebpf.alu32_reg(op, REG_A, REG_X),
            )
        elif shift:
            # eBPF masks the shift count; cBPF gives 0 for counts >= 32
            big = self.local(pc, "wide_shift")
            b.emit(
                ebpf.jmp32_imm(JmpOp.JGT, REG_X, 31, big),
                ebpf.alu32_reg(op, REG_A, REG_X),
                ebpf.ja(self.forward(pc + 1)),
            )
            b.label(big)
            b.emit(ebpf.mov32_imm(REG_A, 0))
        else:
            b.emit(ebpf.alu32_reg(op, REG_A, REG_X))

    def cond_jump(self, pc: int, insn: CbpfInsn) -> None:
        b = self.b
        t, f, nxt = pc + 1 + insn.jt, pc + 1 + insn.jf, pc + 1
        if t == f:
            if t != nxt:
                b.emit(ebpf.ja(self.forward(t)))
            return
        op = JmpOp(insn.op)
        negated = _NEGATED.get(op)

        def jump(cond: JmpOp, dest: int) -> Insn:
            if insn.src == Source.X:
                return ebpf.jmp32_reg(cond, REG_A, REG_X, self.forward(dest))
            return ebpf.jmp32_imm(cond, REG_A, insn.k, self.forward(dest))

        if f == nxt:
            b.emit(jump(op, t))
        elif t == nxt and negated is not None:
            b.emit(jump(negated, f))
        else:
            b.emit(jump(op, t), ebpf.ja(self.forward(f)))

    def jump_always(self, pc: int, insn: CbpfInsn) -> None:
        dest = pc + 1 + insn.sk
        if dest > pc:
            if dest != pc + 1:
                self.b.emit(ebpf.ja(self.forward(dest)))
            return
        # backward: count, give up past the bound, then loop
        slot = self.counter_slot[dest]
        if slot is None:
            counter = _COUNTER
            self.b.emit(ebpf.alu64_imm(AluOp.ADD, counter, 1))
        else:
            counter = R0
            self.b.emit(
                ebpf.ldx_mem(8, counter, FP, slot),
                ebpf.alu64_imm(AluOp.ADD, counter, 1),
                ebpf.stx_mem(8, FP, counter, slot),
            )
        self.b.emit(
            ebpf.jmp_imm(JmpOp.JGT, counter, self.max_backward_jumps, self.reject),
            ebpf.ja(self.at(dest)),
        )

    def insn(self, pc: int, insn: CbpfInsn) -> None:
        b = self.b
        cls = insn.cls
        if cls in (Class.LD, Class.LDX):
            dst = REG_A if cls == Class.LD else REG_X
            mode = insn.mode
            if mode in (Mode.ABS, Mode.IND):
                self.load(pc, insn, dst)
            elif mode == CbpfMode.MSH:
                self.load(pc, insn, dst)
                b.emit(
                    ebpf.alu32_imm(AluOp.AND, dst, 0xF),
                    ebpf.alu32_imm(AluOp.LSH, dst, 2),
                )
            elif mode == Mode.IMM:
                b.emit(ebpf.mov32_imm(dst, insn.k))
            elif mode == CbpfMode.LEN:
                b.emit(ebpf.ldx_mem(8, dst, FP, _LEN_SLOT), ebpf.mov32_reg(dst, dst))
            else:  # Mode.MEM
                b.emit(ebpf.ldx_mem(4, dst, FP, self.mem_off[insn.k]))
        elif cls in (Class.ST, Class.STX):
            src = REG_A if cls == Class.ST else REG_X
            b.emit(ebpf.stx_mem(4, FP, src, self.mem_off[insn.k]))
        elif cls == Class.ALU:
            self.alu(pc, insn)
        elif cls == Class.JMP:
            if insn.op == JmpOp.JA:
                self.jump_always(pc, insn)
            else:
                self.cond_jump(pc, insn)
        elif cls == CbpfClass.RET:
            if insn.rval == Source.K:
                b.emit(ebpf.mov32_imm(R0, insn.k))
            else:
                b.emit(ebpf.mov32_reg(R0, REG_A))
            b.emit(ebpf.exit_insn())
        elif insn.miscop == MiscOp.TAX:
            b.emit(ebpf.mov32_reg(REG_X, REG_A))
        else:  # MiscOp.TXA
            b.emit(ebpf.mov32_reg(REG_A, REG_X))

    def run(self) -> list[Insn]:
        self.prologue()
        for pc, insn in enumerate(self.prog):
            if pc in self.loop_end:
                # entering the loop from above: a fresh budget of iterations
                self.b.label(self.local(pc, "enter"))
                self.reset_counter(pc)
            self.b.label(self.at(pc))
            self.insn(pc, insn)
        self.b.label(self.reject)
        self.b.label(self.at(len(self.prog)))
        self.b.emit(ebpf.mov32_imm(R0, 0), ebpf.exit_insn())
        return ebpf.remove_unreachable(self.b.build())


def _in_window(insn: CbpfInsn) -> bool:
    """A packet load at a constant offset that the window holds."""
    if insn.cls not in (Class.LD, Class.LDX) or insn.mode not in (
        Mode.ABS,
        CbpfMode.MSH,  # ldxb 4*([k]&0xf): a byte at k
    ):
        return False
    return insn.k + Size(insn.size).nbytes <= WINDOW


def _loop_colours(loop_end: dict[int, int]) -> dict[int, int]:
    """A counter number for each loop. Loops whose pc ranges do not overlap
    are never active together (cBPF only jumps backwards to a loop header,
    so a loop once left is never re-entered except through its header, which
    resets the counter): they share a counter. Nested or overlapping loops
    get different ones."""
    busy: list[int] = []  # last pc of the loop currently using each counter
    out: dict[int, int] = {}
    for head in sorted(loop_end):
        for i, until in enumerate(busy):
            if until < head:
                busy[i] = loop_end[head]
                out[head] = i
                break
        else:
            out[head] = len(busy)
            busy.append(loop_end[head])
    return out


def loops(prog: Sequence[CbpfInsn]) -> bool:
    """Whether ``prog`` jumps backwards (libpcap's protochain does)."""
    return any(_jumps_back(insn) for insn in prog)


def _jumps_back(insn: CbpfInsn) -> bool:
    return insn.cls == Class.JMP and insn.op == JmpOp.JA and insn.sk < 0


def stack_size(prog: Sequence[CbpfInsn]) -> int:
    """Bytes of stack the translation of ``prog`` uses."""
    _check(prog)
    return _Translator(prog, "f", DEFAULT_MAX_BACKWARD_JUMPS).frame_size


def translate(
    prog: Sequence[CbpfInsn],
    *,
    name: str,
    max_backward_jumps: int = DEFAULT_MAX_BACKWARD_JUMPS,
    direct: bool = False,
) -> list[Insn]:
    """The eBPF body of subprogram ``name`` that runs cBPF ``prog`` (see module doc).
    ``direct``: packet bytes are plain loads (see "Direct loads" there).

    Raises TranslateError for programs libpcap's validator would refuse
    (division by a constant 0, jumps out of the program, unknown opcodes, ...).
    """
    if max_backward_jumps < 0:
        raise TranslateError("max_backward_jumps must be >= 0")
    _check(prog)
    return _Translator(prog, name, max_backward_jumps, direct).run()


def reject_all(*, name: str) -> list[Insn]:
    """Body of a filter that matches nothing (``return 0``)."""
    return [ebpf.mov32_imm(R0, 0).with_label(name), ebpf.exit_insn()]


def translate_expression(
    expression: str,
    linktype: int,
    *,
    name: str,
    max_backward_jumps: int = DEFAULT_MAX_BACKWARD_JUMPS,
) -> list[Insn]:
    """compile_filter + translate; an expression that can never match on
    ``linktype`` (``arp`` on DLT_RAW) gives :func:`reject_all`."""
    prog = cbpf.compile_filter(expression, linktype)
    if prog is None:
        return reject_all(name=name)
    return translate(prog, name=name, max_backward_jumps=max_backward_jumps)
