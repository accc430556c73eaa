"""pwru/abi.py agrees with bpf/pwru.h: sizes, the decoder's struct format, and
member offsets read from the BTF of the built BPF object (``make bpf``).

The BTF check fails, rather than skips, when the object is missing: ``make``
builds it, and a layout change that is not mirrored in Python must not go unseen.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pwru.bpf import abi

ROOT = Path(__file__).resolve().parents[2]
BPF_OBJECT = ROOT / "pwru" / "bpf" / "pwru_x86.bpf.o"

STRUCTS: dict[str, type[ctypes.Structure]] = {
    "pwru_tuple": abi.RawTuple,
    "pwru_event": abi.RawEvent,
    "pwru_config": abi.Config,
    "pwru_packet": abi.RawPacket,
    "pwru_bpfmap": abi.RawBpfmap,
}


def test_sizes() -> None:
    assert ctypes.sizeof(abi.RawTuple) == 40
    assert ctypes.sizeof(abi.RawEvent) == 216
    assert ctypes.sizeof(abi.Config) == 72
    assert abi.EVENT_STRUCT.size == abi.EVENT_SIZE == 216
    assert abi.TUPLE_STRUCT.size == 40
    assert abi.CONFIG_SIZE == 72
    assert ctypes.sizeof(abi.RawBpfmap) == abi.BPFMAP_STRUCT.size == 544


def test_constants() -> None:
    assert (abi.PWRU_EVENT_KPROBE, abi.PWRU_EVENT_KPROBE_MULTI, abi.PWRU_EVENT_TC,
            abi.PWRU_EVENT_XDP, abi.PWRU_EVENT_TRACEPOINT) == (0, 1, 2, 3, 4)  # fmt: skip
    assert (abi.PWRU_EVENT_HAS_REASON, abi.PWRU_EVENT_HAS_TUPLE,
            abi.PWRU_EVENT_HAS_TUNNEL, abi.PWRU_EVENT_HAS_STACK) == (1, 2, 4, 8)  # fmt: skip
    assert abi.PWRU_PROBE_ID_MARKER == 0x7077727500000000
    assert abi.PWRU_PROBE_ID_MARKER >> 32 == abi.PWRU_PROBE_ID_MARKER_HI
    assert abi.PWRU_EVENT_HAS_BPFMAP == 32 and abi.PWRU_BPFMAP_HAS_VALUE == 1
    assert abi.PWRU_PROBE_BY_ADDR == 0xFFFFFFFF


def test_header_constants_match() -> None:
    header = (ROOT / "bpf" / "pwru.h").read_text()
    defines = dict(re.findall(r"#define\s+(PWRU_\w+)\s+(\w+)", header))
    for name, value in defines.items():
        if name == "PWRU_H":
            continue
        assert getattr(abi, name) == int(value.rstrip("ULul"), 0), name
    enums = re.findall(r"\b(PWRU_(?:EVENT|LINK|PACKET|BPFMAP)_\w+)\s*=\s*([^,\n]+),", header)
    assert len(enums) == 18
    for name, expr in enums:
        expr = expr.split("/*")[0].strip()
        assert getattr(abi, name) == eval(expr, {}), name  # "1 << 2" or "3"


def test_event_struct_matches_ctypes() -> None:
    """Every member written through ctypes comes back at its place in EVENT_STRUCT."""
    ev = abi.RawEvent()
    ev.ts, ev.skb_addr, ev.func_ip, ev.caller_ip, ev.reason = 1, 2, 3, 4, 5
    ev.probe_id, ev.pid, ev.cpu, ev.type, ev.flags, ev.stack_id = 6, 7, 8, 9, 10, -11
    ev.netns, ev.mark, ev.ifindex, ev.len, ev.mtu, ev.protocol = 12, 13, 14, 15, 16, 17
    ev._pad0 = 0xFFFF
    for tup, base in ((ev.tuple, 0x20), (ev.tunnel_tuple, 0x60)):
        for i in range(16):
            tup.saddr[i] = base + i
            tup.daddr[i] = base + 16 + i
        tup.sport, tup.dport, tup.l3_proto = base + 33, base + 34, base + 35
        tup.l4_proto, tup.tcp_flags = base + 36, base + 37
    for i in range(4):
        ev.skb_metadata[i] = 100 + i
    ev.comm = b"comm-name"
    values = abi.EVENT_STRUCT.unpack(bytes(ev))
    assert values[:17] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -11, 12, 13, 14, 15, 16, 17)
    assert values[17] == bytes(ev.tuple)
    assert values[18] == bytes(ev.tunnel_tuple)
    assert values[19:23] == (100, 101, 102, 103)
    assert values[23] == b"comm-name" + bytes(7)
    t = abi.TUPLE_STRUCT.unpack(values[17])
    assert t == (bytes(range(0x20, 0x30)), bytes(range(0x30, 0x40)), 0x41, 0x42, 0x43, 0x44, 0x45)


def test_bpfmap_struct_matches_ctypes() -> None:
    """BPFMAP_STRUCT reads every member of RawBpfmap where ctypes put it."""
    raw = abi.RawBpfmap(id=7, key_size=4, value_size=300, flags=abi.PWRU_BPFMAP_HAS_VALUE)
    raw.name = b"vm_tc_counts"
    for i in range(abi.PWRU_BPFMAP_DATA_LEN):
        raw.key[i], raw.value[i] = i, 255 - i
    values = abi.BPFMAP_STRUCT.unpack(bytes(raw))
    assert values[:4] == (7, 4, 300, 1)
    assert values[4] == b"vm_tc_counts" + bytes(4)
    assert values[5] == bytes(range(256))
    assert values[6] == bytes(255 - i for i in range(256))


# --- against the BTF of the built object ----------------------------------------

_STRUCT_RE = re.compile(r"^\[\d+\] STRUCT '(\w+)' size=(\d+) vlen=(\d+)$")
_MEMBER_RE = re.compile(r"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)")


def btf_structs(obj: Path) -> dict[str, tuple[int, list[tuple[str, int]]]]:
    """struct name -> (size, [(member, bit offset)]) from ``bpftool btf dump``."""
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(obj), "format", "raw"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    structs: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    current: list[tuple[str, int]] | None = None
    for line in out.splitlines():
        m = _STRUCT_RE.match(line)
        if m:
            current = []
            structs[m.group(1)] = (int(m.group(2)), current)
            continue
        m = _MEMBER_RE.match(line)
        if m and current is not None:
            current.append((m.group(1), int(m.group(2))))
        elif not line.startswith(("\t", " ")):
            current = None
    return structs


def ctypes_members(cls: type[ctypes.Structure]) -> list[tuple[str, int]]:
    """[(member, bit offset)] as BTF lists them."""
    return [(name, getattr(cls, name).offset * 8) for name, *_ in cls._fields_]


def compile_layout_probe(arch: str, tmp_path: Path) -> Path:
    """Compile bpf/pwru.h the way the object is built, with every struct anchored in BTF.

    The shipped object only records types its globals reference (pwru_config via
    CFG); the event structs live in inlined code, so a probe file anchors them.
    """
    assert shutil.which("clang"), (
        "clang is needed to compile the layout probe (make setup installs it)"
    )
    probe = tmp_path / "layout_probe.c"
    probe.write_text(
        '#include "vmlinux.h"\n#include "pwru.h"\n'
        + "".join(f"struct {name} probe_{name};\n" for name in STRUCTS)
    )
    obj = tmp_path / f"layout_probe_{arch}.o"
    subprocess.run(
        ["clang", "-target", "bpf", "-O2", "-g", f"-D__TARGET_ARCH_{arch}",
         f"-I{ROOT / 'bpf'}", f"-I{ROOT / 'vmlinux-headers' / arch}",
         "-c", str(probe), "-o", str(obj)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return obj


@pytest.mark.parametrize("arch", ["x86", "arm64"])
def test_offsets_match_header_btf(arch: str, tmp_path: Path) -> None:
    structs = btf_structs(compile_layout_probe(arch, tmp_path))
    for name, cls in STRUCTS.items():
        size, members = structs[name]
        assert members == ctypes_members(cls), f"struct {name} members/offsets differ ({arch})"
        assert size == ctypes.sizeof(cls), f"struct {name} size differs ({arch})"


@pytest.mark.parametrize("arch", ["x86", "arm64"])
def test_shipped_object_config_matches(arch: str) -> None:
    """The shipped objects were built from the current header (pwru_config via CFG)."""
    obj = BPF_OBJECT.with_name(f"pwru_{arch}.bpf.o")
    assert obj.exists(), f"{obj} is missing: run `make bpf`"
    size, members = btf_structs(obj)["pwru_config"]
    assert (size, members) == (ctypes.sizeof(abi.Config), ctypes_members(abi.Config))
