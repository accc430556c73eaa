"""The probe table: every attach point pwru uses, numbered.

Events carry the probe's number (``probe_id``), so the table is how a line of
output gets its FUNC name, and how each backend knows what to attach.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from pwru.bpf.abi import PWRU_PROBE_BY_ADDR


class ProbeKind(enum.Enum):
    """How a probe is attached."""

    TRACEPOINT = "tracepoint"  # tp_btf on a raw tracepoint
    KPROBE = "kprobe"  # one perf-event kprobe per function
    KPROBE_MULTI = "kprobe-multi"  # many functions per link
    TC = "tc"  # fentry on a tc BPF program
    XDP = "xdp"  # fentry/fexit on an XDP BPF program
    FEXIT = "fexit"  # fexit on a kernel function (clone tracking)


# kinds whose events name their probe by address where the kernel has no BPF cookies
_BY_ADDRESS = frozenset({ProbeKind.KPROBE, ProbeKind.KPROBE_MULTI})


@dataclass(frozen=True)
class Probe:
    """One attach point and the BPF program that serves it."""

    id: int
    name: str  # shown in the FUNC column, e.g. "kfree_skb" or "ip_rcv"
    kind: ProbeKind
    program: str  # program in the BPF object
    attach_btf_id: int = 0  # kernel BTF id of the target, where the kind needs one
    addr: int = 0  # kernel address of the function (kprobe kinds)
    target_fd: int = 0  # the traced BPF program's fd (tc/XDP kinds)


class ProbeTable:
    """Probes by id; ids are dense so events resolve with one list index."""

    def __init__(self) -> None:
        self._probes: list[Probe] = []
        self._by_addr: dict[int, Probe] | None = None  # made at the first such event

    def add(
        self,
        name: str,
        kind: ProbeKind,
        program: str,
        *,
        attach_btf_id: int = 0,
        addr: int = 0,
        target_fd: int = 0,
    ) -> Probe:
        probe = Probe(len(self._probes), name, kind, program, attach_btf_id, addr, target_fd)
        self._probes.append(probe)
        self._by_addr = None
        return probe

    def __getitem__(self, probe_id: int) -> Probe:
        return self._probes[probe_id]

    def __len__(self) -> int:
        return len(self._probes)

    def __iter__(self) -> Iterator[Probe]:
        return iter(self._probes)

    def name(self, probe_id: int) -> str:
        """FUNC name for an event's probe id (tolerates ids from a stale program)."""
        if 0 <= probe_id < len(self._probes):
            return self._probes[probe_id].name
        return f"probe#{probe_id}"

    def event_name(self, probe_id: int, func_ip: int) -> str:
        """FUNC name for an event: by its probe id, or by the probed address for kprobes
        on kernels without BPF cookies (probe id PWRU_PROBE_BY_ADDR)."""
        if probe_id != PWRU_PROBE_BY_ADDR:
            return self.name(probe_id)
        if self._by_addr is None:
            self._by_addr = {}
            for probe in self._probes:
                if probe.kind in _BY_ADDRESS:
                    self._by_addr.setdefault(probe.addr, probe)
        found = self._by_addr.get(func_ip)
        return found.name if found is not None else f"{func_ip:#x}"
