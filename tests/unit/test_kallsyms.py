"""pwru.kernel.kallsyms: kallsyms parsing and lookups on small synthetic files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pwru.errors import EnvironmentProblem
from pwru.kernel.kallsyms import Kallsyms, Symbol

# Shaped like /proc/kallsyms: vmlinux sorted first (with data symbols, __pfx_
# padding symbols, an alias and a repeated static name), then modules, the ftrace
# trampoline and BPF programs, the latter two out of address order.
KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 T __pfx_ip_rcv
ffffffff81001010 T ip_rcv
ffffffff81001100 t __pfx_helper
ffffffff81001110 t helper
ffffffff81001200 W weak_fn
ffffffff81001300 t alias_first
ffffffff81001300 t alias_second
ffffffff81001400 t helper
ffffffff81001500 T __pfx_kfree_skb_reason
ffffffff81001510 T kfree_skb_reason
ffffffff82000000 D some_data
ffffffff82000100 R some_rodata
ffffffff82000200 B some_bss
ffffffffc0100000 t mod_rcv\t[veth]
ffffffffc0100100 t helper\t[veth]
ffffffffc0100200 T veth_xmit\t[veth]
ffffffffc0100300 d veth_data\t[veth]
ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]
ffffffffc0025b8c t bpf_prog_37bbfbc8cbb09896_pwru\t[bpf]
"""


def load(tmp_path: Path, text: str = KALLSYMS) -> Kallsyms:
    path = tmp_path / "kallsyms"
    path.write_text(text)
    return Kallsyms.load(str(path))


def test_text_symbols_only(tmp_path: Path) -> None:
    ks = load(tmp_path)
    assert len(ks) == 17  # 21 lines, less D, R, B and the module's d
    for name in ("some_data", "some_rodata", "some_bss", "veth_data"):
        assert ks.address(name) is None
    assert ks.address("weak_fn") == 0xFFFFFFFF81001200


def test_address_and_addresses(tmp_path: Path) -> None:
    ks = load(tmp_path)
    assert ks.address("ip_rcv") == 0xFFFFFFFF81001010
    assert ks.addresses("ip_rcv") == [0xFFFFFFFF81001010]
    assert ks.address("nope") is None
    assert ks.addresses("nope") == []
    # Static functions in two files plus one in a module: ambiguous unless narrowed.
    assert ks.address("helper") is None
    assert ks.addresses("helper") == [0xFFFFFFFF81001110, 0xFFFFFFFF81001400, 0xFFFFFFFFC0100100]
    assert ks.addresses("helper", module="") == [0xFFFFFFFF81001110, 0xFFFFFFFF81001400]
    assert ks.address("helper", module="veth") == 0xFFFFFFFFC0100100
    assert ks.address("ip_rcv", module="veth") is None
    assert ks.address("veth_xmit", module="veth") == 0xFFFFFFFFC0100200


def test_module(tmp_path: Path) -> None:
    ks = load(tmp_path)
    assert ks.module("ip_rcv") == ""
    assert ks.module("veth_xmit") == "veth"
    assert ks.module("bpf_prog_37bbfbc8cbb09896_pwru") == "bpf"
    assert ks.module("helper") == ""  # lowest address wins
    assert ks.module("nope") is None


def test_name_at_nearest_below(tmp_path: Path) -> None:
    ks = load(tmp_path)
    ip_rcv = 0xFFFFFFFF81001010
    assert ks.name_at(ip_rcv) == "ip_rcv"
    assert ks.name_at(ip_rcv + 4) == "ip_rcv"  # after endbr64 (IBT)
    assert ks.name_at(ip_rcv + 0x80) == "ip_rcv"
    assert ks.name_at(ip_rcv - 1) == "__pfx_ip_rcv"  # the padding before it
    assert ks.name_at(0xFFFFFFFF80FFFFFF) is None  # below the first symbol
    assert ks.name_at(0) is None
    assert ks.name_at(0xFFFFFFFFC0100204) == "veth_xmit"
    assert ks.symbol_at(0xFFFFFFFFC0100204) == Symbol(0xFFFFFFFFC0100200, "veth_xmit", "veth")


def test_aliases_first_listed_wins(tmp_path: Path) -> None:
    ks = load(tmp_path)
    assert ks.name_at(0xFFFFFFFF81000000) == "_stext"
    assert ks.name_at(0xFFFFFFFF81001300) == "alias_first"
    assert ks.name_at(0xFFFFFFFF81001304) == "alias_first"
    assert ks.address("alias_second") == 0xFFFFFFFF81001300


def test_unsorted_tail_is_merged(tmp_path: Path) -> None:
    ks = load(tmp_path)
    # The BPF program (listed last) lies below the module symbols.
    bpf = 0xFFFFFFFFC0025B8C
    assert ks.name_at(bpf + 0x10) == "bpf_prog_37bbfbc8cbb09896_pwru"
    assert ks.name_at(0xFFFFFFFFC00FFFFF) == "bpf_prog_37bbfbc8cbb09896_pwru"
    assert ks.name_at(0xFFFFFFFFC0201000 + 8) == "ftrace_trampoline"


def test_modules_interleaved_with_vmlinux(tmp_path: Path) -> None:
    # arm64 places modules below the kernel image; and a module symbol at a vmlinux
    # symbol's address sorts after it.
    text = (
        "ffff800080010000 T _text\n"
        "ffff800080010100 T ip_rcv\n"
        "ffff800080020000 T dev_queue_xmit\n"
        "ffff800070000000 t low_mod_fn\t[low]\n"
        "ffff800080010800 t between\t[mid]\n"
        "ffff800080020000 t same_addr\t[mid]\n"
        "ffff800090000000 t high_mod_fn\t[high]\n"
    )
    ks = load(tmp_path, text)
    assert ks.symbolize(0xFFFF800070000004) == "low_mod_fn+0x4 [low]"
    assert ks.name_at(0xFFFF800080010104) == "ip_rcv"
    assert ks.name_at(0xFFFF800080010804) == "between"
    assert ks.name_at(0xFFFF800080020004) == "dev_queue_xmit"
    assert ks.name_at(0xFFFF800090000000) == "high_mod_fn"
    assert len(ks) == 7


def test_symbolize(tmp_path: Path) -> None:
    ks = load(tmp_path)
    assert ks.symbolize(0xFFFFFFFF81001010) == "ip_rcv"
    assert ks.symbolize(0xFFFFFFFF8100102C) == "ip_rcv+0x1c"
    assert ks.symbolize(0xFFFFFFFFC0100204) == "veth_xmit+0x4 [veth]"
    assert ks.symbolize(0xFFFFFFFFC0100100) == "helper [veth]"
    assert ks.symbolize(0x1234) == "0x1234"


def test_find(tmp_path: Path) -> None:
    ks = load(tmp_path)
    found = ks.find(["helper", "ip_rcv", "nope", "some_data"])
    assert found == {
        "ip_rcv": [Symbol(0xFFFFFFFF81001010, "ip_rcv", "")],
        "helper": [
            Symbol(0xFFFFFFFF81001110, "helper", ""),
            Symbol(0xFFFFFFFF81001400, "helper", ""),
            Symbol(0xFFFFFFFFC0100100, "helper", "veth"),
        ],
    }


def test_kernel_only_file_and_no_trailing_newline(tmp_path: Path) -> None:
    ks = load(tmp_path, "ffffffff81000000 T a\nffffffff81000010 t b")
    assert ks.address("b") == 0xFFFFFFFF81000010
    ks = load(tmp_path, "ffffffff81000000 T a\nffffffffc0000000 t m\t[mod]")
    assert ks.symbolize(0xFFFFFFFFC0000001) == "m+0x1 [mod]"


def test_mixed_tail_lines(tmp_path: Path) -> None:
    # After the first module line, a line without a module still parses.
    text = "ffffffff81000000 T a\nffffffffc0000000 t m\t[mod]\nffffffffc0001000 t plain\n"
    ks = load(tmp_path, text)
    assert ks.module("plain") == ""
    assert ks.module("m") == "mod"


def test_32bit_and_unpadded_addresses(tmp_path: Path) -> None:
    ks = load(tmp_path, "c1000000 T _text\nc1000100 T ip_rcv\n")
    assert ks.address("ip_rcv") == 0xC1000100
    ks = load(tmp_path, "1000 T a\nffffffff81000000 T b\n")
    assert ks.address("a") == 0x1000
    assert ks.name_at(0xFFFFFFFF81000001) == "b"


def test_hidden_addresses(tmp_path: Path) -> None:
    text = KALLSYMS
    for line in text.splitlines():
        text = text.replace(line.split()[0], "0" * 16)
    with pytest.raises(EnvironmentProblem, match="kptr_restrict"):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no function symbols"),
        ("ffffffff82000000 D only_data\n", "no function symbols"),
        ("ffffffff81000000 T\n", "malformed"),
        ("ffffffff81000000 T a extra\n", "malformed"),
        ("zzzzzzzzzzzzzzzz T a\n", "malformed address"),
        ("ffffffff81000000 T a\nffffffffc0000000 t m\t[mod] x y\n", "malformed line"),
    ],
)
def test_malformed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EnvironmentProblem, match=message):
        load(tmp_path, text)


def test_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(EnvironmentProblem, match=f"cannot read {missing}: No such file"):
        Kallsyms.load(str(missing))
    with pytest.raises(EnvironmentProblem, match="cannot read"):
        Kallsyms.load(str(tmp_path))  # a directory


def test_parallel_lists_must_match() -> None:
    from array import array

    with pytest.raises(ValueError, match="differ"):
        Kallsyms(array("Q", [1]), ["a", "b"], [""])
