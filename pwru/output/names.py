"""Names for humans: interfaces, processes, kernel symbols; and netns/ifname filters.

``SystemNames`` answers the renderer's questions (see ``pwru.render.NameResolver``)
from the running system and caches every answer, since each is asked once per event:

* ``iface(netns, ifindex)`` -> ``"eth0:2"`` like pwru (``"~"`` + last 15 characters
  when longer than 16), or ``"2"`` when the name is unknown. Interfaces of other
  network namespaces are listed by entering the namespace (``setns``) from a
  short-lived thread, so the rest of the process never changes namespace. A miss
  re-lists the namespace once (interfaces appear while tracing), then is retried
  at most every ``MISS_RETRY_S`` seconds.
* ``process(pid, comm)`` -> ``"/usr/bin/curl:42"`` (same truncation), from
  ``/proc/<pid>/exe`` when readable, else from the event's comm (kernel threads and
  processes that already exited), ``"<empty>:0"`` for pid 0.
* ``symbol(addr)`` -> nearest kernel symbol at or below ``addr`` (``--output-caller``),
  from ``/proc/kallsyms``, read on first use.
* ``probe_name(ev)`` and ``drop_reason(value)`` come from the constructor: the probe
  table and the kernel's ``enum skb_drop_reason`` are known by the loader.

``resolve_netns`` and ``resolve_ifindex`` turn ``--filter-netns`` and
``--filter-ifname`` into the numbers the BPF config needs, raising ``UsageError``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Callable, TypeVar

from pwru.errors import EnvironmentProblem, UsageError
from pwru.kernel.kallsyms import Kallsyms
from pwru.output.decode import Event

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace (Linux 4.11+)
MAX_NAME_LEN = 16  # pwru's column width for IFACE and PROCESS
MISS_RETRY_S = 5.0
_CACHE_LIMIT = 16384
_RESCAN_INTERVAL_S = 1.0

T = TypeVar("T")


def truncate_name(name: str) -> str:
    """pwru's truncation: names longer than 16 keep their last 15 chars after a '~'."""
    if len(name) > MAX_NAME_LEN:
        return "~" + name[-(MAX_NAME_LEN - 1) :]
    return name


# --- network namespaces ------------------------------------------------------

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


# --- the resolver --------------------------------------------------------------


def _default_probe_name(ev: Event) -> str:
    return f"{ev.func_ip:#x}" if ev.func_ip else f"probe#{ev.probe_id}"


class SystemNames:
    """Names from the running system, cached (implements pwru.render.NameResolver).

    ``probe_name`` maps an event to its function or tracepoint name and
    ``drop_reasons`` maps skb drop reason values to names; the loader knows both.
    The path arguments exist for tests.
    """

    def __init__(
        self,
        probe_name: Callable[[Event], str] | None = None,
        drop_reasons: Mapping[int, str] | None = None,
        *,
        proc: str = "/proc",
        run_netns: str = "/run/netns",
        kallsyms: str = "/proc/kallsyms",
        ksyms: Callable[[], Kallsyms] | None = None,
    ) -> None:
        self._probe_name = probe_name or _default_probe_name
        self._drop_reasons: Mapping[int, str] = drop_reasons or {}
        self._proc = proc
        self._run_netns = run_netns
        # the session's table when it has one (read once); else our own from ``kallsyms``
        self._load_ksyms = ksyms or (lambda: Kallsyms.load(kallsyms))
        self._kallsyms: Kallsyms | None = None
        self._kallsyms_unreadable = False
        self._own_netns = current_netns()
        self._ifaces: dict[tuple[int, int], str] = {}  # (netns, ifindex) -> "name:idx"
        self._iface_retry: dict[tuple[int, int], float] = {}  # misses: retry after
        self._netns_ifaces: dict[int, dict[int, str]] = {}  # netns -> ifindex -> name
        self._netns_paths: dict[int, str] = {}
        self._paths_scanned_at = float("-inf")
        self._procs: dict[tuple[int, str], str] = {}
        self._symbols: dict[int, str] = {}

    # probe and reason names: supplied by the loader

    def probe_name(self, ev: Event) -> str:
        return self._probe_name(ev)

    def drop_reason(self, value: int) -> str | None:
        return self._drop_reasons.get(value)

    # interfaces

    def iface(self, netns: int, ifindex: int) -> str:
        name = self._ifaces.get((netns, ifindex))
        if name is not None:
            return name
        return self._iface_miss(netns, ifindex)

    def _iface_miss(self, netns: int, ifindex: int) -> str:
        key = (netns, ifindex)
        now = time.monotonic()
        retry = self._iface_retry.get(key)
        if ifindex == 0 or (retry is not None and now < retry):
            return str(ifindex)
        table = self._netns_ifaces.get(netns)
        if table is None or ifindex not in table:
            table = self._load_ifaces(netns)
        ifname = table.get(ifindex)
        if ifname is None:
            self._iface_retry[key] = now + MISS_RETRY_S
            return str(ifindex)
        self._iface_retry.pop(key, None)
        if len(self._ifaces) >= _CACHE_LIMIT:
            self._ifaces.clear()
        name = self._ifaces[key] = truncate_name(f"{ifname}:{ifindex}")
        return name

    def _load_ifaces(self, netns: int) -> dict[int, str]:
        table: dict[int, str] = {}
        if netns == self._own_netns:
            table = dict(socket.if_nameindex())
        elif netns:
            for _ in range(2):  # a stale path (process gone): rescan once
                path = self._path_of(netns)
                if path is None:
                    break
                try:
                    table = dict(run_in_netns(path, socket.if_nameindex))
                    break
                except OSError:
                    self._netns_paths.pop(netns, None)
        self._netns_ifaces[netns] = table
        return table

    def _path_of(self, netns: int) -> str | None:
        path = self._netns_paths.get(netns)
        if path is None:
            now = time.monotonic()
            if now - self._paths_scanned_at >= _RESCAN_INTERVAL_S:
                self._paths_scanned_at = now
                self._netns_paths = netns_paths(self._proc, self._run_netns)
                path = self._netns_paths.get(netns)
        return path

    # processes

    def process(self, pid: int, comm: str) -> str:
        name = self._procs.get((pid, comm))  # comm in the key: exec changes it
        if name is None:
            if len(self._procs) >= _CACHE_LIMIT:
                self._procs.clear()
            name = self._procs[(pid, comm)] = self._process_name(pid, comm)
        return name

    def _process_name(self, pid: int, comm: str) -> str:
        if pid == 0:
            return "<empty>:0"
        try:
            exe = os.readlink(os.path.join(self._proc, str(pid), "exe"))
        except OSError:
            exe = comm or "<empty>"
        return truncate_name(f"{exe}:{pid}")

    # kernel symbols

    def symbol(self, addr: int) -> str:
        name = self._symbols.get(addr)
        if name is None:
            if self._kallsyms is None and not self._kallsyms_unreadable:
                try:
                    self._kallsyms = self._load_ksyms()
                except EnvironmentProblem:
                    self._kallsyms_unreadable = True  # addresses stay hex
            found = self._kallsyms.name_at(addr) if self._kallsyms and addr else None
            name = found or f"{addr:#x}"  # bare names, as cilium/pwru prints them
            if len(self._symbols) >= _CACHE_LIMIT:
                self._symbols.clear()
            self._symbols[addr] = name
        return name
