"""The benchmark's C tools (bench/c) and the processes the yardsticks run.

* ``flood``: a sendmmsg UDP flood from namespace a (``Flood``).
* ``ringcount``: the yardstick consumer, or with -c an independent count of the
  events a run is offered (``Loader``).
* ``nooploader``: no-op programs where pwru attaches its own: the floor (``Loader``).

The tools print facts one per line on stdout (bench/c/common.h); ``Loader``
collects them from a thread so a pipe never fills up.
"""

from __future__ import annotations

import compileall
import ctypes
import mmap
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from netlab import Lab

NO_ROTATION_MB = 1 << 20  # --output-file-max-size for files the benchmarks count

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "bench" / "c" / "build"
FLOOD_PORT = 9999


def build_tools() -> None:
    """Build bench/c into bench/c/build (git ignores it); a failure ends the run."""
    made = subprocess.run(
        ["make", "-s", "-C", str(REPO / "bench" / "c")], capture_output=True, text=True
    )
    if made.returncode != 0:
        raise SystemExit(f"bench: building bench/c failed:\n{made.stderr.strip()}")


def use_checkout_pwru(workdir: Path) -> None:
    """Make netlab.PwruRun start this checkout's pwru (not an installed one), unless
    $PWRU_BIN names one: a wrapper that execs ``python3 -m pwru`` keeps pwru's pid.
    Its modules are byte-compiled first, so no start pays for that (where the
    checkout is read-only, as in the guest, the host did it before)."""
    if os.environ.get("PWRU_BIN"):
        return
    compileall.compile_dir(REPO / "pwru", quiet=2)
    wrapper = workdir / "pwru"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m pwru "$@"\n'
    )
    wrapper.chmod(0o755)
    os.environ["PWRU_BIN"] = str(wrapper)


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout at the end)."""
    print(f"bench: {message} (load {loadavg()})", file=sys.stderr, flush=True)


def loadavg() -> str:
    """The 1/5/15-minute load averages: the machine is shared, say how busy it was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_tracepoints(path: Path) -> int:
    """pwru's skb tracepoints ("name position" lines for ringcount and nooploader)."""
    from pwru.kernel.btf import KernelBtf

    points = KernelBtf.load().skb_tracepoints()
    path.write_text("".join(f"{tp.name} {tp.skb_arg}\n" for tp in points))
    return len(points)


def quiet_lab(lab: Lab) -> None:
    """No IPv6 in the lab (router solicitations, MLD reports): the flood is then the
    only traffic in b, so event counts compare exactly."""
    for host in (lab.a, lab.b):
        for scope in ("all", "default"):
            host.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")


def drop_flood_in_b(lab: Lab) -> None:
    """b drops the flood in INPUT (iptables lives in b's namespace, gone with it)."""
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", str(FLOOD_PORT), "-j", "DROP")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def softirqd_seconds() -> float:
    """CPU time of the ksoftirqd threads so far: receive work the kernel deferred
    there is the flood's too."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith("ksoftirqd/"):
                total += cpu_seconds(int(comm.parent.name))
        except OSError:
            continue  # gone meanwhile
    return total


@dataclass
class Flooded:
    """What one flood did. ``cpu_seconds`` (its own and ksoftirqd's) is the CPU the
    packets cost, which other tenants of a shared machine hardly change; ``pps`` is
    what issue #12 defines its ratios with."""

    sent: int
    seconds: float
    cpu_seconds: float

    @property
    def pps(self) -> float:
        return self.sent / self.seconds

    @property
    def pps_per_cpu(self) -> float:
        """Packets per CPU-second: the rate one whole CPU would reach."""
        return self.sent / self.cpu_seconds


class Flood:
    """``flood`` in namespace a towards b, for ``seconds`` at most ``rate`` packets/s."""

    def __init__(self, lab: Lab, seconds: float, rate: float = 0) -> None:
        self.softirqd_before = softirqd_seconds()
        self.started = time.monotonic()
        self.seconds = seconds
        argv = [str(BUILD / "flood"), lab.b.ipv4, str(FLOOD_PORT), str(seconds), str(rate)]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.a.netns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self) -> Flooded:
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self.proc.returncode != 0:
            raise RuntimeError(f"flood failed: {err.strip()}")
        sent, elapsed, cpu = out.split()
        softirqd = softirqd_seconds() - self.softirqd_before
        return Flooded(int(sent), float(elapsed), float(cpu) + softirqd)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@dataclass
class Sample:
    """One ``sample`` line of ringcount."""

    consumed: int
    reserve_failed: int
    offered: int
    at: float  # time.monotonic()


class Loader:
    """A C tool that attaches programs, prints ``ready``, and detaches on SIGINT."""

    def __init__(self, argv: list[str], ready_timeout: float = 120.0) -> None:
        self.lines: list[str] = []
        self.name = argv[0]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        while not any(line.startswith("ready ") for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{argv[0]} not ready: {self.stderr()}")
            time.sleep(0.01)
        self.ready = self.first("ready")  # attached, attach seconds

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def first(self, tag: str) -> list[str]:
        return next(line.split()[1:] for line in self.lines if line.startswith(tag + " "))

    def samples(self) -> list[Sample]:
        return [
            Sample(int(c), int(f), int(o), float(t))
            for c, f, o, t in (line.split()[1:] for line in self.lines if line.startswith("sample"))
        ]

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def stop(self, timeout: float = 300.0) -> None:
        """SIGINT, then wait until the tool has detached everything and exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()
        self._reader.join(5)
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed: {self.stderr()}")

    def kill(self) -> None:
        """Last resort (closing its fds detaches everything it attached)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ringcount(tracepoints: Path, netns: int, count_only: bool = False, ring_mb: int = 16) -> Loader:
    argv = [str(BUILD / "ringcount"), "-n", str(netns), "-r", str(ring_mb)]
    return Loader([*argv, *(["-c"] if count_only else []), str(tracepoints)])


def nooploader(mode: str, points: Path) -> Loader:
    # one kprobe per function: ~1,600 attach in 30 s to minutes under TCG on a busy host
    ready_timeout = 900.0 if mode == "kprobe" else 120.0
    return Loader([str(BUILD / "nooploader"), mode, str(points)], ready_timeout)


BPF_MAP_TYPE_RINGBUF = 27


def map_ids(pid: int, map_type: int | None = None) -> list[int]:
    """Ids of the BPF maps process ``pid`` holds (of one type, if given), from its fdinfo."""
    ids = []
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        found = re.search(r"^map_id:\s*(\d+)", text, re.M)
        kind = re.search(r"^map_type:\s*(\d+)", text, re.M)
        if found and (map_type is None or (kind and int(kind.group(1)) == map_type)):
            ids.append(int(found.group(1)))
    return ids


class RingWatch:
    """A read-only view of the positions in another process's BPF ring buffer: the
    ring is empty when its consumer has caught up with its producer."""

    def __init__(self, pid: int) -> None:
        ids = sorted(set(map_ids(pid, BPF_MAP_TYPE_RINGBUF)))  # one map may have several fds
        if len(ids) != 1:
            raise RuntimeError(f"pid {pid} holds {len(ids)} ring buffers, not one")
        libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        fd = libbpf.bpf_map_get_fd_by_id(ids[0])
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"ring buffer map {ids[0]}")
        try:  # page 0: consumer position, page 1: producer position
            self.pages = mmap.mmap(fd, 2 * mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def used(self) -> int:
        """Bytes between the consumer and the producer (records and their headers)."""
        consumer, producer = (struct.unpack_from("Q", self.pages, o)[0] for o in (0, mmap.PAGESIZE))
        return int(producer - consumer)

    def empty(self) -> bool:
        return self.used() == 0

    def close(self) -> None:
        self.pages.close()


def mapped_ring_kib(pid: int) -> int:
    """Resident KiB of the process's BPF map mappings: the ring buffer's pages (kernel
    memory; its data pages are mapped twice, so they count twice). Any consumer of
    the ring, the C one included, has them."""
    total, in_map = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            in_map = line.rstrip().endswith("anon_inode:bpf-map")
        elif in_map and head[0] == "Rss:":
            total += int(head[1])
    return total


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc/<pid>/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")
