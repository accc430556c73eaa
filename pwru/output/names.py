"""Names for humans: interfaces, processes, kernel symbols.

``SystemNames`` answers the renderer's questions (see ``pwru.output.render.NameResolver``)
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
* ``netns_name(netns)`` -> the namespace's ``ip netns`` name, else ``comm:pid`` of its
  first process, else ``""`` (--output-netns-names); the table is read again, at most
  every ``_RESCAN_INTERVAL_S``, when a namespace is missing from it.
* ``symbol(addr)`` -> nearest kernel symbol at or below ``addr`` (``--output-caller``),
  from ``/proc/kallsyms``, read on first use.
* ``probe_name(ev)`` and ``drop_reason(value)`` come from the constructor: the probe
  table and the kernel's ``enum skb_drop_reason`` are known by the loader.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Callable

from pwru.errors import EnvironmentProblem
from pwru.kernel.kallsyms import Kallsyms
from pwru.kernel.netns import current_netns, netns_names, netns_paths, run_in_netns
from pwru.output.decode import Event

MAX_NAME_LEN = 16  # pwru's column width for IFACE and PROCESS
MISS_RETRY_S = 5.0
_CACHE_LIMIT = 16384
_RESCAN_INTERVAL_S = 1.0


def truncate_name(name: str) -> str:
    """pwru's truncation: names longer than 16 keep their last 15 chars after a '~'."""
    if len(name) > MAX_NAME_LEN:
        return "~" + name[-(MAX_NAME_LEN - 1) :]
    return name


def _default_probe_name(ev: Event) -> str:
    return f"{ev.func_ip:#x}" if ev.func_ip else f"probe#{ev.probe_id}"


class SystemNames:
    """Names from the running system, cached (implements pwru.output.render.NameResolver).

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
        self._netns_names: dict[int, str] = {}
        self._names_scanned_at = float("-inf")
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

    # network namespaces

    def netns_name(self, netns: int) -> str:
        name = self._netns_names.get(netns)
        if name is not None:
            return name
        now = time.monotonic()
        if netns and now - self._names_scanned_at >= _RESCAN_INTERVAL_S:
            self._names_scanned_at = now
            self._netns_names = netns_names(self._proc, self._run_netns)
        return self._netns_names.get(netns, "")

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
