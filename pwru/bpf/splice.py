"""Edit a program's final instructions just before the kernel sees them.

Two edits, both made in libbpf's prepare-load hook (see loader.py), where the
instructions are final: CO-RE relocated, subprograms appended, map fds in place.

* ``patch_probe_id``: each probe program loads PWRU_PROBE_ID_MARKER once; its
  low half becomes the probe's index, so one compiled program can be loaded for
  many attach points and every event says which one fired.
* ``replace_functions``: swap the body of a static subprogram (a pcap filter
  stub) for translated code. Subprograms are found by name through the BTF
  func_info libbpf passes with the program, and func_info/line_info offsets
  and the pc-relative calls around the edit are shifted so the verifier sees a
  consistent program.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from pwru.filter.ebpf import LD_IMM64
from pwru.filter.opcodes import CallSrc, Class, Imm64Src, JmpOp

INSN = struct.Struct("<BBhi")  # code, dst:4|src:4, off, imm
INSN_SIZE = 8

_CALL = Class.JMP | JmpOp.CALL

PROBE_ID_MARKER_HI = 0x70777275  # high half of PWRU_PROBE_ID_MARKER (bpf/pwru.h)


class SpliceError(Exception):
    """The program does not have the shape the splicer expects."""


def _insn(code: bytes, index: int) -> tuple[int, int, int, int]:
    c, regs, off, imm = INSN.unpack_from(code, index * INSN_SIZE)
    return c, regs, off, imm


_MARKER_HI = struct.pack("<I", PROBE_ID_MARKER_HI)


def _probe_id_markers(code: bytes) -> list[int]:
    """Slots of the (still unpatched) probe-id markers of ``code``: an LD_IMM64 of
    src 0 and low half 0 whose second slot holds the marker's high half. Found by
    searching the bytes for that high half (decoding each of the ~3000 instructions
    of every copy took ~50 ms of pwru's start)."""
    found = []
    last = len(code) // INSN_SIZE - 1  # the slot after a marker's first must exist
    at = code.find(_MARKER_HI)
    while at >= 0:
        i = at // INSN_SIZE - 1
        if at % INSN_SIZE == 4 and 0 <= i < last:
            c, regs, _, imm = _insn(code, i)
            if c == LD_IMM64 and regs >> 4 == 0 and imm == 0:
                found.append(i)
        at = code.find(_MARKER_HI, at + 1)
    return found


def has_probe_id(code: bytes) -> bool:
    """Whether the program reads its probe id (some, like an fexit that only cleans up,
    do not)."""
    return bool(_probe_id_markers(code))


def patch_probe_id(code: bytes, probe_id: int) -> bytes:
    """Write ``probe_id`` into the probe-id markers of ``code``: one probe_id() call in
    the source, but clang may copy the inlined marker into several branches."""
    found = _probe_id_markers(code)
    if not found:
        raise SpliceError("expected a probe-id marker, found none")
    out = bytearray(code)
    for slot in found:
        struct.pack_into("<i", out, slot * INSN_SIZE + 4, probe_id)
    return bytes(out)


@dataclass
class Program:
    """Instructions plus the BTF records that describe them (libbpf's view)."""

    code: bytes
    func_info: bytes
    func_info_rec_size: int
    line_info: bytes
    line_info_rec_size: int

    @property
    def insn_count(self) -> int:
        return len(self.code) // INSN_SIZE


def _records(data: bytes, rec_size: int) -> list[bytearray]:
    return [bytearray(data[i : i + rec_size]) for i in range(0, len(data), rec_size)]


def _rec_off(rec: bytearray) -> int:
    return int(struct.unpack_from("<I", rec, 0)[0])


def function_ranges(prog: Program, type_name: Callable[[int], str]) -> dict[str, tuple[int, int]]:
    """Map each (sub)program name to its [start, end) instruction range."""
    starts = sorted(
        (_rec_off(r), int(struct.unpack_from("<I", r, 4)[0]))
        for r in _records(prog.func_info, prog.func_info_rec_size)
    )
    ranges: dict[str, tuple[int, int]] = {}
    for i, (start, type_id) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else prog.insn_count
        ranges[type_name(type_id)] = (start, end)
    return ranges


def _replace_range(prog: Program, start: int, end: int, body: bytes) -> Program:
    if len(body) % INSN_SIZE or not body:
        raise SpliceError("replacement body must be whole, non-empty instructions")
    delta = len(body) // INSN_SIZE - (end - start)
    code = bytearray(prog.code)

    # pc-relative calls (and function pointers) that cross the edited range
    whole = prog.code[: prog.insn_count * INSN_SIZE]
    for pos, (c, regs, _, imm) in enumerate(INSN.iter_unpack(whole)):
        if start <= pos < end:
            continue
        src = regs >> 4
        if not (
            (c == _CALL and src == CallSrc.LOCAL)
            or (c == LD_IMM64 and src == Imm64Src.FUNC)
        ):
            continue
        target = pos + 1 + imm
        if pos < start and target >= end:
            imm += delta
        elif pos >= end and target <= start:
            imm -= delta
        elif start < target < end:
            raise SpliceError("a call targets the middle of the replaced function")
        struct.pack_into("<i", code, pos * INSN_SIZE + 4, imm)

    new_code = bytes(code[: start * INSN_SIZE]) + body + bytes(code[end * INSN_SIZE :])

    def shift(data: bytes, rec_size: int, drop_inside: bool) -> bytes:
        out = bytearray()
        offsets = struct.iter_unpack(f"<I{rec_size - 4}x", data)  # one per record
        for at, (off,) in zip(range(0, len(data), rec_size), offsets):
            if drop_inside and start < off < end:
                continue  # the old body's lines no longer exist
            if off >= end:
                out += struct.pack("<I", off + delta)
                out += data[at + 4 : at + rec_size]
            else:
                out += data[at : at + rec_size]
        return bytes(out)

    return Program(
        new_code,
        shift(prog.func_info, prog.func_info_rec_size, False),
        prog.func_info_rec_size,
        shift(prog.line_info, prog.line_info_rec_size, True),
        prog.line_info_rec_size,
    )


def replace_functions(
    prog: Program, bodies: Mapping[str, bytes], type_name: Callable[[int], str]
) -> Program:
    """Replace the named subprograms' bodies; names absent from ``prog`` are ignored
    (clang drops stubs a program never calls)."""
    for name, body in bodies.items():
        ranges = function_ranges(prog, type_name)
        if name in ranges:
            start, end = ranges[name]
            if start == 0:
                raise SpliceError(f"{name} is the main program, not a subprogram")
            prog = _replace_range(prog, start, end, body)
    return prog
