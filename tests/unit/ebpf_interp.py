"""A small, strict eBPF interpreter for unit tests (no kernel needed).

It runs one function body the way the kernel would, and is stricter than the
kernel at run time in the ways that catch translator bugs the verifier would
otherwise catch at load time:

* reading a register that was never written (or that a helper call
  clobbered, r1..r5) is an error;
* loads and stores must hit the 512-byte stack, and loading stack bytes that
  were never written is an error (packet memory is only reachable through
  ``bpf_probe_read_kernel``);
* ``bpf_probe_read_kernel`` (the only helper) must write onto the stack and
  read from a known region: by default an out-of-region read is an error,
  because the translator bounds-checks before reading; ``fault_reads=True``
  makes it fail with -EFAULT like the kernel instead.

Programs are taken as bytes and decoded with pwru.filter.ebpf.decode, so the
encoder is exercised on every run. Each instruction is compiled once into a
closure; a run costs a fraction of a microsecond per instruction.

It lives with the tests rather than in pwru: nothing at run time needs it,
and keeping it out of the package keeps the shipped code to what the
kernel-facing path uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from pwru.filter import ebpf
from pwru.filter.ebpf import Insn
from pwru.filter.opcodes import AluOp, ByteOrder, Class, EbpfClass, JmpOp, Mode, Size, Source

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF
STACK_SIZE = 512
FP_ADDR = 0x0000_7FFF_0000_0000  # value of r10 (one past the top of the stack)
EFAULT = 14

Op = Callable[[], int]


class InterpError(Exception):
    """The program did something the kernel would not allow (or we do not model)."""


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v >> 31 else v


def _bswap(v: int, nbytes: int) -> int:
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


class Machine:
    """Runs one eBPF function. ``regions`` maps base address -> bytes (fake kernel memory)."""

    def __init__(
        self, code: bytes, *, max_steps: int = 1_000_000, direct_loads: bool = False
    ) -> None:
        """``direct_loads``: plain loads may read the regions (the direct filter
        bodies); otherwise only the stack, and anything else is an error."""
        self.direct_loads = direct_loads
        self.insns = ebpf.decode(code)
        self.max_steps = max_steps
        self.regs: list[int | None] = [None] * 11
        self.stack = bytearray(STACK_SIZE)
        self.init = bytearray(STACK_SIZE)
        self.regions: list[tuple[int, bytes]] = []
        self.fault_reads = False
        self.result = 0
        self.steps = 0
        self.helper_calls = 0  # bpf_probe_read_kernel calls of the last run
        self.memory_loads = 0  # plain loads outside the stack, likewise
        self.executed: set[int] = set()
        slot_to_index: dict[int, int] = {}
        pos = 0
        for i, insn in enumerate(self.insns):
            slot_to_index[pos] = i
            pos += insn.slots
        self._slot_to_index = slot_to_index
        self._slot_of = {i: s for s, i in slot_to_index.items()}
        self.ops: list[Op] = [self._compile(i, insn) for i, insn in enumerate(self.insns)]

    # ------------------------------------------------------------------ run

    def run(
        self,
        args: Sequence[int],
        regions: Sequence[tuple[int, bytes]] = (),
        *,
        fault_reads: bool = False,
        trace: bool = False,
    ) -> int:
        """Run with r1.. = ``args``; returns r0 (u64)."""
        regs = self.regs
        for i in range(11):
            regs[i] = None
        for i, a in enumerate(args):
            regs[1 + i] = a & MASK64
        regs[10] = FP_ADDR
        self.init[:] = bytes(STACK_SIZE)
        self.regions = list(regions)
        self.fault_reads = fault_reads
        self.helper_calls = 0
        self.memory_loads = 0
        ops = self.ops
        pc = 0
        steps = 0
        limit = self.max_steps
        executed = self.executed if trace else None
        while pc >= 0:
            if executed is not None:
                executed.add(pc)
            pc = ops[pc]()
            steps += 1
            if steps > limit:
                raise InterpError(f"more than {limit} steps")
        self.steps = steps
        return self.result

    # ------------------------------------------------------------- helpers

    def _read_reg(self, r: int, i: int) -> int:
        v = self.regs[r]
        if v is None:
            raise InterpError(f"insn {i}: r{r} read before it is written")
        return v

    def _stack_index(self, addr: int, size: int, i: int) -> int:
        start = addr - (FP_ADDR - STACK_SIZE)
        if start < 0 or start + size > STACK_SIZE:
            raise InterpError(f"insn {i}: access of {size} bytes at {addr:#x} is not on the stack")
        return start

    def _load(self, addr: int, size: int, i: int) -> int:
        lo = FP_ADDR - STACK_SIZE
        if self.direct_loads and not lo <= addr < FP_ADDR:
            return self._load_memory(addr, size, i)
        start = self._stack_index(addr, size, i)
        if not all(self.init[start : start + size]):
            raise InterpError(f"insn {i}: read of uninitialised stack at r10{start - STACK_SIZE}")
        return int.from_bytes(self.stack[start : start + size], "little")

    def _load_memory(self, addr: int, size: int, i: int) -> int:
        """A plain load from kernel memory (the direct filter bodies): as the kernel's
        fault fixup, a load outside every region gives 0 with ``fault_reads``."""
        self.memory_loads += 1
        for base, blob in self.regions:
            if base <= addr and addr + size <= base + len(blob):
                return int.from_bytes(blob[addr - base : addr - base + size], "little")
        if not self.fault_reads:
            raise InterpError(f"insn {i}: load of {size} bytes at {addr:#x} out of bounds")
        return 0

    def _store(self, addr: int, size: int, value: int, i: int) -> None:
        start = self._stack_index(addr, size, i)
        self.stack[start : start + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
            size, "little"
        )
        self.init[start : start + size] = b"\x01" * size

    def _probe_read(self, dst: int, size: int, src: int, i: int) -> int:
        self.helper_calls += 1
        if size == 0:  # the kernel copies nothing and succeeds, wherever src points
            return 0
        start = self._stack_index(dst, size, i)
        data: bytes | None = None
        for base, blob in self.regions:
            if base <= src and src + size <= base + len(blob):
                data = blob[src - base : src - base + size]
                break
        else:
            lo = FP_ADDR - STACK_SIZE
            if lo <= src and src + size <= FP_ADDR:
                s = src - lo
                if not all(self.init[s : s + size]):
                    raise InterpError(f"insn {i}: probe_read of uninitialised stack")
                data = bytes(self.stack[s : s + size])
        if data is None:
            if not self.fault_reads:
                raise InterpError(f"insn {i}: probe_read of {size} bytes at {src:#x} out of bounds")
            data = bytes(size)
            ret = -EFAULT
        else:
            ret = 0
        self.stack[start : start + size] = data
        self.init[start : start + size] = b"\x01" * size
        return ret & MASK64

    # ------------------------------------------------------------ compiler

    def _target(self, i: int, insn: Insn) -> int:
        dest_slot = self._slot_of[i] + 1 + insn.jump_offset
        if dest_slot not in self._slot_to_index:
            raise InterpError(f"insn {i}: jump to slot {dest_slot} outside the program")
        return self._slot_to_index[dest_slot]

    def _compile(self, i: int, insn: Insn) -> Op:
        cls = insn.cls
        nxt = i + 1
        regs = self.regs
        read = self._read_reg
        dst, src = insn.dst, insn.src
        if cls in (Class.ALU, EbpfClass.ALU64):
            return self._compile_alu(i, insn)
        if insn.code == ebpf.LD_IMM64:
            value = insn.imm & MASK64

            def ld_imm64() -> int:
                regs[dst] = value
                return nxt

            return ld_imm64
        if cls == Class.LDX and insn.mode == Mode.MEM:
            size = Size(insn.size).nbytes
            off = insn.off
            load = self._load

            def ldx() -> int:
                regs[dst] = load((read(src, i) + off) & MASK64, size, i)
                return nxt

            return ldx
        if cls in (Class.STX, Class.ST) and insn.mode == Mode.MEM:
            size = Size(insn.size).nbytes
            off = insn.off
            store = self._store
            if cls == Class.STX:

                def stx() -> int:
                    store((read(dst, i) + off) & MASK64, size, read(src, i), i)
                    return nxt

                return stx
            imm = insn.imm & MASK64

            def st() -> int:
                store((read(dst, i) + off) & MASK64, size, imm, i)
                return nxt

            return st
        if cls in (Class.JMP, EbpfClass.JMP32):
            return self._compile_jmp(i, insn)
        raise InterpError(f"insn {i}: unsupported {ebpf.format_insn(insn)}")

    def _compile_alu(self, i: int, insn: Insn) -> Op:
        regs = self.regs
        read = self._read_reg
        nxt = i + 1
        dst, src, op = insn.dst, insn.src, insn.op
        wide = insn.cls == EbpfClass.ALU64
        mask = MASK64 if wide else MASK32
        bits = 64 if wide else 32
        if op == AluOp.END:
            nbytes = insn.imm // 8
            swap = wide or bool(insn.code & ByteOrder.TO_BE)  # little-endian target
            keep = (1 << (8 * nbytes)) - 1

            def end() -> int:
                v = read(dst, i)
                regs[dst] = _bswap(v, nbytes) if swap else v & keep
                return nxt

            return end
        if op == AluOp.NEG:

            def neg() -> int:
                regs[dst] = (-read(dst, i)) & mask
                return nxt

            return neg
        use_reg = bool(insn.code & Source.X)
        imm = insn.imm & mask  # K is sign-extended to 64 bits, or truncated to 32
        if insn.off != 0:
            raise InterpError(f"insn {i}: signed/sign-extending ALU forms are not modelled")

        def operand() -> int:
            return (read(src, i) if use_reg else imm) & mask

        fns: dict[int, Callable[[int, int], int]] = {
            AluOp.ADD: lambda a, b: a + b,
            AluOp.SUB: lambda a, b: a - b,
            AluOp.MUL: lambda a, b: a * b,
            AluOp.DIV: lambda a, b: a // b if b else 0,
            AluOp.MOD: lambda a, b: a % b if b else a,
            AluOp.OR: lambda a, b: a | b,
            AluOp.AND: lambda a, b: a & b,
            AluOp.XOR: lambda a, b: a ^ b,
            AluOp.LSH: lambda a, b: a << (b & (bits - 1)),
            AluOp.RSH: lambda a, b: a >> (b & (bits - 1)),
            AluOp.ARSH: lambda a, b: (_s64(a) if wide else _s32(a)) >> (b & (bits - 1)),
        }
        if op == AluOp.MOV:

            def mov() -> int:
                regs[dst] = operand()
                return nxt

            return mov
        if op not in fns:
            raise InterpError(f"insn {i}: unsupported {ebpf.format_insn(insn)}")
        fn = fns[op]

        def alu() -> int:
            regs[dst] = fn(read(dst, i) & mask, operand()) & mask
            return nxt

        return alu

    def _compile_jmp(self, i: int, insn: Insn) -> Op:
        nxt = i + 1
        op = insn.op
        read = self._read_reg
        if op == JmpOp.EXIT:

            def exit_() -> int:
                self.result = read(0, i)
                return -1

            return exit_
        if op == JmpOp.CALL:
            if insn.src != 0 or insn.imm != ebpf.BPF_FUNC_probe_read_kernel:
                raise InterpError(f"insn {i}: only bpf_probe_read_kernel is modelled")
            regs = self.regs
            probe = self._probe_read

            def call() -> int:
                dst, size, src = read(1, i), read(2, i), read(3, i)
                regs[0] = probe(dst, size, src, i)
                for r in range(1, 6):
                    regs[r] = None
                return nxt

            return call
        target = self._target(i, insn)
        if op == JmpOp.JA:
            return lambda: target
        narrow = insn.cls == EbpfClass.JMP32
        mask = MASK32 if narrow else MASK64
        use_reg = bool(insn.code & Source.X)
        src, dst = insn.src, insn.dst
        imm = insn.imm & mask  # sign-extended to the compare width
        sgn = _s32 if narrow else _s64
        conds: dict[int, Callable[[int, int], bool]] = {
            JmpOp.JEQ: lambda a, b: a == b,
            JmpOp.JNE: lambda a, b: a != b,
            JmpOp.JGT: lambda a, b: a > b,
            JmpOp.JGE: lambda a, b: a >= b,
            JmpOp.JLT: lambda a, b: a < b,
            JmpOp.JLE: lambda a, b: a <= b,
            JmpOp.JSET: lambda a, b: bool(a & b),
            JmpOp.JSGT: lambda a, b: sgn(a) > sgn(b),
            JmpOp.JSGE: lambda a, b: sgn(a) >= sgn(b),
            JmpOp.JSLT: lambda a, b: sgn(a) < sgn(b),
            JmpOp.JSLE: lambda a, b: sgn(a) <= sgn(b),
        }
        if op not in conds:
            raise InterpError(f"insn {i}: unsupported {ebpf.format_insn(insn)}")
        cond = conds[op]
        if use_reg:

            def jmp_reg() -> int:
                return target if cond(read(dst, i) & mask, read(src, i) & mask) else nxt

            return jmp_reg

        def jmp_imm() -> int:
            return target if cond(read(dst, i) & mask, imm) else nxt

        return jmp_imm


PACKET_ADDR = 0xFFFF_8880_1234_0000


def run_filter(machine: Machine, packet: bytes, *, fault_reads: bool = False) -> int:
    """Run a translated filter body over ``packet`` (the stub's calling convention)."""
    base = PACKET_ADDR
    return (
        machine.run((base, base + len(packet)), [(base, packet)], fault_reads=fault_reads) & MASK32
    )
