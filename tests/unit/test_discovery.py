"""pwru.kernel.discovery on synthetic BTF, kallsyms and tracefs files in a temporary directory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pwru.errors import UsageError
from pwru.kernel import discovery
from pwru.kernel.btf import BtfError, KernelBtf
from pwru.kernel.discovery import AttachTarget, Discovery, discover
from pwru.kernel.kallsyms import Kallsyms
from tests.unit.test_btf import Builder, kernel_like

VMLINUX_FUNCS = {  # name -> position of the sk_buff * (-1: none)
    "ip_rcv": 0,
    "sk_skb_reason_drop": 1,
    "helper": 0,  # static, in two files
    "untraced": 0,
    "inlined": 0,  # no symbol
    "alias_a": 2,  # alias_a and alias_b share an address
    "alias_b": 2,
    "sock_only": -1,
    "init_rcv": 0,  # __init: freed after boot
}
MODULE_FUNCS = {"veth_xmit": 0, "mod_rcv": 1, "helper": 0}

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff81001000 T __pfx_ip_rcv
ffffffff81001010 T ip_rcv
ffffffff81001100 T sk_skb_reason_drop
ffffffff81001200 t helper
ffffffff81001300 t helper
ffffffff81001400 t untraced
ffffffff81001500 t alias_a
ffffffff81001500 t alias_b
ffffffff81001600 T sock_only
ffffffff81001700 t inlined.isra.0
ffffffff83000000 T _sinittext
ffffffff83000100 t init_rcv
ffffffff83001000 T _einittext
ffffffffc0100000 t mod_rcv\t[veth]
ffffffffc0100100 t helper\t[veth]
ffffffffc0100200 T veth_xmit\t[veth]
"""
# ftrace's call sites: 4 bytes in (after endbr64), for every traceable copy.
TRACEABLE = {
    "ip_rcv": [0xFFFFFFFF81001014],
    "sk_skb_reason_drop": [0xFFFFFFFF81001104],
    "helper": [0xFFFFFFFF81001204, 0xFFFFFFFF81001304],
    "alias_a": [0xFFFFFFFF81001504],
    "sock_only": [0xFFFFFFFF81001604],
    "mod_rcv [veth]": [0xFFFFFFFFC0100004],
    "helper [veth]": [0xFFFFFFFFC0100104],
    "veth_xmit [veth]": [0xFFFFFFFFC0100204],
}
IP_RCV = AttachTarget("ip_rcv", 0, 0xFFFFFFFF81001010, "")
DROP = AttachTarget("sk_skb_reason_drop", 1, 0xFFFFFFFF81001100, "")
HELPER_1 = AttachTarget("helper", 0, 0xFFFFFFFF81001200, "")
HELPER_2 = AttachTarget("helper", 0, 0xFFFFFFFF81001300, "")
UNTRACED = AttachTarget("untraced", 0, 0xFFFFFFFF81001400, "")
ALIAS_A = AttachTarget("alias_a", 2, 0xFFFFFFFF81001500, "")
MOD_RCV = AttachTarget("mod_rcv", 1, 0xFFFFFFFFC0100000, "veth")
MOD_HELPER = AttachTarget("helper", 0, 0xFFFFFFFFC0100100, "veth")
VETH_XMIT = AttachTarget("veth_xmit", 0, 0xFFFFFFFFC0100200, "veth")


def everything(name: str) -> bool:
    return True


def add_funcs(b: Builder, t: dict[str, int], funcs: dict[str, int]) -> None:
    for name, position in funcs.items():
        params = [(f"a{i}", t["int"]) for i in range(max(position, 0) + 1)]
        if position >= 0:
            params[position] = ("skb", t["skb_ptr"])
        b.func(name, params)


class Machine:
    """Files shaped like /sys/kernel/btf, /proc/kallsyms and tracefs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        base, t = kernel_like()
        add_funcs(base, t, VMLINUX_FUNCS)
        module = Builder(base)
        add_funcs(module, t, MODULE_FUNCS)
        self.btf_dir = root / "btf"
        self.btf_dir.mkdir()
        (self.btf_dir / "vmlinux").write_bytes(base.build())
        (self.btf_dir / "veth").write_bytes(module.build())
        self.vmlinux = KernelBtf.load(str(self.btf_dir / "vmlinux"))
        (root / "kallsyms").write_text(KALLSYMS)
        self.ksyms = Kallsyms.load(str(root / "kallsyms"))
        self.tracing = root / "tracing"
        self.debug_tracing = root / "debug" / "tracing"
        self.tracing.mkdir()
        self.debug_tracing.mkdir(parents=True)

    def write_names(self, where: Path, drop: tuple[str, ...] = ()) -> None:
        lines = [name for name, ips in TRACEABLE.items() for _ in ips if name not in drop]
        (where / discovery.AVAILABLE).write_text("".join(f"{line}\n" for line in lines))

    def write_addrs(self, where: Path, drop: tuple[int, ...] = (), hide: bool = False) -> None:
        lines = [
            f"{0 if hide else ip:x} {name}\n"
            for name, ips in TRACEABLE.items()
            for ip in ips
            if ip not in drop
        ]
        (where / discovery.AVAILABLE_ADDRS).write_text("".join(lines))

    def discover(self, wanted: Callable[[str], bool] = everything, **kwargs: object) -> Discovery:
        options: dict[str, object] = {
            "btf_dir": str(self.btf_dir),
            "tracing_dirs": (str(self.tracing), str(self.debug_tracing)),
            "mount_tracefs": False,
        }
        options.update(kwargs)
        return discover(self.vmlinux, self.ksyms, wanted=wanted, **options)  # type: ignore[arg-type]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_names_list(machine: Machine) -> None:
    machine.write_names(machine.tracing)
    found = machine.discover()
    assert found.source == "available_filter_functions"
    assert found.functions == [ALIAS_A, HELPER_1, HELPER_2, IP_RCV, DROP]
    assert found.btf_total == 8  # sock_only takes no sk_buff
    # inlined; untraced, alias_b (ftrace names the address alias_a), init_rcv
    assert found.skipped == {"not in kallsyms": 1, "not traceable": 3}
    assert found.notes == []


def test_names_list_with_fewer_copies_than_kallsyms(machine: Machine) -> None:
    # ftrace lists helper once, kallsyms twice: which copy is traceable is unknown.
    (machine.tracing / discovery.AVAILABLE).write_text("ip_rcv\nhelper\n")
    found = machine.discover()
    assert found.functions == [IP_RCV]
    assert found.skipped == {"not in kallsyms": 1, "not traceable": 5, "ambiguous name": 1}


def test_addrs_list_is_exact(machine: Machine) -> None:
    machine.write_names(machine.tracing, drop=("ip_rcv",))  # ignored: the _addrs file wins
    machine.write_addrs(machine.tracing, drop=(0xFFFFFFFF81001304,))
    found = machine.discover()
    assert found.source == "available_filter_functions_addrs"
    assert found.functions == [ALIAS_A, HELPER_1, IP_RCV, DROP]  # the second helper is notrace
    # By address, alias_b is traceable (it is alias_a's code), then left out as an alias.
    assert found.skipped == {"not in kallsyms": 1, "not traceable": 2, "alias": 1}


def test_addrs_list_with_call_site_at_function_start(machine: Machine) -> None:
    (machine.tracing / discovery.AVAILABLE_ADDRS).write_text(
        "ffffffff81001010 ip_rcv\nffffffff81001300 helper\nffffffff81001401 untraced\n"
    )
    found = machine.discover()
    assert found.functions == [HELPER_2, IP_RCV, UNTRACED]


def test_addrs_list_call_sites_must_be_at_function_start(machine: Machine) -> None:
    (machine.tracing / discovery.AVAILABLE_ADDRS).write_text(
        "ffffffff81001014 ip_rcv\n"
        "ffffffff81001204 __ftrace_invalid_address___4\n"  # ftrace: no function here
        "ffffffff81001320 helper\n"  # 0x20 in: not a call site at the start
    )
    found = machine.discover()
    assert found.functions == [IP_RCV]


def test_addrs_list_with_hidden_addresses_uses_names(machine: Machine) -> None:
    machine.write_addrs(machine.tracing, hide=True)
    found = machine.discover()
    assert found.source == "available_filter_functions_addrs"
    assert found.functions == [ALIAS_A, HELPER_1, HELPER_2, IP_RCV, DROP]


def test_second_tracing_dir(machine: Machine) -> None:
    machine.write_names(machine.debug_tracing)
    found = machine.discover()
    assert found.source == "available_filter_functions"
    assert found.functions == [ALIAS_A, HELPER_1, HELPER_2, IP_RCV, DROP]


def test_unreadable_list_falls_back(machine: Machine) -> None:
    # A directory where the file should be: reading fails with EISDIR, not ENOENT.
    (machine.tracing / discovery.AVAILABLE).mkdir()
    found = machine.discover()
    path = machine.tracing / discovery.AVAILABLE
    assert found.source == "BTF and kallsyms (available_filter_functions unreadable)"
    assert found.notes == [
        f"cannot read {path} (Is a directory): using BTF and kallsyms; "
        "some functions may not attach"
    ]
    # Without ftrace's word, every symbol outside init and noinstr code is taken;
    # alias_b shares alias_a's address.
    assert found.functions == [ALIAS_A, HELPER_1, HELPER_2, IP_RCV, DROP, UNTRACED]
    assert found.skipped == {"not in kallsyms": 1, "not traceable": 1, "alias": 1}


def test_unreadable_addrs_then_readable_names(machine: Machine) -> None:
    (machine.tracing / discovery.AVAILABLE_ADDRS).mkdir()
    machine.write_names(machine.tracing)
    found = machine.discover()
    assert found.source == "available_filter_functions"
    assert found.notes == []


def test_no_tracefs(machine: Machine) -> None:
    found = machine.discover()
    assert found.source == "BTF and kallsyms (tracefs not found)"
    assert len(found.notes) == 1
    assert found.notes[0].startswith(f"no available_filter_functions in {machine.tracing} or ")
    assert len(found.functions) == 6


def test_mounts_tracefs_reads_and_unmounts(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def run(argv: list[str]) -> str:
        commands.append(argv)
        if argv[0] == "mount":
            machine.write_names(machine.tracing)
        else:
            (machine.tracing / discovery.AVAILABLE).unlink()
        return ""

    monkeypatch.setattr(discovery, "_run", run)
    found = machine.discover(mount_tracefs=True)
    assert commands == [
        ["mount", "-t", "tracefs", "nodev", str(machine.tracing)],
        ["umount", str(machine.tracing)],
    ]
    assert found.source == "available_filter_functions"
    assert not (machine.tracing / discovery.AVAILABLE).exists()


def test_mount_failure_is_a_note(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "_run", lambda argv: "mount: must be superuser")
    found = machine.discover(mount_tracefs=True)
    assert found.source == "BTF and kallsyms (tracefs not mounted)"
    assert found.notes == [
        f"cannot mount tracefs on {machine.tracing} (mount: must be superuser): "
        "using BTF and kallsyms; some functions may not attach"
    ]


def test_no_second_mount(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str]) -> str:
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(discovery, "_run", run)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: p == str(machine.tracing) or real_ismount(p))
    found = machine.discover(mount_tracefs=True)
    assert found.source == "BTF and kallsyms (tracefs not found)"


def test_mount_command_failures() -> None:
    assert discovery._run(["true"]) == ""
    assert discovery._run(["sh", "-c", "echo one >&2; echo two >&2; exit 3"]) == "two"
    assert discovery._run(["sh", "-c", "exit 3"]) == "sh exited with 3"
    assert "No such file" in discovery._run(["/nonexistent/mount"])


def test_filter_func(machine: Machine) -> None:
    machine.write_names(machine.tracing)
    pattern = re.compile(r"ip_.*|untraced")
    found = machine.discover(wanted=lambda name: pattern.fullmatch(name) is not None)
    assert found.functions == [IP_RCV]
    assert found.skipped == {"--filter-func": 6, "not traceable": 1}
    nothing = machine.discover(wanted=lambda name: False)
    assert nothing.functions == []
    assert nothing.skipped == {"--filter-func": 8}
    assert nothing.source == "BTF (no function selected)"


def test_kmods(machine: Machine) -> None:
    machine.write_names(machine.tracing)
    found = machine.discover(kmods=["veth", "veth", "vmlinux"])
    assert found.btf_total == 11
    assert [f for f in found.functions if f.module] == [MOD_HELPER, MOD_RCV, VETH_XMIT]
    assert found.functions[:3] == [ALIAS_A, HELPER_1, HELPER_2]
    assert found.functions[3] == MOD_HELPER  # same name: vmlinux first, then modules


def test_kmods_addrs_list(machine: Machine) -> None:
    machine.write_addrs(machine.tracing, drop=(0xFFFFFFFFC0100004,))
    found = machine.discover(kmods=["veth"])
    assert [f for f in found.functions if f.module] == [MOD_HELPER, VETH_XMIT]


def test_kmods_module_not_traceable(machine: Machine) -> None:
    # The names list says "veth_xmit [veth]"; a bare "veth_xmit" would be vmlinux's.
    (machine.tracing / discovery.AVAILABLE).write_text("veth_xmit\nmod_rcv [veth]\n")
    found = machine.discover(kmods=["veth"])
    assert found.functions == [MOD_RCV]


def test_all_kmods(machine: Machine) -> None:
    machine.write_names(machine.tracing)
    found = machine.discover(all_kmods=True)
    assert found.btf_total == 11
    assert {f.module for f in found.functions} == {"", "veth"}


def test_kmods_without_btf(machine: Machine) -> None:
    with pytest.raises(UsageError, match="'nf_tables' has no BTF"):
        machine.discover(kmods=["veth", "nf_tables"])
    with pytest.raises(UsageError, match="'../btf/veth' has no BTF"):
        machine.discover(kmods=["../btf/veth"])


def test_kmods_bad_btf(machine: Machine) -> None:
    (machine.btf_dir / "broken").write_bytes(b"\0" * 8)
    with pytest.raises(BtfError, match="broken"):
        machine.discover(kmods=["broken"])
    found = machine.discover(all_kmods=True)  # noted and skipped
    assert len(found.notes) == 2
    assert found.notes[0].startswith("skipping module broken: ")
    assert {f.module for f in found.functions} == {"", "veth"}


def test_all_kmods_without_btf_dir(machine: Machine, tmp_path: Path) -> None:
    with pytest.raises(BtfError, match="cannot list"):
        machine.discover(all_kmods=True, btf_dir=str(tmp_path / "none"))
