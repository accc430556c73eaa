"""Tests that run INSIDE a QEMU guest booted by tests/vm/run-in-guest.sh.

Run them with tests/vm/matrix.sh (one boot per kernel of tests/vm/kernels.txt), never
directly on the host: every test collected below this directory carries the ``vm``
marker and, outside the harness, FAILS without running any fixture. The host test run
deselects them with ``-m "not vm"``.

"Inside the harness" means: PWRU_VM_GUEST=1 and ``uname -r`` equal to PWRU_VM_KVER, both
set by run-in-guest.sh for the guest command.

Environment used here (matrix.sh passes it with run-in-guest.sh -e):
  PWRU_VM_PROGS    directory of the host-built probes (make -C tests/vm/guest/progs O=...)
  PWRU_VM_RESULTS  optional read-write directory: <package>.json with what each probe saw
  PWRU_VM_EXPECT   optional override of the kernels.txt row, e.g. "kprobe=ok
                   kprobe_multi=eopnotsupp fentry=ok cookies=yes modbtf=yes
                   drop=kfree_skb_reason"
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
KERNELS_TXT = HERE.parent / "kernels.txt"
FLAVOURS = ("kprobe", "kprobe_multi", "fentry")
# kernels.txt's columns after pattern and suites, and the values each may take
COLUMNS = FLAVOURS + ("cookies", "modbtf", "drop")
# attach outcomes: ok, or the errno the attach fails with
OUTCOMES = {"ok": 0, "eopnotsupp": errno.EOPNOTSUPP, "einval": errno.EINVAL}
ALLOWED = {
    **{f: tuple(OUTCOMES) for f in FLAVOURS},
    "cookies": ("yes", "no"),
    "modbtf": ("yes", "no"),
    "drop": ("kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop"),
}
MARKER_DOC = (
    "vm: runs inside a QEMU guest booted by tests/vm/run-in-guest.sh "
    "(tests/vm/matrix.sh); fails anywhere else, deselect with -m 'not vm'"
)


def vm_guest_status() -> tuple[bool, str]:
    """(inside the harness?, why not)."""
    if os.environ.get("PWRU_VM_GUEST") != "1":
        return False, "PWRU_VM_GUEST is not set to 1"
    want, have = os.environ.get("PWRU_VM_KVER", ""), os.uname().release
    if want != have:
        return False, f"running kernel {have!r} is not the harness's {want!r}"
    return True, ""


# --------------------------------------------------------------------------- collection
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)


def _is_ours(item: pytest.Item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(HERE)
    except (AttributeError, OSError):
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the items before -m deselects.
    inside, why = vm_guest_status()
    for item in items:
        if not _is_ours(item):
            continue
        item.add_marker(pytest.mark.vm)
        if not inside:
            _make_failing(item, why)


def _make_failing(item: pytest.Item, why: str) -> None:
    """Keep the item (same id, markers) but skip all fixtures and fail in the call phase."""

    def setup() -> None:
        pass

    def runtest() -> None:
        pytest.fail(
            f"{item.nodeid}: not inside the tests/vm harness ({why}). Run tests/vm/matrix.sh, "
            "or deselect these tests with -m 'not vm'.",
            pytrace=False,
        )

    item.setup = setup  # type: ignore[method-assign]
    item.runtest = runtest  # type: ignore[method-assign]
    item.teardown = setup  # type: ignore[method-assign]


# --------------------------------------------------------------------------- results file
_RESULTS: dict[str, Any] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get("PWRU_VM_RESULTS")
    if not out or not vm_guest_status()[0] or not _RESULTS:
        return
    pkg = os.environ.get("PWRU_VM_PKG", os.uname().release)
    data = {"package": pkg, "kernel": os.uname().release, "pytest_exit": int(exitstatus)}
    data.update(_RESULTS)
    Path(out, f"{pkg}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="session", autouse=True)
def _pwru_bin() -> None:
    """The pwru console command next to this interpreter (the guest's PATH lacks pyenv),
    for every guest test (netlab's PwruRun runs $PWRU_BIN)."""
    if not os.environ.get("PWRU_BIN"):
        os.environ["PWRU_BIN"] = str(Path(sys.executable).with_name("pwru"))
    assert os.access(os.environ["PWRU_BIN"], os.X_OK), f"no pwru at {os.environ['PWRU_BIN']}"


@pytest.fixture(scope="session")
def vm_results() -> dict[str, Any]:
    """Observations written to $PWRU_VM_RESULTS/<package>.json at the end of the session."""
    return _RESULTS


# --------------------------------------------------------------------------- expectations
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # same rule as resolve-kernels.sh: `*` is one version number (digits and dots)
    return re.compile("^" + re.escape(pattern).replace(r"\*", "[0-9][0-9.]*") + "$")


@dataclass(frozen=True)
class KernelExpect:
    package: str
    release: str
    row: str  # where the expectation came from
    expect: dict[str, str] = field(default_factory=dict)


def expectations_for(package: str) -> tuple[str, dict[str, str]] | None:
    override = os.environ.get("PWRU_VM_EXPECT")
    if override:
        exp = dict(kv.split("=", 1) for kv in override.split())
        return "PWRU_VM_EXPECT", exp
    for line in KERNELS_TXT.read_text().splitlines():
        cols = line.split()
        if not cols or cols[0].startswith("#") or len(cols) < 5:
            continue
        if _pattern_regex(cols[0]).match(package):
            return f"kernels.txt: {cols[0]}", dict(zip(COLUMNS, cols[2:]))
    return None


@pytest.fixture(scope="session")
def vm_kernel() -> KernelExpect:
    package = os.environ.get("PWRU_VM_PKG", "")
    found = expectations_for(package)
    if found is None:
        pytest.fail(
            f"no row of {KERNELS_TXT} matches the guest's kernel package {package!r}: add one "
            "(or set PWRU_VM_EXPECT='kprobe=ok kprobe_multi=... fentry=ok')",
            pytrace=False,
        )
    row, exp = found
    for k, allowed in ALLOWED.items():
        if exp.get(k) not in allowed:
            pytest.fail(f"{row}: {k}={exp.get(k)!r}, expected one of {allowed}", pytrace=False)
    return KernelExpect(package, os.uname().release, row, exp)


# --------------------------------------------------------------------------- tools
def tool(name: str) -> str:
    """Absolute path of a host tool (the guest's PATH is the distro default)."""
    candidates = [f"{d}/{name}" for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")]
    path = shutil.which(name) or next((p for p in candidates if os.access(p, os.X_OK)), None)
    if not path:
        pytest.fail(f"{name} not found in the guest", pytrace=False)
    return path


def run(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        out = f"{res.stdout}{res.stderr}"
        pytest.fail(f"{' '.join(cmd)} -> rc={res.returncode}\n{out}", pytrace=False)
    return res


@pytest.fixture(scope="session")
def probes_dir() -> Path:
    d = Path(
        os.environ.get("PWRU_VM_PROGS")
        or Path(os.environ.get("PWRU_VM_DIR", "/var/cache/pwru-vm"), "progs")
    )
    missing = [n for n in ("loader", *(f"{f}.bpf.o" for f in FLAVOURS)) if not (d / n).is_file()]
    if missing:
        pytest.fail(
            f"probes missing in {d}: {missing} (build them on the host: "
            "make -C tests/vm/guest/progs O=<dir>, pass the dir with run-in-guest.sh -r DIR "
            "-e PWRU_VM_PROGS=DIR; matrix.sh does both)",
            pytrace=False,
        )
    return d


# --------------------------------------------------------------------------- network
@dataclass(frozen=True)
class VethPair:
    """Two namespaces created in the guest, joined by a veth pair."""

    sender_ns: str
    receiver_ns: str
    saddr: str
    daddr: str
    rx_ifindex: int  # ifindex of the receiving veth (in receiver_ns)


@pytest.fixture(scope="session")
def veth_pair() -> Iterator[VethPair]:
    ip = tool("ip")
    a, b = "pwruvm-a", "pwruvm-b"
    if not Path("/sys/module/veth").exists():
        run(tool("modprobe"), "veth", check=False)  # may be built in
    for ns in (a, b):
        run(ip, "netns", "del", ns, check=False)
        run(ip, "netns", "add", ns)
    try:
        run(
            ip,
            "link",
            "add",
            "vm-a",
            "netns",
            a,
            "type",
            "veth",
            *("peer", "name", "vm-b", "netns", b),
        )
        run(ip, "-n", a, "addr", "add", "10.199.0.1/24", "dev", "vm-a")
        run(ip, "-n", b, "addr", "add", "10.199.0.2/24", "dev", "vm-b")
        for ns, dev in ((a, "vm-a"), (b, "vm-b")):
            run(ip, "-n", ns, "link", "set", "lo", "up")
            run(ip, "-n", ns, "link", "set", dev, "up")
        out = run(ip, "-n", b, "-o", "link", "show", "dev", "vm-b").stdout
        yield VethPair(a, b, "10.199.0.1", "10.199.0.2", int(out.split(":", 1)[0]))
    finally:
        for ns in (a, b):
            run(ip, "netns", "del", ns, check=False)


CLONE_NEWNET = 0x40000000


def send_udp(veth: VethPair, port: int, count: int) -> None:
    """count 1-byte UDP datagrams from sender_ns to daddr:port over the veth pair.

    setns(2) switches only the calling thread, so a short-lived thread joins sender_ns and
    sends from there: no `ip netns exec python3 ...` (a Python start costs ~2 s under TCG).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    errors: list[str] = []

    def sender() -> None:
        try:
            with open(f"/run/netns/{veth.sender_ns}") as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({veth.sender_ns})")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(count):
                    s.sendto(b"x", (veth.daddr, port))
        except OSError as e:
            errors.append(repr(e))

    t = threading.Thread(target=sender, name=f"udp-from-{veth.sender_ns}")
    t.start()
    t.join(timeout=60)
    if t.is_alive() or errors:
        pytest.fail(f"sending UDP from {veth.sender_ns} failed: {errors or 'hung'}", pytrace=False)


# --------------------------------------------------------------------------- probe loader
def errno_name(number: int | None) -> str:
    """EINVAL, EOPNOTSUPP (errorcode[95] is "ENOTSUP", an alias on Linux), ..."""
    if number == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(number or 0, str(number))


@dataclass
class ProbeRun:
    flavour: str
    attached: bool
    errno: int | None = None
    all_calls: int = 0
    matched: int = 0
    sent: int = 0
    output: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.attached:
            return f"attach failed: {errno_name(self.errno)}"
        return f"ok: {self.matched}/{self.sent} datagrams seen in ip_rcv"


class _Loader:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self.buf = b""
        self.lines: list[str] = []

    def readline(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loader silent for {timeout}s; so far: {self.lines}")
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode(errors="replace")
        self.lines.append(text)
        return text

    def close(self) -> str:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read().decode(errors="replace")


RunProbe = Callable[[str, VethPair, int, int], ProbeRun]


@pytest.fixture
def run_probe(probes_dir: Path) -> RunProbe:
    """run_probe(flavour, veth, port, n): load+attach <flavour>.bpf.o to ip_rcv, send n UDP
    datagrams over the veth pair to port, return what the probe counted."""

    def _run(flavour: str, veth: VethPair, port: int, n: int) -> ProbeRun:
        argv = [
            str(probes_dir / "loader"),
            str(probes_dir / f"{flavour}.bpf.o"),
            veth.daddr,
            str(port),
            str(veth.rx_ifindex),
        ]
        ld = _Loader(argv)
        res = ProbeRun(flavour, attached=False)
        try:
            while (line := ld.readline(timeout=180)) is not None:
                if line == "READY":
                    res.attached = True
                    break
                if m := re.match(r"(LOAD|ATTACH)_FAILED errno=(\d+)", line):
                    res.errno = int(m.group(2))
                    break
            if res.attached:
                send_udp(veth, port, n)
                res.sent = n
                deadline = time.monotonic() + 15  # softirq delivery under TCG
                while True:
                    assert ld.proc.stdin is not None
                    ld.proc.stdin.write(b"\n")
                    line = ld.readline(timeout=60) or ""
                    m = re.match(r"COUNT all=(\d+) match=(\d+)", line)
                    if not m:
                        pytest.fail(f"unexpected loader output {line!r}; {ld.lines}")
                    res.all_calls, res.matched = int(m.group(1)), int(m.group(2))
                    if res.matched >= n or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
        finally:
            stderr = ld.close()
            res.output = ld.lines + [f"[stderr] {s}" for s in stderr.splitlines()]
            res.output.append(f"[exit] {ld.proc.returncode}")
        return res

    return _run
