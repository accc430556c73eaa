"""arm64: the aarch64 wheel's BPF object and libbpf load and trace in a stock Debian arm64
kernel (6.12, bookworm) under qemu-system-aarch64 (TCG), with an arm64 userspace.

The root is Debian bookworm arm64 unpacked from its packages (mmdebstrap
--variant=extract: nothing arm64 runs on this host); pip installs the aarch64 wheel
and pcapy-ng's aarch64 wheel into it for CPython 3.11 on aarch64. In the guest pwru
attaches kprobes (Debian's arm64 6.12 has no kprobe-multi: CONFIG_FPROBE is off).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO, debian_root, dependency_wheels, run

PACKAGES = "python3,libstdc++6,busybox-static"  # libstdc++: pcapy-ng's extension is C++
GUEST = REPO / "tests" / "vm" / "arm64-guest.sh"
SITE = "usr/local/lib/python3.11/dist-packages"


@pytest.fixture(scope="module")
def arm64_root(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("arm64")
    tarball = debian_root("bookworm", "arm64", PACKAGES, base / "root.tar", variant="extract")
    root = base / "root"
    root.mkdir()
    try:
        run("tar", "-x", "--numeric-owner", "-f", tarball, "-C", root)
        tarball.unlink()
        run(
            "python3", "-m", "pip", "install", "--quiet", "--no-index", "--only-binary=:all:",
            "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11",
            "--implementation", "cp", "--target", root / SITE,
            "--find-links", dependency_wheels("3.11", "aarch64"), wheels["aarch64"],
        )  # fmt: skip
        (root / "opt").mkdir(exist_ok=True)
        shutil.copy(REPO / "tests" / "packaging" / "guest_trace.py", root / "opt")
        yield root
    finally:
        shutil.rmtree(root)


def test_arm64_guest_traces_with_the_aarch64_wheel(arm64_root: Path) -> None:
    installed = arm64_root / SITE / "pwru" / "bpf"
    assert sorted(p.name for p in installed.glob("*.bpf.o")) == ["pwru_arm64.bpf.o"]
    run(
        GUEST, arm64_root,
        "python3 -m pwru --version > /pwru-guest/version && "
        "python3 /opt/guest_trace.py /pwru-guest",
        timeout=1200,
    )  # fmt: skip
    results = arm64_root / "pwru-guest"
    version = (results / "version").read_text()
    assert re.fullmatch(r"pwru \S+ \(libbpf 1\.\d+\.\d+, bundled\)\n", version), version
    stdout, stderr = (results / "pwru.out").read_text(), (results / "pwru.err").read_text()
    assert (results / "pwru.rc").read_text() == "0\n", stderr[-3000:]
    assert re.search(
        rf"^pwru: using libbpf 1\.\d+\.\d+ \(bundled\) from /{SITE}/pwru/bpf/lib/libbpf\.so\.",
        stderr,
        re.MULTILINE,
    ), stderr[-3000:]
    assert "pwru_arm64.bpf.o" in stderr, stderr[-3000:]  # libbpf's log names the object
    datagram = "127.0.0.1:7952->127.0.0.1:7951(udp)"
    lines = stdout.splitlines()
    assert len([ln for ln in lines if datagram in ln and " ip_rcv" in ln]) == 2, stdout
    drops = [ln for ln in lines if datagram in ln and "(SKB_DROP_REASON_NO_SOCKET)" in ln]
    assert len(drops) == 2, stdout
