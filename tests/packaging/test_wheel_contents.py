"""What `make wheels` puts into dist/: exactly the right files, tags and libbpf."""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.packaging.conftest import ARCHES, PLATFORM, REPO, run

BPF_OBJECT = {"x86_64": "pwru_x86.bpf.o", "aarch64": "pwru_arm64.bpf.o"}
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}  # e_machine: EM_X86_64, EM_AARCH64
LOADERS = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}
LIBBPF = re.compile(r"pwru/bpf/lib/libbpf\.so\.(\d+)\.(\d+)\.(\d+)")
BUNDLED = re.compile(
    r"pwru-[^/]+\.dist-info/licenses/bundled/(SOURCES\.txt|(libbpf|elfutils|zlib)/.+)"
)


def package_sources() -> set[str]:
    """The package's tracked Python files (and py.typed), as a wheel names them."""
    tracked = run("git", "-C", REPO, "ls-files", "pwru").split()
    return {name for name in tracked if name.endswith(".py") or name.endswith("/py.typed")}


def libbpf_of(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if LIBBPF.fullmatch(n)]
        return Path(archive.extract(name, into))


@pytest.mark.parametrize("arch", ARCHES)
def test_wheel_holds_exactly_the_package_its_object_and_libbpf(
    wheels: dict[str, Path], arch: str
) -> None:
    with zipfile.ZipFile(wheels[arch]) as archive:
        names = set(archive.namelist())
        wheel_meta = archive.read(next(n for n in names if n.endswith(".dist-info/WHEEL")))
        shipped_object = archive.read(f"pwru/bpf/{BPF_OBJECT[arch]}")
    libs = {n for n in names if LIBBPF.fullmatch(n)}
    info = {n for n in names if re.fullmatch(r"pwru-[^/]+\.dist-info/[^/]+", n)}
    bundled = {n for n in names if BUNDLED.fullmatch(n)}
    assert len(libs) == 1, names
    assert {n.split("/")[-1] for n in info} == {
        "METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt",
    }  # fmt: skip
    for library in ("libbpf", "elfutils", "zlib"):
        assert any(f"/bundled/{library}/" in n for n in bundled), bundled
    assert names == package_sources() | {f"pwru/bpf/{BPF_OBJECT[arch]}"} | libs | info | bundled
    # the object is the one in the repository (make bpf), not a stale build copy
    assert shipped_object == (REPO / "pwru" / "bpf" / BPF_OBJECT[arch]).read_bytes()
    assert f"Tag: py3-none-{PLATFORM}_{arch}" in wheel_meta.decode().splitlines()
    assert "Root-Is-Purelib: false" in wheel_meta.decode().splitlines()


@pytest.mark.parametrize("arch", ARCHES)
def test_bundled_libbpf_needs_only_glibc_2_28(
    wheels: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    lib = libbpf_of(wheels[arch], tmp_path)
    # (this host's objdump reads any ELF's symbols but names only x86 machines)
    assert int.from_bytes(lib.read_bytes()[18:20], "little") == ELF_MACHINE[arch]
    dynamic = run("objdump", "-T", lib)
    glibc = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9.]+)\)?\s", dynamic)}
    assert glibc and max(glibc) <= (2, 28), sorted(glibc)
    headers = run("objdump", "-p", lib)
    needed = set(re.findall(r"NEEDED\s+(\S+)", headers))
    assert needed <= {"libc.so.6", LOADERS[arch]}, needed  # libelf and zlib are inside
    assert re.search(r"SONAME\s+libbpf\.so\.1\n", headers)
    # it exports libbpf's API and nothing of the libelf/zlib linked into it
    exported = [ln.split() for ln in dynamic.splitlines() if " DF .text" in ln]
    assert len(exported) > 300, dynamic[:2000]
    assert all(fields[-2].startswith("LIBBPF_") for fields in exported), [
        f for f in exported if not f[-2].startswith("LIBBPF_")
    ][:5]


@pytest.mark.parametrize("arch", ARCHES)
def test_auditwheel_agrees_with_the_tag(wheels: dict[str, Path], arch: str) -> None:
    report = " ".join(run("python3", "-m", "auditwheel", "show", wheels[arch]).split())
    assert f'consistent with the following platform tag: "{PLATFORM}_{arch}"' in report, report


def test_sdist_ships_both_objects_and_no_library(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    assert "pwru/bpf/pwru_x86.bpf.o" in names and "pwru/bpf/pwru_arm64.bpf.o" in names
    assert not [n for n in names if ".so" in n or n.startswith(("tests", "bpf/", "build"))], names
