"""pwru.filter.ebpf: instruction model, encoding, labels, disassembly (no kernel)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from pwru.filter import ebpf
from pwru.filter.ebpf import (
    FP,
    R0,
    R1,
    R2,
    R3,
    R6,
    R8,
    R9,
    Builder,
    DecodeError,
    EncodeError,
    Insn,
)
from pwru.filter.opcodes import AluOp, AtomicOp, CallSrc, EbpfClass, Imm64Src, JmpOp


def slots(code: bytes) -> list[tuple[int, int, int, int]]:
    return list(struct.iter_unpack("<BBhi", code))


# ---------------------------------------------------------------- encoding


def test_encode_known_bytes() -> None:
    # r1 = *(u32 *)(r10 - 8): 0x61, dst 1 src 10, off -8
    assert ebpf.encode([ebpf.ldx_mem(4, R1, FP, -8)]) == bytes.fromhex("61a1f8ff00000000")
    # w8 = -1 (mov32 imm): zero-extended 0xffffffff
    assert ebpf.encode([ebpf.mov32_imm(R8, 0xFFFFFFFF)]) == bytes.fromhex("b4080000ffffffff")
    # call bpf_probe_read_kernel
    assert ebpf.encode([ebpf.call_helper(113)]) == bytes.fromhex("8500000071000000")
    assert ebpf.encode([ebpf.exit_insn()]) == bytes.fromhex("9500000000000000")
    # r8 = be16 r8
    assert ebpf.encode([ebpf.endian(R8, 16)]) == bytes.fromhex("dc08000010000000")


def test_ld_imm64_uses_two_slots() -> None:
    insn = ebpf.ld_imm64(R1, 0x1122334455667788)
    assert insn.slots == 2
    code = ebpf.encode([insn, ebpf.exit_insn()])
    assert len(code) == 24
    assert slots(code)[:2] == [(0x18, 1, 0, 0x55667788), (0, 0, 0, 0x11223344)]
    assert ebpf.decode(code) == [insn, ebpf.exit_insn()]


def test_ld_imm64_negative_is_normalised() -> None:
    assert ebpf.ld_imm64(R1, -1).imm == 0xFFFF_FFFF_FFFF_FFFF
    code = ebpf.encode([ebpf.ld_imm64(R1, -1)])
    assert ebpf.decode(code)[0].imm == 0xFFFF_FFFF_FFFF_FFFF


def test_decode_encode_round_trip_random() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        insns: list[Insn] = []
        for _ in range(rnd.randrange(1, 20)):
            if rnd.random() < 0.1:
                insns.append(ebpf.ld_imm64(rnd.randrange(11), rnd.getrandbits(64)))
            else:
                insns.append(
                    Insn(
                        rnd.choice([0x07, 0x0F, 0x04, 0x61, 0x7B, 0x15, 0x16, 0x05, 0x85, 0x95]),
                        rnd.randrange(16),
                        rnd.randrange(16),
                        rnd.randrange(-(1 << 15), 1 << 15),
                        rnd.randrange(-(1 << 31), 1 << 31),
                    )
                )
        code = ebpf.encode(insns)
        assert ebpf.decode(code) == insns
        assert ebpf.encode(ebpf.decode(code)) == code


def test_decode_errors() -> None:
    with pytest.raises(DecodeError):
        ebpf.decode(b"\x00" * 7)
    with pytest.raises(DecodeError, match="second half"):
        ebpf.decode(bytes.fromhex("1801000001000000"))
    with pytest.raises(DecodeError, match="second half"):
        ebpf.decode(bytes.fromhex("1801000001000000" + "0701000001000000"))


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(EncodeError):
        ebpf.encode([Insn(0x07, 16, 0, 0, 0)])
    with pytest.raises(EncodeError):
        ebpf.encode([Insn(0x07, 1, 0, 1 << 15, 0)])
    with pytest.raises(EncodeError):
        ebpf.mov64_imm(R1, 1 << 32)
    with pytest.raises(EncodeError):
        ebpf.size_code(3)


# ------------------------------------------------------------------ labels


def test_labels_resolve_forward_and_backward() -> None:
    insns = [
        ebpf.mov64_imm(R0, 0).with_label("start"),
        ebpf.jmp_imm(JmpOp.JEQ, R1, 0, "out"),
        ebpf.ld_imm64(R2, 1),  # two slots between the jump and its target
        ebpf.alu64_imm(AluOp.ADD, R0, 1).with_label("loop"),
        ebpf.jmp_imm(JmpOp.JNE, R0, 10, "loop"),
        ebpf.exit_insn().with_label("out"),
    ]
    code = ebpf.encode(insns)
    decoded = ebpf.decode(code)
    assert decoded[1].off == 4  # slots: 0 mov, 1 jeq, 2-3 ld_imm64, 4 add, 5 jne, 6 exit
    assert decoded[4].off == -2
    assert all(i.label is None and i.target is None for i in decoded)


def test_dangling_and_duplicate_labels() -> None:
    with pytest.raises(EncodeError, match="undefined label 'nowhere'"):
        ebpf.encode([ebpf.ja("nowhere"), ebpf.exit_insn()])
    with pytest.raises(EncodeError, match="twice"):
        ebpf.encode([ebpf.exit_insn().with_label("a"), ebpf.exit_insn().with_label("a")])
    with pytest.raises(EncodeError, match="non-jump"):
        ebpf.encode([Insn(0x07, 1, 0, 0, 1, target="x").with_label("x")])


def test_offset_must_fit_s16() -> None:
    far = [ebpf.ja("end")] + [ebpf.mov64_imm(R0, 0)] * 40000 + [ebpf.exit_insn().with_label("end")]
    with pytest.raises(EncodeError, match="does not fit s16"):
        ebpf.encode(far)
    # gotol (JMP32 | JA) keeps its offset in imm and reaches further
    gotol = Insn(EbpfClass.JMP32 | JmpOp.JA, target="end")
    code = ebpf.encode([gotol] + far[1:])
    assert ebpf.decode(code)[0].imm == 40000


def test_local_call_target_goes_to_imm() -> None:
    insns = [
        ebpf.call_local("sub"),
        ebpf.exit_insn(),
        ebpf.mov64_imm(R0, 1).with_label("sub"),
        ebpf.exit_insn(),
    ]
    decoded = ebpf.decode(ebpf.encode(insns))
    assert decoded[0].src == CallSrc.LOCAL and decoded[0].imm == 1


def test_builder_aliases_labels_on_one_instruction() -> None:
    b = Builder()
    b.emit(ebpf.ja("b"))
    b.label("a")
    b.label("b")
    b.label("c")
    b.emit(ebpf.exit_insn())
    out = b.build()
    assert out[1].label == "a"
    assert out[0].target == "a"
    with pytest.raises(EncodeError):
        b.label("a")
    b2 = Builder()
    b2.label("dangling")
    with pytest.raises(EncodeError, match="end of the stream"):
        b2.build()


def test_symbolize_then_edit() -> None:
    raw = ebpf.decode(
        ebpf.encode(
            [
                ebpf.jmp_imm(JmpOp.JEQ, R1, 0, "x"),
                ebpf.mov64_imm(R0, 1),
                ebpf.exit_insn(),
                ebpf.mov64_imm(R0, 2).with_label("x"),
                ebpf.exit_insn(),
            ]
        )
    )
    sym = ebpf.symbolize(raw)
    assert sym[0].target == "L3" and sym[3].label == "L3"
    # insert two instructions before the target: the jump still lands on it
    edited = sym[:1] + [ebpf.mov64_imm(R2, 0), ebpf.mov64_imm(R3, 0)] + sym[1:]
    assert ebpf.decode(ebpf.encode(edited))[0].off == 4


def test_remove_unreachable() -> None:
    insns = [
        ebpf.jmp_imm(JmpOp.JEQ, R1, 0, "b"),
        ebpf.ja("c"),
        ebpf.mov64_imm(R0, 7),  # dead
        ebpf.mov64_imm(R0, 1).with_label("b"),
        ebpf.exit_insn().with_label("c"),
        ebpf.mov64_imm(R0, 9).with_label("dead"),
        ebpf.exit_insn(),
    ]
    out = ebpf.remove_unreachable(insns)
    assert [i.imm for i in out if i.code == 0xB7] == [1]
    assert len(out) == 4


# ------------------------------------------------------------- disassembly


@pytest.mark.parametrize(
    ("insn", "text"),
    [
        (ebpf.ldx_mem(4, R1, FP, -8), "r1 = *(u32 *)(r10 - 8)"),
        (ebpf.ldx_mem(1, R8, FP, 16), "r8 = *(u8 *)(r10 + 16)"),
        (ebpf.stx_mem(8, FP, R1, -16), "*(u64 *)(r10 - 16) = r1"),
        (ebpf.st_mem(4, FP, -20, 0), "*(u32 *)(r10 - 20) = 0"),
        (ebpf.mov64_reg(R6, R1), "r6 = r1"),
        (ebpf.mov32_imm(R8, 0), "w8 = 0"),
        (ebpf.alu64_imm(AluOp.ADD, R1, -8), "r1 += -8"),
        (ebpf.alu32_reg(AluOp.SUB, R8, R9), "w8 -= w9"),
        (ebpf.alu32_imm(AluOp.LSH, R8, 2), "w8 <<= 2"),
        (ebpf.neg32(R8), "w8 = -w8"),
        (ebpf.endian(R8, 32), "r8 = be32 r8"),
        (ebpf.endian(R8, 16, big=False), "r8 = le16 r8"),
        (ebpf.jmp_imm(JmpOp.JNE, R0, 0, 3), "if r0 != 0x0 goto +3"),
        (ebpf.jmp32_imm(JmpOp.JEQ, R8, 0x86DD, -5), "if w8 == 0x86dd goto -5"),
        (ebpf.jmp32_reg(JmpOp.JSET, R8, R9, 1), "if w8 & w9 goto +1"),
        (ebpf.jmp_reg(JmpOp.JSGT, R1, R2, 0), "if r1 s> r2 goto +0"),
        (ebpf.ja(-2), "goto -2"),
        (ebpf.call_helper(113), "call bpf_probe_read_kernel#113"),
        (ebpf.call_helper(9999), "call 9999"),
        (ebpf.call_local(4), "call pc+4"),
        (ebpf.exit_insn(), "exit"),
        (ebpf.ld_imm64(R1, 0x1234), "r1 = 0x1234 ll"),
        (ebpf.ld_imm64(R1, 5, src=Imm64Src.MAP_FD), "r1 = map[5] ll"),
        (Insn(0xDB, R1, R2, 0, AluOp.ADD), "lock *(u64 *)(r1 + 0) += r2"),
        (
            Insn(0xDB, R1, R2, 8, AluOp.ADD | AtomicOp.FETCH),
            "r2 = atomic64_fetch_add((u64 *)(r1 + 8), r2)",
        ),
        (Insn(0xC3, R1, R2, -4, AtomicOp.XCHG), "w2 = atomic_xchg((u32 *)(r1 - 4), w2)"),
        (Insn(0x3F, R1, R2, 1), "r1 s/= r2"),
        (Insn(0xBF, R1, R2, 8), "r1 = (s8)r2"),
        (Insn(0x91, R1, R2, -4), "r1 = *(s8 *)(r2 - 4)"),
        (Insn(0xD7, R1, 0, 0, 32), "r1 = bswap32 r1"),
        (Insn(0xE0), "invalid insn 0xe0"),
        (Insn(0xFF), "invalid alu op 0xff"),
    ],
)
def test_format_insn(insn: Insn, text: str) -> None:
    assert ebpf.format_insn(insn) == text


def test_disassemble_shows_labels_and_offsets() -> None:
    lines = ebpf.disassemble(
        [
            ebpf.mov64_reg(R3, R1).with_label("f"),
            ebpf.jmp_imm(JmpOp.JNE, R0, 0, "f.out"),
            ebpf.ld_imm64(R1, 1),
            ebpf.mov32_imm(R0, 0).with_label("f.out"),
            ebpf.exit_insn(),
            ebpf.ja("missing"),
        ]
    )
    assert lines == [
        "f:",
        "    0: r3 = r1",
        "    1: if r0 != 0x0 goto +2 <f.out>",
        "    2: r1 = 0x1 ll",
        "f.out:",
        "    4: w0 = 0",
        "    5: exit",
        "    6: goto <missing>",
    ]


def test_every_opcode_prints_as_before() -> None:
    """All 256 opcodes with a spread of src, off, imm and targets print exactly as
    they did (a SHA-256 of the text: a change to the disassembler must be deliberate)."""
    digest = hashlib.sha256()
    for code in range(256):
        for src in range(7):
            for off in (0, 1, 8, -4):
                for imm in (0, 1, 16, 32, 64, -5, 0x41, 0xE1, 0xF1, 0x1_0000_0002):
                    digest.update(ebpf.format_insn(Insn(code, 3, src, off, imm)).encode() + b"\n")
            jump = Insn(code, 3, src, 2, 5, target="t")
            for delta in (None, -4):
                digest.update(ebpf.format_insn(jump, delta).encode() + b"\n")
    assert digest.hexdigest() == "040873c9963800de4202015db430bc140632f7940d9905f1e0339a7c35c7a070"
