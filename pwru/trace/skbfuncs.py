"""The functions the kprobe backends probe: every function that takes an sk_buff.

Shared by the kprobe and kprobe-multi backends: discovery (pwru.kernel.discovery)
finds the functions, and one loaded program per position of the sk_buff parameter
serves all the functions with the skb there. The BPF cookie given at attach time
is the probe id, so every event names its function exactly (no address lookup, no
IBT offset guessing).
"""

from __future__ import annotations

import errno

from pwru.bpf.loader import LoadRequest
from pwru.errors import UsageError
from pwru.kernel.discovery import AttachTarget, discover
from pwru.trace.backend import ProbeSet, TraceContext
from pwru.trace.probes import ProbeKind, ProbeTable

MAX_SKB_POSITION = 4

# Functions with a program of their own (by where their skb is): the drop functions,
# whose reason pwru prints, and kfree_skbmem, which also ends --filter-track-skb's
# interest in the skb (see bpf/pwru.bpf.c).
_SPECIAL_PROGRAMS = {
    ("kfree_skb_reason", 0): "kfree_reason",  # until 6.10
    ("sk_skb_reason_drop", 1): "skdrop_reason",  # 6.11+
    ("kfree_skbmem", 0): "free",
    ("kfree_skb", 0): "kfree",  # before drop reasons (5.10-5.16): the caller is the place
    ("nf_hook_slow", 0): "nfhook",  # netfilter hook and family, for the drop summary
}
PROGRAM_PREFIX = {ProbeKind.KPROBE: "pwru_kp_", ProbeKind.KPROBE_MULTI: "pwru_km_"}


def program_for(kind: ProbeKind, func: AttachTarget) -> str | None:
    """The BPF program that reads this function's sk_buff (and drop reason)."""
    special = _SPECIAL_PROGRAMS.get((func.name, func.skb_arg))
    if special:
        return PROGRAM_PREFIX[kind] + special
    if func.skb_arg <= MAX_SKB_POSITION:
        return f"{PROGRAM_PREFIX[kind]}skb{func.skb_arg}"
    return None


def discover_functions(ctx: TraceContext) -> tuple[list[AttachTarget], list[str]]:
    """The wanted skb functions of this kernel (and --kmods), with notes for the user."""
    options = ctx.options
    found = discover(
        ctx.kernel_btf,
        ctx.ksyms(),
        wanted=ctx.wanted,
        kmods=options.kmods,
        all_kmods=options.all_kmods,
    )
    if not found.functions:
        raise UsageError(f"no skb function matches --filter-func {options.filter_func!r}")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(found.skipped.items()))
    notes = [
        *found.notes,
        f"{len(found.functions)} skb functions to probe"
        + (f" (skipped: {skipped})" if skipped else ""),
    ]
    return found.functions, notes


class SkbFunctionProbes(ProbeSet):
    """What both kprobe backends share: a probe per function, a program per skb position."""

    kind = ProbeKind.KPROBE

    def __init__(self, ctx: TraceContext, functions: list[AttachTarget], notes: list[str]) -> None:
        super().__init__(ctx)
        self.functions = functions
        self.notes = notes
        self.attached = 0
        self.skipped: dict[str, int] = {}

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        """A probe per function; each program loads once (the cookie tells probes apart)."""
        for func in self.functions:
            program = program_for(self.kind, func)
            if program is not None:
                self.probes.append(table.add(func.name, self.kind, program, addr=func.addr))
        return [LoadRequest(name) for name in sorted({p.program for p in self.probes})]

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"attached {self.attached} functions with {self.kind.value}" + (
            f" (skipped: {skipped})" if skipped else ""
        )

    def close(self) -> float:
        return self.held.close(self.ctx.options.filter_kprobe_batch)


def errno_name(error: OSError) -> str:
    """A short lower-case reason for skip counts: "enoent", "ebusy"."""
    return errno.errorcode.get(error.errno or 0, "error").lower() if error.errno else "error"
