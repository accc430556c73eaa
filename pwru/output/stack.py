"""Kernel stacks of events: the caller pwru shows, and the frames worth showing.

An event's stack starts inside the tracing machinery (pwru's own program, the
tracepoint or kprobe glue); the traced code path begins below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pwru.bpf.abi import PWRU_EVENT_KPROBE, PWRU_EVENT_KPROBE_MULTI, PWRU_EVENT_TRACEPOINT
from pwru.output.decode import Event

# Frames that belong to the tracing machinery, not to the traced code path.
TRACING_FRAMES = (
    "bpf_",
    "__bpf_",
    "__traceiter_",
    "trace_",
    "perf_",
    "kprobe",
    "ftrace",
    "fprobe",
)


def caller_of(event: Event, frames: Sequence[int], name_at: Callable[[int], str | None]) -> int:
    """The address pwru shows as CALLER: the return address into the function that
    called the probed one. A kprobe's probed function is the stack's first frame; a
    tracepoint's is the function that hit it, the first frame past the tracing
    machinery, unless the tracepoint passed its caller (kfree_skb's and consume_skb's
    ``location``, already in ``event.caller_ip``); tc/XDP programs get the first frame
    past the machinery (the kernel function that ran the program)."""
    if event.caller_ip:
        return event.caller_ip
    names = [(ip, name_at(ip) or "") for ip in frames]
    if event.type in (PWRU_EVENT_KPROBE, PWRU_EVENT_KPROBE_MULTI):
        probed = names[0][1] if names else ""
        for ip, name in names[1:]:
            if name != probed and not name.startswith(TRACING_FRAMES):
                return ip
        return 0
    past = [ip for ip, name in _past_tracing(names)]
    if event.type == PWRU_EVENT_TRACEPOINT:
        return past[1] if len(past) > 1 else 0
    return past[0] if past else 0


def _past_tracing(names: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The frames below the tracing machinery on top of the stack."""
    start = 0
    while start < len(names) and names[start][1].startswith(TRACING_FRAMES):
        start += 1
    return names[start:]


def shown_frames(frames: Sequence[int], symbol: Callable[[int], str]) -> list[str]:
    """Symbol names of ``frames``, innermost first, minus the tracing frames on top."""
    stack = [symbol(ip) for ip in frames]
    start = 0
    while start < len(stack) and stack[start].startswith(TRACING_FRAMES):
        start += 1  # pwru's own program and the trace/kprobe glue
    return stack[start:]
