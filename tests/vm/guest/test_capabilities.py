"""Per-kernel capabilities pwru relies on, proven inside each guest of tests/vm/kernels.txt.

Each probe (tests/vm/guest/progs, built on the host, CO-RE) is attached to ip_rcv while
UDP datagrams cross a veth pair between two namespaces created in the guest; the probe
counts the ip_rcv calls for exactly that flow (daddr, dport, receiving ifindex).
Expected outcome per kernel and flavour: kernels.txt (ok / eopnotsupp / einval).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import FLAVOURS, OUTCOMES, KernelExpect, ProbeRun, RunProbe, VethPair, errno_name

pytestmark = pytest.mark.vm

DATAGRAMS = 50
PORTS = {"kprobe": 40001, "kprobe_multi": 40002, "fentry": 40003}


def test_guest_kernel(vm_kernel: KernelExpect, vm_results: dict[str, Any]) -> None:
    """The harness booted the kernel it claims, over virtiofs, with kernel BTF."""
    vm_results["release"] = os.uname().release
    assert os.uname().release == os.environ["PWRU_VM_KVER"]
    with open("/proc/mounts") as f:
        rootfs = [line.split()[2] for line in f if line.split()[1] == "/"][-1]
    assert rootfs == os.environ.get("PWRU_VM_FS", "virtiofs")
    btf = Path("/sys/kernel/btf/vmlinux")
    assert btf.is_file(), "no kernel BTF: CO-RE and fentry are impossible"
    vm_results["btf_bytes"] = len(btf.read_bytes())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_attach_ip_rcv(
    flavour: str,
    vm_kernel: KernelExpect,
    veth_pair: VethPair,
    run_probe: RunProbe,
    vm_results: dict[str, Any],
) -> None:
    expected = vm_kernel.expect[flavour]
    res: ProbeRun = run_probe(flavour, veth_pair, PORTS[flavour], DATAGRAMS)
    vm_results[flavour] = res.summary()
    detail = f"{flavour} on {vm_kernel.release} ({vm_kernel.row}):\n" + "\n".join(res.output)
    if expected == "ok":
        assert res.attached, f"expected attach to work\n{detail}"
        assert res.matched >= DATAGRAMS, f"saw {res.matched}/{DATAGRAMS} datagrams\n{detail}"
        assert res.all_calls >= res.matched
    else:
        want = errno_name(OUTCOMES[expected])
        assert not res.attached, f"expected attach to fail with {want}, it worked\n{detail}"
        assert res.errno == OUTCOMES[expected], f"expected {want}, got {res.errno}\n{detail}"
        assert any(line.startswith("ATTACH_FAILED") for line in res.output), detail
