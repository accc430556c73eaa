"""The ctypes copies of libbpf's option structs in pwru.bpf.libbpf put every member
where the system's libbpf headers do (a member left out before others shifts them:
libbpf then reads garbage, e.g. kprobe-multi flags from an address). Members newer
than the installed libbpf must lie past its struct's end (libbpf checks that those
bytes are zero); bitfields have no offsetof and are left out."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pwru.bpf import libbpf

# ctypes class -> (C struct, members of a nested ctypes struct as "outer.inner")
STRUCTS: dict[type[ctypes.Structure], str] = {
    libbpf.BpfObjectOpenOpts: "bpf_object_open_opts",
    libbpf.BpfProgLoadOpts: "bpf_prog_load_opts",
    libbpf.BpfTestRunOpts: "bpf_test_run_opts",
    libbpf.BpfKprobeMultiOpts: "bpf_kprobe_multi_opts",
    libbpf.BpfKprobeOpts: "bpf_kprobe_opts",
    libbpf.BpfLinkCreateOpts: "bpf_link_create_opts",
    libbpf.BpfProgInfo: "bpf_prog_info",
}


def members(cls: type[ctypes.Structure], prefix: str = "", base: int = 0) -> list[tuple[str, int]]:
    """(C member path, byte offset) of every ctypes field, nested structs unrolled."""
    found = []
    for name, ftype, *_ in cls._fields_:
        offset = base + getattr(cls, name).offset
        if isinstance(ftype, type) and issubclass(ftype, ctypes.Structure):
            found += members(ftype, f"{prefix}{name}.", offset)
        else:
            found.append((prefix + name, offset))
    return found


HEADERS = [Path("/usr/include/bpf/libbpf.h"), Path("/usr/include/bpf/bpf.h"),
           Path("/usr/include/linux/bpf.h")]  # fmt: skip


def declared(cname: str) -> str:
    """The body of ``struct cname`` in the installed headers."""
    text = "".join(h.read_text() for h in HEADERS if h.exists())
    start = text.find(f"struct {cname} {{")
    assert start >= 0, f"struct {cname} not in {HEADERS} (libbpf-dev installed?)"
    depth, end = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
        end += 1


def known(cname: str, path: str) -> bool | None:
    """True: an ordinary member; False: the header has none such; None: a bitfield."""
    if path.startswith("_"):
        return False
    body = declared(cname)
    last = path.rsplit(".", 1)[-1]
    if re.search(rf"\b{last}\s*:\s*\d", body):
        return None
    return re.search(rf"\b{last}\b", body) is not None


def c_offsets(tmp_path: Path) -> dict[str, int]:
    """'struct.member' -> offsetof ('struct.' -> sizeof), printed by a program built
    against the installed <bpf/*.h>."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (make setup installs gcc)"
    lines = []
    for cls, cname in STRUCTS.items():
        lines.append(f'printf("{cname}. %zu\\n", sizeof(struct {cname}));')
        for path, _ in members(cls):
            if known(cname, path):
                lines.append(f'printf("{cname}.{path} %zu\\n", offsetof(struct {cname}, {path}));')
    source = tmp_path / "offsets.c"
    source.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <bpf/libbpf.h>\n#include <bpf/bpf.h>\n"
        "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    binary = tmp_path / "offsets"
    build = subprocess.run([cc, str(source), "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, f"libbpf headers missing? (libbpf-dev)\n{build.stderr}"
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {path: int(offset) for path, offset in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda cls: cls.__name__)
def test_members_where_libbpf_has_them(cls: type[ctypes.Structure], tmp_path: Path) -> None:
    expected = c_offsets(tmp_path)
    cname = STRUCTS[cls]
    known_end = 0  # end of the last member this libbpf knows
    for path, offset in members(cls):
        there = known(cname, path)
        if path.startswith("_"):  # a placeholder for a removed member (unnamed in C)
            continue
        if there:
            assert offset == expected[f"{cname}.{path}"], f"{cname}.{path}"
            known_end = offset + 1
        elif there is False:  # newer than this libbpf: after everything it knows
            assert offset >= known_end, f"{cname}.{path}"
