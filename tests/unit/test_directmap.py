"""Where page fragments are read from: the x86_64 direct map's variables in kallsyms."""

from __future__ import annotations

from pathlib import Path

from pwru.kernel.directmap import NO_DIRECT_MAP, direct_map

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff82a1b0e8 D page_offset_base
ffffffff82a1b0f0 D vmemmap_base
ffffffff82a1b0f8 D vmalloc_base
"""


def test_found_in_kallsyms(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text(KALLSYMS)
    found = direct_map(str(path), machine="x86_64")
    assert (found.page_offset_base, found.vmemmap_base) == (0xFFFFFFFF82A1B0E8, 0xFFFFFFFF82A1B0F0)
    assert found.page_shift == 12


def test_not_found(tmp_path: Path) -> None:
    path = tmp_path / "kallsyms"
    path.write_text(KALLSYMS.replace("D vmemmap_base", "T vmemmap_populate"))
    assert direct_map(str(path), machine="x86_64") == NO_DIRECT_MAP  # no KALLSYMS_ALL
    path.write_text(KALLSYMS.replace("ffffffff82a1b0e8", "0000000000000000"))
    assert direct_map(str(path), machine="x86_64") == NO_DIRECT_MAP  # addresses hidden
    assert direct_map(str(tmp_path / "none"), machine="x86_64") == NO_DIRECT_MAP
    path.write_text(KALLSYMS)
    assert direct_map(str(path), machine="aarch64") == NO_DIRECT_MAP  # see the module's doc
