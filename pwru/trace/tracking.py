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
takes it is known before the object loads (pwru.kernel.features.fexit;
some kernels refuse every fentry/fexit program with EPERM).

With --summary or --output-per-packet (config.diagnose) the clone programs also
report each clone's birth as an event of the new skb named after the clone function
(skb_clone, skb_copy): the fexit programs know their probe by id, the kretprobes by
their BPF cookie, so both have a probe in the table.
"""

from __future__ import annotations

import logging
import os

from pwru.bpf.libbpf import LibbpfError
from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.kernel import features
from pwru.trace.backend import ProbeSet, Stopped, TraceContext
from pwru.trace.probes import Probe, ProbeKind, ProbeTable

log = logging.getLogger("pwru")

FREE = "kfree_skbmem"
CLONES = ("skb_clone", "skb_copy")
FEXIT_PROGRAM = "pwru_fexit_clone"
CLONE_HOOK_ENV = "PWRU_CLONE_HOOK"
_KPROBE, _KRETPROBE, _FREE = "pwru_kp_clone", "pwru_krp_clone", "pwru_kp_skbmem"


class CloneTracking(ProbeSet):
    """The free and clone hooks: fexit probes on the clone functions when the kernel
    takes them, else kprobe + kretprobe. PWRU_CLONE_HOOK=kretprobe picks kretprobes
    anyway (troubleshooting, and the tests of that path on kernels that have fexit)."""

    def __init__(self, ctx: TraceContext) -> None:
        super().__init__(ctx)
        self.fexit_probes: list[Probe] = []
        self.kretprobe_ids: dict[str, int] = {}  # clone function -> probe id (cookie)
        self.why_not_fexit = ""
        self.free_traced = False  # kfree_skbmem's own trace program forgets the skb

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        self.free_traced = any(
            p.name == FREE and p.kind in (ProbeKind.KPROBE, ProbeKind.KPROBE_MULTI) for p in table
        )
        targets = {f: self.ctx.running_btf.find_type_id(f, "func") or 0 for f in CLONES}
        self.why_not_fexit = _why_not_fexit(targets)
        if not self.why_not_fexit:
            self.fexit_probes = [
                table.add(f, ProbeKind.FEXIT, FEXIT_PROGRAM, attach_btf_id=tid)
                for f, tid in targets.items()
            ]
        self.kretprobe_ids = {f: table.add(f, ProbeKind.KPROBE, _KRETPROBE).id for f in CLONES}
        requests = [LoadRequest(_KPROBE), LoadRequest(_KRETPROBE)]
        if not self.free_traced:
            requests.append(LoadRequest(_FREE))
        if self.fexit_probes:  # bound to the first function; the others get copies
            first = self.fexit_probes[0]
            requests.append(LoadRequest(FEXIT_PROGRAM, first.id, first.attach_btf_id))
        return requests

    @property
    def how(self) -> str:
        return "fexit" if self.fexit_probes else f"kretprobe ({self.why_not_fexit})"

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        how, fexit = self.how, bool(self.fexit_probes)
        if fexit:
            try:
                obj.attach_raw(self.fexit_probes, self.held.fds)
            except LibbpfError as error:
                fexit = False
                how = f"kretprobe (fexit attach failed: {os.strerror(error.errno or 0)})"
        todo = [] if self.free_traced else [(_FREE, FREE, False)]
        if not fexit:
            for func in CLONES:
                todo += [(_KPROBE, func, False), (_KRETPROBE, func, True)]
        for program, func, ret in todo:
            cookie = self.kretprobe_ids.get(func, 0) if ret else 0
            try:
                link = obj.program(program).attach_kprobe(func, cookie, retprobe=ret)
                self.held.links.append(link)
            except LibbpfError as error:
                log.warning("--filter-track-skb: cannot probe %s: %s", func, error)
        return f"clones followed with {how}"


def _why_not_fexit(targets: dict[str, int]) -> str:
    """Why clones are followed with kretprobes ("" for fexit); ``targets``: BTF ids."""
    if os.environ.get(CLONE_HOOK_ENV) == "kretprobe":
        return f"{CLONE_HOOK_ENV}=kretprobe"
    missing = [f for f, tid in targets.items() if not tid]
    if missing:
        return f"no BTF for {', '.join(missing)}"
    return features.fexit(targets[CLONES[0]]).why_not
