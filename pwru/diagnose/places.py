"""Network namespaces by name, and commands run inside them.

Events name a namespace by its inode. ``Namespaces`` turns that into something a person
can type: the ``ip netns`` name (``/run/netns/NAME``), else a process in it
(``/proc/<pid>/ns/net``), else the inode; with the command prefix that runs a tool
there (``ip netns exec NAME``, ``nsenter --net=/proc/<pid>/ns/net``, nothing for
pwru's own namespace).

``run`` executes a command inside a namespace by entering it from a short-lived thread
(``pwru.kernel.netns.run_in_netns``) and starting the command from that thread: a child
process inherits the namespace of the thread that made it. That needs no nsenter or
``ip netns exec`` (which also remounts /sys) and works for namespaces known only
through a process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, TypeVar

from pwru.kernel.netns import current_netns, netns_paths, run_in_netns

RUN_NETNS = "/run/netns"
COMMAND_TIMEOUT_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """One network namespace, as a person names it."""

    inode: int
    path: str  # opens it ("" when no path is known)
    name: str  # "b" for /run/netns/b, "pid 812" for a process's, else the inode
    exec_prefix: str  # "ip netns exec b", "nsenter --net=/proc/812/ns/net", ""
    own: bool  # pwru's own namespace

    @property
    def label(self) -> str:
        """``b (4026532540)``, or just the inode when there is no better name."""
        if self.own:
            return f"host ({self.inode})"
        return self.name if self.name == str(self.inode) else f"{self.name} ({self.inode})"


class Namespaces:
    """Paths and names of the namespaces on this machine, rescanned on a miss."""

    def __init__(self, proc: str = "/proc", run_netns: str = RUN_NETNS) -> None:
        self._proc = proc
        self._run_netns = run_netns
        self._own = current_netns()
        self._paths: dict[int, str] = {}
        self.rescan()

    def rescan(self) -> dict[int, str]:
        self._paths = netns_paths(self._proc, self._run_netns)
        self._paths.setdefault(self._own, os.path.join(self._proc, "self/ns/net"))
        return dict(self._paths)

    def paths(self) -> dict[int, str]:
        return dict(self._paths)

    def place(self, inode: int) -> Place:
        path = self._paths.get(inode) or self.rescan().get(inode, "")
        own = inode == self._own
        if own:
            return Place(inode, path, "host", "", True)
        if path.startswith(self._run_netns + "/"):
            name = os.path.basename(path)
            return Place(inode, path, name, f"ip netns exec {name}", False)
        if path:
            pid = path.split("/")[-3]
            return Place(inode, path, f"pid {pid}", f"nsenter --net={path}", False)
        return Place(inode, "", str(inode), f"nsenter --net=<path of netns {inode}>", False)


def run_in(place: Place, func: Callable[[], T]) -> T:
    """``func()`` inside the namespace (in pwru's own thread when it is ours)."""
    if place.own:
        return func()
    if not place.path:
        raise OSError(f"no path opens network namespace {place.inode}")
    return run_in_netns(place.path, func)


def run(place: Place, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace; OSError when it cannot start."""

    def command() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    try:
        return run_in(place, command)
    except subprocess.TimeoutExpired as error:
        raise OSError(f"{argv[0]} took longer than {COMMAND_TIMEOUT_S:.0f} s") from error


def answer(place: Place, argv: Sequence[str]) -> str:
    """The first line a command prints (its error if it fails), for a hint."""
    try:
        done = run(place, argv)
    except OSError as error:
        return f"cannot run {argv[0]}: {error}"
    text = (done.stdout if done.returncode == 0 else done.stderr or done.stdout).strip()
    return text.splitlines()[0].strip() if text else f"(no output, exit {done.returncode})"
