"""Kernel stacks of events: the caller pwru shows, and the frames worth showing.

An event's stack starts inside the tracing machinery (pwru's own program, the
tracepoint or kprobe glue); the traced code path begins below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pwru.bpf.abi import PWRU_EVENT_KPROBE, PWRU_EVENT_KPROBE_MULTI
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
    """The address pwru shows as CALLER: for a kprobe, the return address into the
    function that called the probed one; for a tracepoint, the first frame past the
    tracing machinery (the function that hit the tracepoint)."""
    names = [(ip, name_at(ip) or "") for ip in frames]
    if event.type in (PWRU_EVENT_KPROBE, PWRU_EVENT_KPROBE_MULTI):
        probed = names[0][1] if names else ""
        for ip, name in names[1:]:
            if name != probed and not name.startswith(TRACING_FRAMES):
                return ip
        return 0
    for ip, name in names:
        if not name.startswith(TRACING_FRAMES):
            return ip
    return 0


def shown_frames(frames: Sequence[int], symbol: Callable[[int], str]) -> list[str]:
    """Symbol names of ``frames``, innermost first, minus the tracing frames on top."""
    stack = [symbol(ip) for ip in frames]
    start = 0
    while start < len(stack) and stack[start].startswith(TRACING_FRAMES):
        start += 1  # pwru's own program and the trace/kprobe glue
    return stack[start:]
