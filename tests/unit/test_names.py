"""Names of interfaces, processes and symbols; --filter-netns/--filter-ifname lookup.

Tests marked ``needs_netns`` create a network namespace ``pwru-t-<random>`` with
veth pairs (root and iproute2 needed) and always delete it afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pwru.errors import UsageError
from pwru.kernel.netns import (
    current_netns,
    netns_names,
    netns_paths,
    resolve_ifindex,
    resolve_netns,
    run_in_netns,
)
from pwru.output.decode import Event
from pwru.output.names import SystemNames, truncate_name

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="creating a network namespace needs root and iproute2",
)


def ev(**fields: int) -> Event:
    base: dict[str, object] = dict.fromkeys(Event._fields, 0)
    base.update(reason=None, tuple=None, tunnel_tuple=None, skb_metadata=(0, 0, 0, 0), comm="")
    base.update(fields)
    return Event(**base)  # type: ignore[arg-type]


def test_truncate_name() -> None:
    assert truncate_name("eth0:2") == "eth0:2"
    assert truncate_name("x" * 16) == "x" * 16
    assert truncate_name("/usr/bin/python3.11:4242") == "~python3.11:4242"
    assert len(truncate_name("a" * 40)) == 16


def test_probe_name_and_drop_reason_come_from_the_caller() -> None:
    names = SystemNames(lambda e: f"probe{e.probe_id}", {2: "SKB_DROP_REASON_NOT_SPECIFIED"})
    assert names.probe_name(ev(probe_id=5)) == "probe5"
    assert names.drop_reason(2) == "SKB_DROP_REASON_NOT_SPECIFIED"
    assert names.drop_reason(99) is None
    plain = SystemNames()
    assert plain.probe_name(ev(func_ip=0xFFFFFFFF81000000)) == "0xffffffff81000000"
    assert plain.probe_name(ev(probe_id=3)) == "probe#3"
    assert plain.drop_reason(2) is None


def test_process_names() -> None:
    names = SystemNames()
    exe = os.path.realpath(sys.executable)
    assert names.process(os.getpid(), "python3") == truncate_name(f"{exe}:{os.getpid()}")
    assert names.process(0, "swapper/0") == "<empty>:0"


def test_process_falls_back_to_comm(tmp_path: Path) -> None:
    names = SystemNames(proc=str(tmp_path))  # no /proc/<pid>/exe there
    assert names.process(4242, "curl") == "curl:4242"
    assert names.process(4242, "kworker/u16:3-events") == "~6:3-events:4242"
    assert names.process(4242, "") == "<empty>:4242"


def test_process_cache_is_keyed_by_comm(tmp_path: Path) -> None:
    names = SystemNames(proc=str(tmp_path))
    assert names.process(10, "bash") == "bash:10"
    (tmp_path / "10").mkdir()
    os.symlink("/usr/bin/curl", tmp_path / "10" / "exe")
    assert names.process(10, "bash") == "bash:10"  # cached
    assert names.process(10, "curl") == "/usr/bin/curl:10"  # exec changed comm


def test_iface_in_own_netns() -> None:
    names = SystemNames()
    own = current_netns()
    assert names.iface(own, 1) == "lo:1"
    assert names.iface(own, 0) == "0"
    assert names.iface(own, 999_999) == "999999"
    assert names.iface(1, 2) == "2"  # no such netns


def test_symbols(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffff81000100 t ip_rcv_core\n"
        "ffffffff81000200 D some_data\n"
        "ffffffff81000300 T ip_output\t[mymod]\n"  # kallsyms puts a tab before modules
    )
    names = SystemNames(kallsyms=str(kallsyms))
    assert names.symbol(0xFFFFFFFF81000123) == "ip_rcv_core"
    assert names.symbol(0xFFFFFFFF81000250) == "ip_rcv_core"  # data symbols skipped
    assert names.symbol(0xFFFFFFFF81000300) == "ip_output"
    assert names.symbol(0x1000) == "0x1000"
    assert names.symbol(0) == "0x0"
    assert SystemNames(kallsyms=str(tmp_path / "none")).symbol(0x10) == "0x10"


def test_resolve_netns_forms() -> None:
    own = current_netns()
    assert resolve_netns("") == 0
    assert resolve_netns("/proc/self/ns/net") == own
    assert resolve_netns(f"/proc/{os.getpid()}/ns/net") == own
    assert resolve_netns("inode:4026531840") == 4026531840
    assert resolve_netns(f"inode:{own}") == own


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("pwru-no-such-netns", "unknown network namespace"),
        ("/run/netns/pwru-no-such-netns", "unknown network namespace"),
        ("/etc/hostname", "not a network namespace"),
        ("/proc/self/ns/uts", "not a network namespace"),
        ("inode:", "expected inode:<number>"),
        ("inode:abc", "expected inode:<number>"),
        ("inode:0", "expected inode:<number>"),
    ],
)
def test_resolve_netns_errors(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve_netns(spec)
    assert words in str(info.value)


def test_resolve_ifindex_here() -> None:
    assert resolve_ifindex("", "") == 0
    assert resolve_ifindex("lo", "") == 1
    assert resolve_ifindex("lo", "/proc/self/ns/net") == 1
    with pytest.raises(UsageError) as info:
        resolve_ifindex("pwru-nope0", "")
    assert "unknown interface 'pwru-nope0' in the current network namespace" in str(info.value)


def test_netns_paths_knows_ours() -> None:
    paths = netns_paths()
    assert os.stat(paths[current_netns()]).st_ino == current_netns()


def fake_netns_tree(tmp_path: Path) -> tuple[Path, Path, dict[str, int]]:
    """/proc and /run/netns stand-ins: regular files play namespaces, hard links make
    two paths one namespace. Returns (proc, run_netns, inode of each namespace)."""
    proc, run = tmp_path / "proc", tmp_path / "run"
    for pid, comm in ((7, "init"), (30, "nginx"), (31, "worker"), (40, "named")):
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
    (proc / "7" / "ns" / "net").write_text("")
    (proc / "30" / "ns" / "net").write_text("")
    os.link(proc / "30" / "ns" / "net", proc / "31" / "ns" / "net")
    (proc / "40" / "ns" / "net").write_text("")
    run.mkdir()
    os.link(proc / "40" / "ns" / "net", run / "blue")
    os.link(proc / "40" / "ns" / "net", run / "alpha")
    (run / "lonely").write_text("")
    (run / "subdir").mkdir()
    inode = {p: os.stat(proc / p / "ns" / "net").st_ino for p in ("7", "30", "40")}
    inode["lonely"] = os.stat(run / "lonely").st_ino
    return proc, run, inode


def test_netns_names_from_run_netns_then_processes(tmp_path: Path) -> None:
    proc, run, inode = fake_netns_tree(tmp_path)
    assert netns_names(str(proc), str(run)) == {
        inode["40"]: "blue",  # two names: the last in name order, as cilium/pwru reads them
        inode["lonely"]: "lonely",  # named, no process in it
        inode["7"]: "init:7",
        inode["30"]: "nginx:30",  # the first process of the namespace
    }


def test_system_names_netns_name(tmp_path: Path) -> None:
    proc, run, inode = fake_netns_tree(tmp_path)
    names = SystemNames(proc=str(proc), run_netns=str(run))
    assert names.netns_name(inode["30"]) == "nginx:30"
    assert names.netns_name(inode["40"]) == "blue"
    assert names.netns_name(0) == ""


# --- in a namespace of our own ---------------------------------------------------


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def ifindex_in(ns: str, ifname: str) -> int:
    return int(json.loads(ip("-n", ns, "-j", "link", "show", "dev", ifname))[0]["ifindex"])


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pwru-t-{secrets.token_hex(4)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "pwrut0", "type", "veth", "peer", "name", "pwrut1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@needs_netns
def test_resolve_in_named_netns(netns: str) -> None:
    inode = os.stat(f"/run/netns/{netns}").st_ino
    assert inode != current_netns()
    assert resolve_netns(netns) == inode
    assert resolve_netns(f"/run/netns/{netns}") == inode
    idx = ifindex_in(netns, "pwrut0")
    assert resolve_ifindex("pwrut0", netns) == idx
    assert resolve_ifindex("pwrut0", f"/run/netns/{netns}") == idx
    assert resolve_ifindex("pwrut0", f"inode:{inode}") == idx
    with pytest.raises(UsageError) as info:
        resolve_ifindex("pwrut0", "")  # not in our netns
    assert "current network namespace" in str(info.value)
    with pytest.raises(UsageError) as info:
        resolve_ifindex("lo0", netns)
    assert f"network namespace '{netns}'" in str(info.value)


@needs_netns
def test_run_in_netns_leaves_caller_alone(netns: str) -> None:
    own = current_netns()
    inside = run_in_netns(f"/run/netns/{netns}", lambda: os.stat("/proc/thread-self/ns/net"))
    assert inside.st_ino == os.stat(f"/run/netns/{netns}").st_ino
    assert current_netns() == own
    assert os.stat("/proc/thread-self/ns/net").st_ino == own
    with pytest.raises(ZeroDivisionError):
        run_in_netns(f"/run/netns/{netns}", lambda: 1 // 0)


@needs_netns
def test_iface_names_in_other_netns(netns: str) -> None:
    inode = os.stat(f"/run/netns/{netns}").st_ino
    names = SystemNames()
    idx0 = ifindex_in(netns, "pwrut0")
    assert names.iface(inode, idx0) == f"pwrut0:{idx0}"
    assert names.iface(inode, 1) == "lo:1"
    # An interface created during the trace is found: a miss re-lists the netns.
    ip("-n", netns, "link", "add", "pwrutestlongnm0", "type", "veth", "peer", "name", "pwrut2")
    idx = ifindex_in(netns, "pwrutestlongnm0")
    assert names.iface(inode, idx) == truncate_name(f"pwrutestlongnm0:{idx}")
    assert names.iface(inode, idx).startswith("~")
    assert len(names.iface(inode, idx)) == 16
