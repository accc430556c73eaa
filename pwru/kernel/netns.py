"""Network namespaces: resolving --filter-netns / --filter-ifname, and running code inside one.

``resolve_netns`` and ``resolve_ifindex`` turn ``--filter-netns`` and
``--filter-ifname`` into the numbers the BPF config needs, raising ``UsageError``.
``run_in_netns`` runs a function in another namespace from a short-lived thread
(setns moves only the calling thread), so the rest of pwru never changes namespace.
``netns_paths`` finds a path that opens each namespace (``/run/netns`` names, then
``/proc/<pid>/ns/net``), for names of interfaces in namespaces known only by inode;
``netns_names`` names each namespace for --output-netns-names.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import threading
from typing import Callable, TypeVar

from pwru.errors import EnvironmentProblem, UsageError

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace (Linux 4.11+)

T = TypeVar("T")

_setns_func: Callable[[int, int], None] | None = None


def _setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread: os.setns on 3.12+, libc before."""
    global _setns_func
    if _setns_func is None:
        os_setns = getattr(os, "setns", None)
        if os_setns is not None:
            _setns_func = os_setns
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            c_setns = libc.setns
            c_setns.argtypes = [ctypes.c_int, ctypes.c_int]
            c_setns.restype = ctypes.c_int

            def libc_setns(fd: int, nstype: int) -> None:
                if c_setns(fd, nstype) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))

            _setns_func = libc_setns
    _setns_func(fd, nstype)


def run_in_netns(path: str, func: Callable[[], T]) -> T:
    """Run ``func()`` in the network namespace at ``path``, in a helper thread.

    setns() only moves the calling thread; the helper thread moves back before it
    ends, so no other thread of this process ever sees another namespace.
    Raises OSError when the namespace cannot be entered (e.g. not root).
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(target, CLONE_NEWNET)
                    try:
                        results.append(func())
                    finally:
                        _setns(own, CLONE_NEWNET)
                finally:
                    os.close(target)
            finally:
                os.close(own)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=body, name="pwru-netns", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def current_netns() -> int:
    """Inode of this process's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino


def _is_netns(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        # Older kernel (or not nsfs): all namespaces share the nsfs device.
        return os.fstat(fd).st_dev == os.stat("/proc/self/ns/net").st_dev
    finally:
        os.close(fd)


def netns_paths(proc: str = "/proc", run_netns: str = "/run/netns") -> dict[int, str]:
    """Map netns inode -> a path that opens it: named namespaces first, then
    /proc/<pid>/ns/net of every process we can see."""
    paths: dict[int, str] = {}
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [os.path.join(run_netns, n) for n in sorted(os.listdir(run_netns))]
    with contextlib.suppress(OSError):
        pids = sorted((n for n in os.listdir(proc) if n.isdigit()), key=int)
        candidates += [os.path.join(proc, pid, "ns", "net") for pid in pids]
    for path in candidates:
        try:
            paths.setdefault(os.stat(path).st_ino, path)
        except OSError:
            continue  # process gone, or not ours to see
    return paths


def netns_names(proc: str = "/proc", run_netns: str = "/run/netns") -> dict[int, str]:
    """Map netns inode -> a name for --output-netns-names: its ``ip netns`` name (the
    entry of ``run_netns``; the last in name order when it has several, as cilium/pwru
    reads them), else ``comm:pid`` of the first process in it."""
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(run_netns), key=lambda e: e.name):
            with contextlib.suppress(OSError):
                if not entry.is_dir():
                    names[os.stat(entry.path).st_ino] = entry.name
    first_pid: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for pid in sorted((n for n in os.listdir(proc) if n.isdigit()), key=int):
            with contextlib.suppress(OSError):  # process gone, or not ours to see
                first_pid.setdefault(os.stat(os.path.join(proc, pid, "ns", "net")).st_ino, pid)
    for inode, pid in first_pid.items():
        if inode not in names:
            with contextlib.suppress(OSError), open(os.path.join(proc, pid, "comm")) as comm:
                names[inode] = f"{comm.read().strip()}:{pid}"
    return names


def _netns_path(spec: str, run_netns: str) -> str:
    """The file a --filter-netns spec (other than inode:N) refers to."""
    return spec if "/" in spec else os.path.join(run_netns, spec)


def resolve_netns(spec: str, run_netns: str = "/run/netns") -> int:
    """--filter-netns -> netns inode (0 for an empty spec, meaning "any").

    Accepts ``/proc/<pid>/ns/net`` or any netns path, ``NAME`` for
    ``/run/netns/NAME`` (as ``ip netns`` names them), ``inode:<n>``, and a bare
    number (the inode, as in old pwru releases) when no namespace has that name.
    """
    spec = spec.strip()
    if not spec:
        return 0
    if spec.startswith("inode:") or ("/" not in spec and spec.isdigit()):
        digits = spec[len("inode:") :] if spec.startswith("inode:") else spec
        named = os.path.join(run_netns, digits)
        if spec.isdigit() and os.path.exists(named):
            return resolve_netns(named, run_netns)
        if not digits.isdigit() or not 0 < int(digits) <= 0xFFFFFFFF:
            raise UsageError(f"invalid network namespace {spec!r}: expected inode:<number>")
        return int(digits)
    path = _netns_path(spec, run_netns)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        hint = "" if "/" in spec else " (see ip netns list)"
        raise UsageError(f"unknown network namespace {spec!r}: no such file {path}{hint}") from None
    except OSError as err:
        raise UsageError(f"cannot open network namespace {spec!r}: {err.strerror}") from None
    if not _is_netns(path):
        raise UsageError(f"{spec!r} is not a network namespace (try /proc/<pid>/ns/net)")
    return st.st_ino


def resolve_ifindex(ifname: str, netns_spec: str = "", run_netns: str = "/run/netns") -> int:
    """--filter-ifname (looked up in --filter-netns, or here) -> ifindex; 0 if empty."""
    if not ifname:
        return 0
    where = f"network namespace {netns_spec!r}" if netns_spec else "the current network namespace"
    inode = resolve_netns(netns_spec, run_netns)

    def lookup() -> int:
        return socket.if_nametoindex(ifname)

    spec = netns_spec.strip()
    try:
        if inode == 0 or inode == current_netns():
            return lookup()
        if spec.startswith("inode:") or spec.isdigit():
            found = netns_paths(run_netns=run_netns).get(inode)
            if found is None:
                raise UsageError(
                    f"no process or /run/netns entry is in {where}, so --filter-ifname "
                    f"cannot be looked up there; give the netns as a path"
                )
            path = found
        else:
            path = _netns_path(spec, run_netns)
        try:
            return run_in_netns(path, lookup)
        except PermissionError as err:
            raise EnvironmentProblem(
                f"cannot enter {where} to look up interface {ifname!r}: {err.strerror} "
                f"(run pwru as root)"
            ) from None
    except OSError:  # if_nametoindex: no such device
        raise UsageError(f"unknown interface {ifname!r} in {where}") from None
