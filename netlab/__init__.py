"""A tiny network lab for end-to-end tests and benchmarks: two namespaces joined by a veth pair.

Addresses come from the documentation ranges (192.0.2.0/24, 2001:db8::/64) and
exist only inside the namespaces the lab creates; nothing leaves the machine.
Everything the lab creates (namespaces, and with them their links and
iptables rules) is removed by ``close()``, which fixtures call on teardown.

``add_routed_host()`` puts a third host ``c`` behind ``b`` (198.51.100.0/24, on a
second veth pair) and makes ``b`` a router between ``a`` and ``c``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def pwru_command() -> list[str]:
    """The installed ``pwru`` console command (what users run), or $PWRU_BIN."""
    found = os.environ.get("PWRU_BIN") or shutil.which("pwru")
    if not found:
        raise RuntimeError("the pwru command is not installed (pip install -e .)")
    return [found]


def sh(
    *args: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, input=input)


@dataclass
class Host:
    """One end of the veth pair, in its own namespace."""

    netns: str
    ifname: str
    ipv4: str
    ipv6: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def inode(self) -> int:
        return os.stat(self.netns_path).st_ino

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *args, check=check)

    def python(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-c", code, check=check)

    def send_udp(
        self, dst: str, port: int, count: int = 1, payload: int = 32, mark: int = 0, sport: int = 0
    ) -> None:
        family = "socket.AF_INET6" if ":" in dst else "socket.AF_INET"
        self.python(
            "import socket\n"
            f"s = socket.socket({family}, socket.SOCK_DGRAM)\n"
            f"s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, {mark})\n"
            f"s.bind(('', {sport}))\n"
            f"for _ in range({count}): s.sendto(b'x' * {payload}, ({dst!r}, {port}))\n"
        )

    def tcp_connect(self, dst: str, port: int) -> str:
        """Try a TCP connection; returns 'connected', 'refused' or 'timeout'."""
        family = "socket.AF_INET6" if ":" in dst else "socket.AF_INET"
        result = self.python(
            "import socket\n"
            f"s = socket.socket({family}, socket.SOCK_STREAM); s.settimeout(2)\n"
            "try:\n"
            f"    s.connect(({dst!r}, {port})); print('connected')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except socket.timeout: print('timeout')\n"
        )
        return result.stdout.strip()


@dataclass
class Lab:
    """Two hosts, ``a`` and ``b``, on a veth pair."""

    a: Host
    b: Host
    created: list[str] = field(default_factory=list)
    c: Host | None = None  # behind b, see add_routed_host()

    @classmethod
    def create(cls, subnet: int = 2) -> Lab:
        tag = secrets.token_hex(3)
        a = Host(f"pwru-test-{tag}-a", "veth-a", f"192.0.{subnet}.1", f"2001:db8:{subnet}::1")
        b = Host(f"pwru-test-{tag}-b", "veth-b", f"192.0.{subnet}.2", f"2001:db8:{subnet}::2")
        lab = cls(a, b)
        try:
            for host in (a, b):
                sh("ip", "netns", "add", host.netns)
                lab.created.append(host.netns)
                host.run("ip", "link", "set", "lo", "up")
            sh(
                "ip",
                "-n",
                a.netns,
                "link",
                "add",
                a.ifname,
                "type",
                "veth",
                "peer",
                "name",
                b.ifname,
                "netns",
                b.netns,
            )
            for host in (a, b):
                host.run("ip", "addr", "add", f"{host.ipv4}/24", "dev", host.ifname)
                host.run("ip", "addr", "add", f"{host.ipv6}/64", "dev", host.ifname, "nodad")
                host.run("ip", "link", "set", host.ifname, "up")
            # Static neighbours: no ARP/ND traffic in traces unless a test asks for it.
            for here, there in ((a, b), (b, a)):
                mac = there.run("cat", f"/sys/class/net/{there.ifname}/address").stdout.strip()
                for addr in (there.ipv4, there.ipv6):
                    here.run(
                        "ip",
                        "neigh",
                        "replace",
                        addr,
                        "lladdr",
                        mac,
                        "dev",
                        here.ifname,
                        "nud",
                        "permanent",
                    )
        except BaseException:
            lab.close()
            raise
        return lab

    def add_routed_host(self, subnet: str = "198.51.100") -> Host:
        """A third host ``c`` on a second veth pair with ``b`` (b: veth-bc, .1; c:
        veth-c, .2 of ``subnet``.0/24); b forwards IPv4 between a and c, a routes the
        subnet via b and c routes everything via b. Static neighbours, as in create()."""
        b = self.b
        c = Host(self.a.netns[:-1] + "c", "veth-c", f"{subnet}.2", "")
        sh("ip", "netns", "add", c.netns)
        self.created.append(c.netns)
        self.c = c
        c.run("ip", "link", "set", "lo", "up")
        sh("ip", "-n", b.netns, "link", "add", "veth-bc", "type", "veth",
           "peer", "name", c.ifname, "netns", c.netns)  # fmt: skip
        router = f"{subnet}.1"
        b.run("ip", "addr", "add", f"{router}/24", "dev", "veth-bc")
        c.run("ip", "addr", "add", f"{c.ipv4}/24", "dev", c.ifname)
        b.run("ip", "link", "set", "veth-bc", "up")
        c.run("ip", "link", "set", c.ifname, "up")
        for here, dev, there, there_dev, addr in (
            (b, "veth-bc", c, c.ifname, c.ipv4),
            (c, c.ifname, b, "veth-bc", router),
        ):
            mac = there.run("cat", f"/sys/class/net/{there_dev}/address").stdout.strip()
            here.run("ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
        b.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.a.run("ip", "route", "add", f"{subnet}.0/24", "via", b.ipv4)
        c.run("ip", "route", "add", "default", "via", router)
        return c

    def close(self) -> None:
        # Deleting a namespace removes its links (the veth pair) and its iptables rules.
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()


class PwruRun:
    """pwru running as a subprocess, ready once its --ready-file exists."""

    def __init__(
        self,
        args: Sequence[str],
        workdir: Path,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        poll_s: float = 0.02,
    ) -> None:
        """``poll_s``: how often to look for the ready file (what a start measured by
        this call may be late by)."""
        self.ready_file = workdir / f"ready-{secrets.token_hex(3)}"
        self.out_path = workdir / f"out-{secrets.token_hex(3)}"
        self.err_path = workdir / f"err-{secrets.token_hex(3)}"
        self.args = [*pwru_command(), "--ready-file", str(self.ready_file), *args]
        # pwru writes into these for its whole life; _close_files() closes them
        self._out = open(self.out_path, "w")  # noqa: SIM115
        self._err = open(self.err_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                self._close_files()
                raise AssertionError(
                    f"pwru exited with {self.proc.returncode} before ready: {self.stderr}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"pwru not ready after {timeout}s: {self.stderr}")
            time.sleep(poll_s)

    def _close_files(self) -> None:
        self._out.close()
        self._err.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Signal pwru (unless it already ended) and wait; returns its exit code."""
        if self.proc.poll() is None:
            time.sleep(0.3)  # let the last events reach the ring buffer reader
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._close_files()
        return code

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._close_files()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def lines(self) -> list[str]:
        return [ln for ln in self.stdout.splitlines() if ln.strip()]

    def json_events(self) -> list[dict[str, object]]:
        """The events of --output-json (its first line, the saved-trace header, left out)."""
        return [e for e in map(json.loads, self.lines()) if "pwru_trace" not in e]


def pwru_programs_left(timeout: float = 10.0) -> list[str]:
    """pwru's programs still in the kernel once ``timeout`` has passed.

    After the last fd closes, the kernel frees tracepoint programs after an RCU
    grace period, so they may be listed for a moment after pwru has exited.
    """
    deadline = time.monotonic() + timeout
    while (left := pwru_programs_loaded()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def pwru_programs_loaded() -> list[str]:
    """Names of BPF programs in the kernel that pwru loads (pwru_*)."""
    out = sh("bpftool", "-j", "prog", "show").stdout
    return [
        p.get("name", "")
        for p in json.loads(out or "[]")
        if str(p.get("name", "")).startswith("pwru_")
    ]


def bpf_prog_ids_of(pid: int) -> set[int]:
    """Ids of the BPF programs process ``pid`` holds open (fds of programs and links),
    from /proc/<pid>/fdinfo: unlike a name match, blind to other processes' pwru runs."""
    ids = set()
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def bpf_progs_alive(ids: set[int], timeout: float = 10.0) -> set[int]:
    """Which of ``ids`` are still loaded once ``timeout`` has passed (programs are freed
    an RCU grace period after their last reference goes)."""
    deadline = time.monotonic() + timeout
    while True:
        out = sh("bpftool", "-j", "prog", "show").stdout
        alive = ids & {int(p["id"]) for p in json.loads(out or "[]")}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def ip_of(addr: str) -> str:
    """Normalise an address the way pwru prints it."""
    return (
        socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
        if ":" in addr
        else addr
    )
