"""pwru.kernel.kallsyms and pwru.kernel.discovery on the running kernel (root).

discover() may mount tracefs on /sys/kernel/tracing for its read; it unmounts it
again, and these tests check that it did (and unmount it themselves if not).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator

import pytest

from pwru.kernel.btf import KernelBtf
from pwru.kernel.discovery import AVAILABLE, TRACING_DIRS, Discovery, discover
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options
from pwru.trace.backend import TraceContext
from pwru.trace.probes import ProbeKind, ProbeTable

TRACEFS = TRACING_DIRS[0]


def everything(name: str) -> bool:
    return True


@pytest.fixture(scope="module")
def vmlinux() -> KernelBtf:
    return KernelBtf.load()


@pytest.fixture(scope="module")
def ksyms() -> Kallsyms:
    return Kallsyms.load()


@pytest.fixture
def tracefs_untouched() -> Iterator[None]:
    """Fails the test if it leaves tracefs mounted where it was not; unmounts it then."""
    before = os.path.ismount(TRACEFS)
    yield
    if os.path.ismount(TRACEFS) and not before:
        subprocess.run(["umount", TRACEFS], check=False)
        pytest.fail(f"{TRACEFS} was left mounted")


def ftrace_list_errno() -> int:
    """0 if ftrace's list is readable here, else the errno of reading it; looks with
    tracefs mounted like discover() does, and leaves the mount as it was."""
    mounted = os.path.ismount(TRACEFS)
    if not mounted:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    try:
        with open(os.path.join(TRACEFS, AVAILABLE)) as file:
            file.read(1)
        return 0
    except OSError as err:
        return err.errno or -1
    finally:
        if not mounted:
            subprocess.run(["umount", TRACEFS], check=True)


@pytest.fixture(scope="module")
def found(vmlinux: KernelBtf, ksyms: Kallsyms) -> Iterator[Discovery]:
    before = os.path.ismount(TRACEFS)
    try:
        yield discover(vmlinux, ksyms, wanted=everything)
    finally:
        left_mounted = os.path.ismount(TRACEFS) and not before
        if left_mounted:
            subprocess.run(["umount", TRACEFS], check=False)
        assert not left_mounted, f"discover() left {TRACEFS} mounted"


def test_kallsyms(ksyms: Kallsyms) -> None:
    assert len(ksyms) > 10_000
    ip_rcv = ksyms.address("ip_rcv")
    assert ip_rcv is not None and ip_rcv > 0xFFFF_0000_0000_0000
    assert ksyms.module("ip_rcv") == ""
    assert ksyms.name_at(ip_rcv) == "ip_rcv"
    assert ksyms.name_at(ip_rcv + 4) == "ip_rcv"
    assert ksyms.symbolize(ip_rcv + 0x1C) == "ip_rcv+0x1c"
    assert ksyms.find(["ip_rcv"])["ip_rcv"][0].addr == ip_rcv


def test_discovery(found: Discovery, ksyms: Kallsyms) -> None:
    by_name = {fn.name: fn for fn in found.functions}
    assert len(by_name) >= 1000
    assert by_name["ip_rcv"].skb_arg == 0
    assert "__dev_queue_xmit" in by_name or "dev_queue_xmit" in by_name
    assert by_name["nf_hook_slow"].skb_arg == 0
    if os.uname().release.startswith("6.18."):
        assert by_name["sk_skb_reason_drop"].skb_arg == 1
    assert found.functions == sorted(found.functions, key=lambda f: (f.name, f.module, f.addr))
    for fn in found.functions:
        assert fn.addr != 0, fn
        assert ksyms.name_at(fn.addr) == fn.name, fn
        assert fn.module == ""
    assert len({fn.addr for fn in found.functions}) == len(found.functions)
    assert found.btf_total == len(by_name) + sum(found.skipped.values())
    assert "--filter-func" not in found.skipped


def test_discovery_source(found: Discovery) -> None:
    error = ftrace_list_errno()
    if error == 0:
        assert found.source.startswith(AVAILABLE)
        assert found.notes == []
    else:
        # This development machine: tracefs mounts, but reading the list gives EPERM.
        assert found.source == f"BTF and kallsyms ({AVAILABLE} unreadable)"
        reason = os.strerror(error)
        assert found.notes == [
            f"cannot read {TRACEFS}/{AVAILABLE} ({reason}): "
            "using BTF and kallsyms; some functions may not attach"
        ]
    if os.uname().release.startswith("6.18."):
        assert error == errno.EPERM


@pytest.mark.usefixtures("tracefs_untouched")
def test_no_tracefs_mount(vmlinux: KernelBtf, ksyms: Kallsyms) -> None:
    if os.path.ismount(TRACEFS):
        pytest.skip(f"{TRACEFS} is mounted")
    found = discover(vmlinux, ksyms, wanted=everything, mount_tracefs=False)
    assert found.source in (
        f"BTF and kallsyms ({AVAILABLE} unreadable)",  # through /sys/kernel/debug/tracing
        "BTF and kallsyms (tracefs not found)",
    )
    assert len(found.functions) >= 1000


def test_clone_following_falls_back_to_kretprobes_here(
    vmlinux: KernelBtf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This kernel refuses fexit programs (EPERM at load): the tracking plan's test load
    finds out and picks the kprobe + kretprobe pair, whose programs load; the guests of
    the QEMU matrix take fexit (tests/vm/guest/test_pwru.py asserts the attach line)."""
    from pwru.bpf import loader
    from pwru.bpf.abi import Config
    from pwru.trace import tracking

    monkeypatch.delenv(tracking.CLONE_HOOK_ENV, raising=False)
    chosen = tracking.CloneTracking(context(vmlinux))
    requests = chosen.plan(ProbeTable())
    assert chosen.fexit_probes == []
    assert chosen.how == "kretprobe (the kernel refuses fexit: Operation not permitted)"
    programs = [r.program for r in requests]
    assert programs == ["pwru_kp_clone", "pwru_krp_clone", "pwru_kp_skbmem"]
    obj = loader.load(Config(track_skb=1), requests, {}, 4096)
    try:
        assert all(obj.program_fd(p) > 0 for p in programs)
    finally:
        obj.close()
    # traced kfree_skbmem forgets by itself: no separate forget kprobe
    table = ProbeTable()
    table.add(tracking.FREE, ProbeKind.KPROBE_MULTI, "pwru_km_free", addr=1)
    assert "pwru_kp_skbmem" not in [
        r.program for r in tracking.CloneTracking(context(vmlinux)).plan(table)
    ]
    monkeypatch.setenv(tracking.CLONE_HOOK_ENV, "kretprobe")
    again = tracking.CloneTracking(context(vmlinux))
    again.plan(ProbeTable())
    assert again.how == "kretprobe (PWRU_CLONE_HOOK=kretprobe)"


def context(btf: KernelBtf) -> TraceContext:
    """Planning context for the running kernel with default options."""
    return TraceContext(Options(), btf, btf, Kallsyms.load, lambda _name: True)
