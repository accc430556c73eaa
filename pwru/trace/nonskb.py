"""--filter-non-skb-funcs: kprobes on functions that take no sk_buff.

Such a function (``nft_do_chain``, say) reports the matched skb that owns the stack
it runs on (--filter-track-skb-by-stackid, which the option turns on), so its
events sit among the packet's own. One kprobe per copy of a repeated name.
"""

from __future__ import annotations

import logging

from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.errors import UsageError
from pwru.trace.backend import ProbeSet, Stopped
from pwru.trace.kprobe import attach_keeping
from pwru.trace.probes import Probe, ProbeKind, ProbeTable

log = logging.getLogger("pwru")

PROGRAM = "pwru_kp_nonskb"
BATCH = 4  # a handful of functions: a few threads are plenty


class NonSkbProbes(ProbeSet):
    """A kprobe on each copy of every --filter-non-skb-funcs function."""

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        names = self.ctx.options.filter_non_skb_funcs
        found = self.ctx.ksyms().find(names)  # one pass; no full name index
        for name in names:
            addrs = [symbol.addr for symbol in found.get(name, ())]
            if not addrs:
                raise UsageError(f"--filter-non-skb-funcs: no kernel function {name!r}")
            self.probes += [table.add(name, ProbeKind.KPROBE, PROGRAM, addr=a) for a in addrs]
        return [LoadRequest(PROGRAM)]

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        def failed(probe: Probe, error: OSError) -> None:
            log.debug("kprobe: skipping %s: %s", probe.name, error)

        attached = attach_keeping(obj, self.probes, BATCH, stopped, self.held, failed)
        return f"{attached} non-skb functions"
