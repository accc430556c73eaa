"""kprobe backend: one perf-event kprobe per skb function.

Works on every kernel with kprobes (kprobe-multi needs CONFIG_FPROBE). Links are
made from a pool of threads (``--filter-kprobe-batch`` at a time; the syscalls
release the GIL), with a progress bar on stderr; detaching is just as concurrent.
Also used, a few functions at a time, for --filter-non-skb-funcs.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from pwru.bpf import libbpf
from pwru.bpf.loader import ProbeObject
from pwru.kernel import features
from pwru.trace.backend import Held, Stopped
from pwru.trace.probes import Probe, ProbeKind
from pwru.trace.skbfuncs import SkbFunctionProbes, errno_name

log = logging.getLogger("pwru")


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


Attached = Callable[[Probe, "libbpf.BpfLink | OSError"], None]


def attach_each(
    obj: ProbeObject, probes: Sequence[Probe], batch: int, stopped: Stopped, done: Attached
) -> None:
    """One kprobe per probe (by address: static functions can share a name), ``batch``
    at a time; ``done`` gets each link or error. Stops early when asked to. The probe
    id is the BPF cookie where the kernel has cookies (5.15+); before, events carry
    the probed address instead (see bpf/pwru.bpf.c, kprobe_id)."""
    programs = {name: obj.program(name) for name in {p.program for p in probes}}
    progress = Progress("attaching kprobes", len(probes))
    cookies = bool(features.attach_cookies())

    def attach_one(probe: Probe) -> libbpf.BpfLink | OSError:
        try:
            cookie = probe.id if cookies else 0
            return programs[probe.program].attach_kprobe_addr(probe.addr, cookie=cookie)
        except OSError as error:
            return error

    try:
        with ThreadPoolExecutor(max_workers=batch) as pool:
            for start in range(0, len(probes), batch * 8):
                if stopped():
                    return
                chunk = probes[start : start + batch * 8]
                for probe, result in zip(chunk, pool.map(attach_one, chunk)):
                    if isinstance(result, OSError) and result.errno in (errno.EMFILE, errno.ENFILE):
                        raise result  # out of file descriptors: not this function's fault
                    done(probe, result)
                progress.step(len(chunk))
    finally:
        progress.finish()


def attach_keeping(
    obj: ProbeObject,
    probes: Sequence[Probe],
    batch: int,
    stopped: Stopped,
    held: Held,
    failed: Callable[[Probe, OSError], None],
) -> int:
    """attach_each, keeping every link in ``held`` and telling ``failed`` of each
    error; how many attached."""
    attached = 0

    def done(probe: Probe, result: libbpf.BpfLink | OSError) -> None:
        nonlocal attached
        if isinstance(result, OSError):
            failed(probe, result)
        else:
            held.links.append(result)
            attached += 1

    attach_each(obj, probes, batch, stopped, done)
    return attached


class KprobeBackend(SkbFunctionProbes):
    """Every wanted skb function, one kprobe each."""

    kind = ProbeKind.KPROBE

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        def failed(probe: Probe, error: OSError) -> None:
            log.debug("kprobe: skipping %s: %s", probe.name, error)
            self.skip(errno_name(error))

        batch = self.ctx.options.filter_kprobe_batch
        self.attached += attach_keeping(obj, self.probes, batch, stopped, self.held, failed)
        return self.summary()
