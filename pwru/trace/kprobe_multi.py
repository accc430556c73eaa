"""kprobe-multi backend (CONFIG_FPROBE, kernel 5.18+): every skb function, by address.

One link per program (per skb position) attaches all of its functions in a single
syscall. If the kernel refuses the batch because of a few functions, the batch is
split until the offenders are found and skipped.
"""

from __future__ import annotations

import errno
import logging

from pwru.bpf import libbpf
from pwru.bpf.loader import ProbeObject
from pwru.trace.backend import Stopped
from pwru.trace.probes import Probe, ProbeKind
from pwru.trace.skbfuncs import SkbFunctionProbes, errno_name

log = logging.getLogger("pwru")


class KprobeMultiBackend(SkbFunctionProbes):
    """Every wanted skb function, a kprobe-multi link per program."""

    kind = ProbeKind.KPROBE_MULTI

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        by_program: dict[str, list[Probe]] = {}
        for probe in self.probes:
            by_program.setdefault(probe.program, []).append(probe)
        for program, group in by_program.items():
            self._attach_batch(obj.program(program), group)
        return self.summary()

    def _attach_batch(self, prog: libbpf.BpfProgram, group: list[Probe]) -> None:
        try:
            link = prog.attach_kprobe_multi([p.addr for p in group], [p.id for p in group])
        except libbpf.LibbpfError as error:
            if error.errno == errno.EOPNOTSUPP:
                raise  # the kernel has no kprobe-multi at all: not a per-function problem
            if len(group) == 1:
                log.debug("kprobe-multi: skipping %s: %s", group[0].name, error)
                self.skip(errno_name(error))
                return
            half = len(group) // 2
            self._attach_batch(prog, group[:half])
            self._attach_batch(prog, group[half:])
            return
        self.held.links.append(link)
        self.attached += len(group)
