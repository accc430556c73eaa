"""kprobe and kprobe-multi backends: every function that takes an sk_buff.

One loaded program per position of the sk_buff parameter serves all the
functions with the skb there; the BPF cookie given at attach time is the probe
id, so every event names its function exactly (no address lookup, no IBT
offset guessing).

* kprobe-multi (CONFIG_FPROBE, kernel 5.18+): one link per program, attached by
  address in a single syscall. If the kernel refuses the batch because of a few
  functions, the batch is split until the offenders are found and skipped.
* kprobe: one perf-event link per function, attached from a pool of threads
  (``--filter-kprobe-batch`` at a time; the syscalls release the GIL), with a
  progress bar on stderr.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from pwru.bpf import libbpf
from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.kernel.discovery import SkbFunc
from pwru.trace.probes import Probe, ProbeTable

log = logging.getLogger("pwru")

KPROBE = "kprobe"
KPROBE_MULTI = "kprobe-multi"
MAX_SKB_POSITION = 4

# Functions with a program of their own (by where their skb is): the drop functions,
# whose reason pwru prints, and kfree_skbmem, which also ends --filter-track-skb's
# interest in the skb (see bpf/pwru.bpf.c).
_SPECIAL_PROGRAMS = {
    ("kfree_skb_reason", 0): "kfree_reason",  # until 6.10
    ("sk_skb_reason_drop", 1): "skdrop_reason",  # 6.11+
    ("kfree_skbmem", 0): "free",
}
_PREFIX = {KPROBE: "pwru_kp_", KPROBE_MULTI: "pwru_km_"}


def program_for(backend: str, func: SkbFunc) -> str | None:
    """The BPF program that reads this function's sk_buff (and drop reason)."""
    special = _SPECIAL_PROGRAMS.get((func.name, func.skb_arg))
    if special:
        return _PREFIX[backend] + special
    if func.skb_arg <= MAX_SKB_POSITION:
        return f"{_PREFIX[backend]}skb{func.skb_arg}"
    return None


def program_in(family: str, probe: Probe) -> str:
    """The program serving ``probe`` in this kprobe family (``probe.program`` names the
    planned family's; both name theirs pwru_k?_<what>, so the prefix is swapped)."""
    return _PREFIX[family] + probe.program[len(_PREFIX[KPROBE]) :]


def plan(backend: str, functions: list[SkbFunc], table: ProbeTable) -> list[Probe]:
    """A probe per function, numbered in ``table``."""
    probes = []
    for func in functions:
        program = program_for(backend, func)
        if program is not None:
            probes.append(table.add(func.name, backend, program, addr=func.addr))
    return probes


def load_requests(probes: list[Probe], family: str) -> list[LoadRequest]:
    """Each program loads once; the cookie, not the instructions, tells probes apart."""
    return [LoadRequest(name) for name in sorted({program_in(family, p) for p in probes})]


@dataclass
class AttachReport:
    """How attaching went, for the one-line summary."""

    attached: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _reason(error: OSError) -> str:
    return errno.errorcode.get(error.errno or 0, "error").lower() if error.errno else "error"


def attach_multi(
    obj: ProbeObject, probes: list[Probe], links: list[libbpf.BpfLink], report: AttachReport
) -> None:
    """One kprobe-multi link per program, splitting refused batches to skip offenders."""
    by_program: dict[str, list[Probe]] = {}
    for probe in probes:
        by_program.setdefault(program_in(KPROBE_MULTI, probe), []).append(probe)
    for program, group in by_program.items():
        prog = obj.obj.program(program)
        _attach_multi_batch(prog, group, links, report)


def _attach_multi_batch(
    prog: libbpf.BpfProgram, group: list[Probe], links: list[libbpf.BpfLink], report: AttachReport
) -> None:
    try:
        links.append(prog.attach_kprobe_multi([p.addr for p in group], [p.id for p in group]))
        report.attached += len(group)
    except libbpf.LibbpfError as error:
        if error.errno == errno.EOPNOTSUPP:
            raise  # the kernel has no kprobe-multi at all: not a per-function problem
        if len(group) == 1:
            log.debug("kprobe-multi: skipping %s: %s", group[0].name, error)
            report.skip(_reason(error))
            return
        half = len(group) // 2
        _attach_multi_batch(prog, group[:half], links, report)
        _attach_multi_batch(prog, group[half:], links, report)


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


def attach_each(
    obj: ProbeObject,
    probes: list[Probe],
    links: list[libbpf.BpfLink],
    report: AttachReport,
    batch: int,
    stopped: Callable[[], bool],
) -> None:
    """One kprobe per function, ``batch`` at a time; stops early when asked to."""
    names = {p.program: program_in(KPROBE, p) for p in probes}
    programs = {planned: obj.obj.program(name) for planned, name in names.items()}
    progress = Progress("attaching kprobes", len(probes))

    def attach_one(probe: Probe) -> libbpf.BpfLink | OSError:
        try:
            # by address: static functions can share a name
            return programs[probe.program].attach_kprobe_addr(probe.addr, cookie=probe.id)
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
                    if isinstance(result, OSError):
                        log.debug("kprobe: skipping %s: %s", probe.name, result)
                        report.skip(_reason(result))
                    else:
                        links.append(result)
                        report.attached += 1
                progress.step(len(chunk))
    finally:
        progress.finish()


def detach(links: list[libbpf.BpfLink], batch: int) -> float:
    """Destroy links (concurrently: each kprobe's removal waits for the kernel); seconds taken."""
    started = time.monotonic()
    if len(links) > 1 and batch > 1:
        with ThreadPoolExecutor(max_workers=batch) as pool:
            list(pool.map(lambda link: link.destroy(), links))
    else:
        for link in links:
            link.destroy()
    links.clear()
    return time.monotonic() - started


def kprobe_multi_works(obj: ProbeObject, probe: Probe) -> tuple[bool, str]:
    """Try the smallest kprobe-multi attach; (works, why not)."""
    try:
        program = obj.obj.program(program_in(KPROBE_MULTI, probe))
        link = program.attach_kprobe_multi([probe.addr], [probe.id])
    except libbpf.LibbpfError as error:
        if error.errno == errno.EOPNOTSUPP:
            return False, "this kernel has no kprobe-multi (CONFIG_FPROBE is off)"
        return False, f"kprobe-multi attach failed: {error}"
    link.destroy()
    return True, ""
