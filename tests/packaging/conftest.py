"""Fixtures for the packaging tests: the wheels of dist/, Debian roots, a network lab.

The wheels are rebuilt with `make wheels` when dist/ lacks them or they are older
than the code they package, so a plain `make test` tests what the code is now.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from netlab import Lab, PwruRun

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
BUILD = REPO / "build" / "packaging"
ARCHES = ("x86_64", "aarch64")
PLATFORM = "manylinux_2_28"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/packaging" in str(item.fspath):
            item.add_marker(pytest.mark.packaging)


def run(*args: str | Path, timeout: float = 600, **kwargs: object) -> str:
    """Run a command; on failure the assertion shows its output. Returns stdout."""
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    return str(done.stdout)


def _newest_input() -> float:
    """mtime of the newest file a wheel is made from."""
    tracked = run("git", "-C", REPO, "ls-files", "pwru", "packaging", "pyproject.toml").split()
    return max((REPO / name).stat().st_mtime for name in tracked if (REPO / name).exists())


@pytest.fixture(scope="session", autouse=True)
def _need_root() -> None:
    # chroots, mount namespaces, podman and BPF all need root: fail, never skip
    assert os.geteuid() == 0, "the packaging tests need root"


@pytest.fixture(scope="session")
def wheels() -> dict[str, Path]:
    """arch -> dist/pwru-*-py3-none-manylinux_2_28_<arch>.whl, (re)built if stale."""
    found = {arch: sorted(DIST.glob(f"pwru-*-py3-none-{PLATFORM}_{arch}.whl")) for arch in ARCHES}
    newest = _newest_input()
    if any(len(f) != 1 or f[0].stat().st_mtime < newest for f in found.values()):
        run("make", "-C", REPO, "wheels", timeout=1800)
        found = {a: sorted(DIST.glob(f"pwru-*-py3-none-{PLATFORM}_{a}.whl")) for a in ARCHES}
    assert all(len(f) == 1 for f in found.values()), found
    return {arch: files[0] for arch, files in found.items()}


@pytest.fixture(scope="session")
def sdist(wheels: dict[str, Path]) -> Path:
    (found,) = DIST.glob("pwru-*.tar.gz")
    return found


def dependency_wheels(python: str, arch: str) -> Path:
    """A directory with pwru's dependencies as wheels for CPython ``python`` on ``arch``,
    downloaded once (pip download), so that roots without network can install offline."""
    target = BUILD / "wheelhouse" / f"cp{python.replace('.', '')}-{arch}"
    if not any(target.glob("*.whl")):
        run(
            "python3", "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--platform", f"{PLATFORM}_{arch}", "--python-version", python,
            "--implementation", "cp", "--dest", target, "pcapy-ng>=2.0",
        )  # fmt: skip
    return target


def debian_root(
    suite: str, arch: str, packages: str, tarball: Path, variant: str = "essential"
) -> Path:
    """packaging/debian-root.sh: a cached mmdebstrap root as a tarball."""
    script = REPO / "packaging" / "debian-root.sh"
    run("bash", script, f"--variant={variant}", suite, arch, packages, tarball, timeout=1200)
    return tarball


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace."""
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def trace_iptables_drop(lab: Lab, workdir: Path, pwru: Path, port: int) -> PwruRun:
    """Run ``pwru`` (a wrapper: venv, chroot, container) with the tracepoint backend on
    b's namespace while b's iptables drops a's datagrams; assert it showed both drops."""
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP")
    args = ["--debug", "--backend", "tracepoint", "--filter-netns", f"inode:{lab.b.inode}"]
    with mock.patch.dict(os.environ, {"PWRU_BIN": str(pwru)}):
        run = PwruRun([*args, f"udp and dst port {port}"], workdir, timeout=120)
    try:
        lab.a.send_udp(lab.b.ipv4, port, count=2, sport=port + 1)
    finally:
        code = run.stop()  # also when sending failed: no pwru left attached
    assert code == 0, run.stderr[-3000:]
    tuple_text = f"{lab.a.ipv4}:{port + 1}->{lab.b.ipv4}:{port}(udp)"
    drops = [
        line
        for line in run.lines()
        if tuple_text in line and "kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)" in line
    ]
    assert len(drops) == 2, run.stdout + run.stderr[-3000:]
    return run


def libbpf_used(run: PwruRun) -> str:
    """The --debug line naming the libbpf pwru loaded."""
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("pwru: using libbpf ")]
    assert len(lines) == 1, run.stderr[-3000:]
    return lines[0]


def unpack_root(tarball: Path, root: Path) -> Path:
    """Unpack a root tarball and write ``<root>.run``: a wrapper running its arguments
    chrooted into the root with the host's /proc, /sys and /dev (and the directories
    in $CHROOT_BINDS) mounted in a private mount namespace, which takes the mounts
    with it when the command ends, whatever happens to the test."""
    root.mkdir()
    run("tar", "-x", "--numeric-owner", "-f", tarball, "-C", root)
    clean_path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    write_script(
        root.with_suffix(".run"),
        "#!/bin/sh\n"
        "exec unshare --mount --propagation private sh -c '\n"
        "set -e\n"
        "for d in /proc /sys /dev $CHROOT_BINDS; do\n"
        f'  mkdir -p "{root}$d"; mount --rbind "$d" "{root}$d"\n'
        "done\n"
        f'exec chroot {root} /usr/bin/env -i HOME=/root {clean_path} "$@"\' sh "$@"\n',
    )
    return root


def remove_root(root: Path) -> None:
    leftover = mounts_under(root)
    assert not leftover, f"mounts left under {root}: {leftover}"  # never rmtree into /sys
    shutil.rmtree(root)
    root.with_suffix(".run").unlink(missing_ok=True)
