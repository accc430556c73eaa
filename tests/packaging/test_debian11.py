"""Old userspace: Debian 11 (glibc 2.31, Python 3.9, pip 20.3) without any libbpf.

The root is made by mmdebstrap from Debian's packages; the x86_64 wheel and its
dependency (downloaded beforehand: the root has no network) are pip-installed inside
it, and pwru runs chrooted there against this machine's kernel, tracing a datagram
that iptables drops in a namespace made for the test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import Lab
from tests.packaging.conftest import (
    debian_root,
    dependency_wheels,
    libbpf_used,
    remove_root,
    run,
    trace_iptables_drop,
    unpack_root,
    write_script,
)

# (no iproute2: it pulls in libbpf0 0.3; the test's namespace is made from the host)
PACKAGES = "python3,python3-pip,iptables"


@pytest.fixture(scope="module")
def bullseye(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("debian11")
    tarball = debian_root("bullseye", "amd64", PACKAGES, base / "root.tar")
    root = unpack_root(tarball, base / "root")
    tarball.unlink()
    try:
        offline = root / "tmp" / "wheels"
        offline.mkdir()
        for wheel in [wheels["x86_64"], *dependency_wheels("3.9", "x86_64").glob("*.whl")]:
            shutil.copy(wheel, offline)
        run(
            root.with_suffix(".run"), "python3", "-m", "pip", "install", "--no-index",
            "--find-links", "/tmp/wheels", f"/tmp/wheels/{wheels['x86_64'].name}",
        )  # fmt: skip
        yield root
    finally:
        remove_root(root)


def test_the_root_is_debian_11_without_libbpf(bullseye: Path) -> None:
    assert 'VERSION_CODENAME=bullseye' in (bullseye / "etc" / "os-release").read_text()
    in_root = bullseye.with_suffix(".run")
    assert "GLIBC 2.31" in run(in_root, "ldd", "--version")
    assert run(in_root, "python3", "--version").startswith("Python 3.9.")
    libraries = run(in_root, "find", "/usr", "/lib", "/opt", "-name", "libbpf.so*").split()
    assert len(libraries) == 1, libraries  # the wheel's, and no other
    assert libraries[0].startswith("/usr/local/lib/python3.9/dist-packages/pwru/bpf/lib/")


def test_debian_11_traces_an_iptables_drop(bullseye: Path, lab: Lab, tmp_path: Path) -> None:
    in_root = bullseye.with_suffix(".run")
    version = run(in_root, "pwru", "--version")
    assert re.fullmatch(r"pwru \S+ \(libbpf 1\.\d+\.\d+, bundled\)\n", version), version
    # the ready file is written inside the root, at tmp_path bound to the same path
    pwru = write_script(
        tmp_path / "pwru", f'#!/bin/sh\nCHROOT_BINDS={tmp_path} exec {in_root} pwru "$@"\n'
    )
    traced = trace_iptables_drop(lab, tmp_path, pwru, port=7941)
    assert re.fullmatch(
        r"pwru: using libbpf 1\.\d+\.\d+ \(bundled\) from "
        r"/usr/local/lib/python3\.9/dist-packages/pwru/bpf/lib/libbpf\.so\.[0-9.]+",
        libbpf_used(traced),
    )
