"""What every way of attaching has in common: the Backend protocol.

A run plans before it loads (the object is loaded once, with every program the
run needs) and attaches after. Each backend module implements the same three
steps:

* ``plan(table)``: number its attach points in the probe table and say which
  programs of the object to load (``LoadRequest``); one-line remarks for the user
  go to ``notes``;
* ``attach(obj, stopped)``: attach them, recording every fd and link as soon as it
  exists; returns a fragment of the one-line summary ("attached 30 tracepoints");
* ``close()``: detach and release everything it holds (closing is detaching).

A run combines one main backend (tracepoints, kprobes or kprobe-multi) with
optional parts that follow the same protocol: clone tracking, non-skb functions,
tc/XDP programs. ``pwru.trace.select`` decides which.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pwru.bpf.libbpf import BpfLink
from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.kernel.btf import KernelBtf
from pwru.kernel.kallsyms import Kallsyms
from pwru.trace.probes import Probe, ProbeTable

if TYPE_CHECKING:
    from pwru.options import Options


Stopped = Callable[[], bool]  # asks whether a stop signal arrived (long attaches check it)


class Backend(Protocol):
    """One way of attaching pwru's programs (see the module docstring)."""

    notes: list[str]

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        """Add this backend's probes to ``table``; the programs to load."""
        ...

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        """Attach what was planned; a fragment of the summary line ("" for none)."""
        ...

    def close(self) -> float:
        """Detach and release every fd and link; the seconds it took."""
        ...


@dataclass
class Held:
    """The fds and links a backend holds; close() releases them (detach = close)."""

    fds: list[int] = field(default_factory=list)
    links: list[BpfLink] = field(default_factory=list)

    def close(self, batch: int = 1) -> float:
        """Release everything; links are destroyed ``batch`` at a time (each kprobe's
        removal waits for the kernel). Returns the seconds it took."""
        started = time.monotonic()
        if len(self.links) > 1 and batch > 1:
            with ThreadPoolExecutor(max_workers=batch) as pool:
                list(pool.map(lambda link: link.destroy(), self.links))
        else:
            for link in self.links:
                link.destroy()
        self.links.clear()
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())
        return time.monotonic() - started


@dataclass
class TraceContext:
    """What planning needs to know about the run and the kernel."""

    options: Options
    kernel_btf: KernelBtf  # types (the running kernel's, or --kernel-btf)
    running_btf: KernelBtf  # the running kernel's own BTF ids (tp_btf/fentry targets)
    ksyms: Callable[[], Kallsyms]  # /proc/kallsyms, read on first use
    wanted: Callable[[str], bool]  # --filter-func


class ProbeSet:
    """What most backends hold: the run's context, their notes, probes and fds/links."""

    def __init__(self, ctx: TraceContext) -> None:
        self.ctx = ctx
        self.notes: list[str] = []
        self.probes: list[Probe] = []
        self.held = Held()

    def close(self) -> float:
        return self.held.close()
