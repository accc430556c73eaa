"""pip install into fresh venvs on this machine: the x86_64 wheel brings its own libbpf
(it traces with the system's libbpf files gone), the sdist uses the system's."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from netlab import Lab
from tests.packaging.conftest import libbpf_used, run, trace_iptables_drop, write_script

SYSTEM_LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
LOAD_SYSTEM_LIBBPF = "import ctypes; ctypes.CDLL('libbpf.so.1'); print('loaded')"


def make_venv(where: Path, package: Path) -> Path:
    run(sys.executable, "-m", "venv", where)
    run(where / "bin" / "pip", "install", "--quiet", package, timeout=900)
    return where


@pytest.fixture(scope="module")
def wheel_venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("wheel") / "venv", wheels["x86_64"])


@pytest.fixture(scope="module")
def without_system_libbpf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wrapper running its arguments in a private mount namespace in which the system's
    libbpf.so* do not exist: an overlay on the library directory whites them out."""
    base = tmp_path_factory.mktemp("hide")
    upper, work = base / "upper", base / "work"
    upper.mkdir()
    work.mkdir()
    hidden = list(SYSTEM_LIBDIR.glob("libbpf.so*"))
    assert hidden, f"no system libbpf in {SYSTEM_LIBDIR} to hide (make setup installs libbpf1)"
    for lib in hidden:
        os.mknod(upper / lib.name, stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
    overlay = f"lowerdir={SYSTEM_LIBDIR},upperdir={upper},workdir={work}"
    return write_script(
        base / "without-system-libbpf",
        "#!/bin/sh\n"
        "exec unshare --mount --propagation private sh -c "
        f"'mount -t overlay overlay -o {overlay} {SYSTEM_LIBDIR} && exec \"$@\"' sh \"$@\"\n",
    )


def test_the_wrapper_really_hides_the_system_libbpf(without_system_libbpf: Path) -> None:
    assert "loaded" in run(sys.executable, "-c", LOAD_SYSTEM_LIBBPF)
    hidden = run(
        without_system_libbpf, sys.executable, "-c",
        f"try:\n {LOAD_SYSTEM_LIBBPF}\nexcept OSError as e: print('gone:', e)",
    )  # fmt: skip
    assert hidden.startswith("gone: libbpf.so.1: cannot open shared object file"), hidden


def test_wheel_traces_a_drop_with_its_own_libbpf(
    wheel_venv: Path, without_system_libbpf: Path, lab: Lab, tmp_path: Path
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "PWRU_LIBBPF"}
    version = run(without_system_libbpf, wheel_venv / "bin" / "pwru", "--version", env=environment)
    assert re.fullmatch(r"pwru \S+ \(libbpf 1\.\d+\.\d+, bundled\)\n", version), version
    pwru = write_script(
        tmp_path / "pwru",
        f'#!/bin/sh\nunset PWRU_LIBBPF\nexec {without_system_libbpf} {wheel_venv}/bin/pwru "$@"\n',
    )
    traced = trace_iptables_drop(lab, tmp_path, pwru, port=7931)
    site = next((wheel_venv / "lib").glob("python3*/site-packages"))
    assert re.fullmatch(
        rf"pwru: using libbpf 1\.\d+\.\d+ \(bundled\) from {site}/pwru/bpf/lib/libbpf\.so\.[0-9.]+",
        libbpf_used(traced),
    )


def test_pwru_libbpf_still_picks_another_library(wheel_venv: Path) -> None:
    system = (SYSTEM_LIBDIR / "libbpf.so.1").resolve()
    environment = {**os.environ, "PWRU_LIBBPF": str(SYSTEM_LIBDIR / "libbpf.so.1")}
    version = run(wheel_venv / "bin" / "pwru", "--version", env=environment)
    expected = system.name.removeprefix("libbpf.so.")
    assert version == f"pwru 0.1.0 (libbpf {expected}, PWRU_LIBBPF)\n"


def test_sdist_uses_the_system_libbpf(
    sdist: Path, without_system_libbpf: Path, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path / "venv", sdist)
    version = run(venv / "bin" / "pwru", "--version")
    assert re.fullmatch(r"pwru \S+ \(libbpf 1\.\d+\.\d+, system\)\n", version), version
    missing = run(without_system_libbpf, venv / "bin" / "pwru", "--version")
    assert "libbpf not found: install libbpf >= 1.0" in missing, missing
