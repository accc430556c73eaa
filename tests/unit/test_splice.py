"""The probe-id marker: every copy clang made of it gets the probe's id."""

from __future__ import annotations

import pytest

from pwru.bpf.splice import (
    INSN,
    LD_IMM64,
    PROBE_ID_MARKER_HI,
    SpliceError,
    has_probe_id,
    patch_probe_id,
)

EXIT = INSN.pack(0x95, 0, 0, 0)


def marker(reg: int) -> bytes:
    """``reg = 0x7077727500000000 ll``: probe_id()'s two-slot load."""
    return INSN.pack(LD_IMM64, reg, 0, 0) + INSN.pack(0, 0, 0, PROBE_ID_MARKER_HI)


def immediates(code: bytes) -> list[int]:
    return [INSN.unpack_from(code, i)[3] for i in range(0, len(code), INSN.size)]


def test_every_copy_of_the_marker_is_patched() -> None:
    code = marker(1) + INSN.pack(0x05, 0, 2, 0) + marker(2) + marker(3) + EXIT
    assert has_probe_id(code)
    patched = patch_probe_id(code, 42)
    imms = immediates(patched)
    assert [imms[0], imms[3], imms[5]] == [42, 42, 42]
    assert not has_probe_id(patched)  # nothing left to patch
    assert len(patched) == len(code)


def test_a_program_without_the_marker_is_refused() -> None:
    code = INSN.pack(0xB7, 0, 0, 7) + EXIT
    assert not has_probe_id(code)
    with pytest.raises(SpliceError, match="found none"):
        patch_probe_id(code, 1)
