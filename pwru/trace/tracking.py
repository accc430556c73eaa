"""--filter-track-skb with kprobes: forget freed skbs, hand tracking to clones and copies.

``kfree_skbmem`` is where every skb's memory goes back: a kprobe forgets it there,
unless kfree_skbmem is itself traced, when its trace program reports the event and
then forgets (two probes on it could run in the wrong order: the event's would
track the dying skb again).
``skb_clone`` and ``skb_copy`` make a new skb from a tracked one: the new one
is tracked too. fexit sees the original and the result in one program, so it is
used where the kernel allows tracing programs; elsewhere a kprobe remembers the
original per task and a kretprobe tracks the result.

The fexit program is bound to its target at load time, so whether the kernel
takes it is known before the object loads: a two-instruction probe program
answers (the development kernel refuses fentry/fexit with EPERM).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pwru.bpf import libbpf
from pwru.bpf.libbpf import BpfLink, LibbpfError
from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.kernel.btf import KernelBtf
from pwru.trace.probes import Probe, ProbeTable

log = logging.getLogger("pwru")

FREE = "kfree_skbmem"
CLONES = ("skb_clone", "skb_copy")
FEXIT_PROGRAM = "pwru_fexit_clone"
CLONE_HOOK_ENV = "PWRU_CLONE_HOOK"
_KPROBE, _KRETPROBE, _FREE = "pwru_kp_clone", "pwru_krp_clone", "pwru_kp_skbmem"
_RETURN_0 = bytes.fromhex("b7000000000000009500000000000000")  # r0 = 0; exit


@dataclass
class TrackingPlan:
    """How clones are followed: fexit probes (one per function), or kretprobes when none."""

    fexit_probes: list[Probe] = field(default_factory=list)
    why_not_fexit: str = ""
    free_traced: bool = False  # kfree_skbmem's own trace program forgets the skb

    def load_requests(self) -> list[LoadRequest]:
        requests = [LoadRequest(_KPROBE), LoadRequest(_KRETPROBE)]
        if not self.free_traced:
            requests.append(LoadRequest(_FREE))
        if self.fexit_probes:  # bound to the first function; the others get copies
            requests.append(
                LoadRequest(FEXIT_PROGRAM, attach_btf_id=self.fexit_probes[0].attach_btf_id)
            )
        return requests

    @property
    def how(self) -> str:
        return "fexit" if self.fexit_probes else f"kretprobe ({self.why_not_fexit})"


def plan(running_btf: KernelBtf, table: ProbeTable, free_traced: bool) -> TrackingPlan:
    """fexit on skb_clone/skb_copy if this kernel loads such a program, else kretprobes.
    PWRU_CLONE_HOOK=kretprobe picks kretprobes anyway (troubleshooting, and the tests
    of that path on kernels that have fexit). ``free_traced``: kfree_skbmem is among
    the traced functions."""
    targets = {f: running_btf.find_type_id(f, "func") or 0 for f in CLONES}
    why = _why_not_fexit(targets)
    if why:
        return TrackingPlan(why_not_fexit=why, free_traced=free_traced)
    probes = [table.add(f, "fexit", FEXIT_PROGRAM, tid) for f, tid in targets.items()]
    return TrackingPlan(probes, free_traced=free_traced)


def _why_not_fexit(targets: dict[str, int]) -> str:
    """Why clones are followed with kretprobes ("" for fexit); ``targets``: BTF ids."""
    if os.environ.get(CLONE_HOOK_ENV) == "kretprobe":
        return f"{CLONE_HOOK_ENV}=kretprobe"
    missing = [f for f, tid in targets.items() if not tid]
    if missing:
        return f"no BTF for {', '.join(missing)}"
    return _fexit_refused(targets[CLONES[0]])


def _fexit_refused(attach_btf_id: int) -> str:
    """Why the kernel refuses an fexit program on this function ("" if it takes it)."""
    try:
        fd = libbpf.prog_load(
            libbpf.BPF_PROG_TYPE_TRACING,
            "pwru_fexit_test",
            _RETURN_0,
            expected_attach_type=libbpf.BPF_TRACE_FEXIT,
            attach_btf_id=attach_btf_id,
            log_size=4096,
        )
    except LibbpfError as error:
        return f"the kernel refuses fexit: {os.strerror(error.errno or 0)}"
    os.close(fd)
    return ""


def attach(obj: ProbeObject, chosen: TrackingPlan, links: list[BpfLink], fds: list[int]) -> str:
    """Attach the free and clone hooks; returns how clones are followed."""
    how = chosen.how
    fexit = bool(chosen.fexit_probes)
    if fexit:
        try:
            obj.attach_raw(chosen.fexit_probes, fds)
        except LibbpfError as error:
            fexit = False
            how = f"kretprobe (fexit attach failed: {os.strerror(error.errno or 0)})"
    todo = [] if chosen.free_traced else [(_FREE, FREE, False)]
    if not fexit:
        for func in CLONES:
            todo += [(_KPROBE, func, False), (_KRETPROBE, func, True)]
    for program, func, ret in todo:
        try:
            links.append(obj.obj.program(program).attach_kprobe(func, retprobe=ret))
        except LibbpfError as error:
            log.warning("--filter-track-skb: cannot probe %s: %s", func, error)
    return how
