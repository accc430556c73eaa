"""pwru ("packet, where are you?") traces ``struct sk_buff`` through the Linux kernel.

eBPF programs attached to kernel functions and tracepoints report every packet that
matches a pcap-filter expression and meta filters (netns, mark, interface); this package
loads them, reads their events from a ring buffer and prints one line per (packet,
kernel function) event, as text columns compatible with cilium/pwru or as JSON lines.

As a library: ``pwru.Tracer(...)`` traces live, ``pwru.read_trace(path)`` reads a saved
trace back; both yield ``pwru.Event`` values (docs/python.md).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from pwru.errors import PwruError, UsageError

if TYPE_CHECKING:
    from pwru.api import Event, Options, Tracer, read_trace

__all__ = ["Event", "Options", "PwruError", "Tracer", "UsageError", "__version__", "read_trace"]
_API = ("Event", "Options", "Tracer", "read_trace")


def __getattr__(name: str) -> Any:
    """The Python API (docs/python.md), imported on first use: the pwru command does
    not need it, and importing it cost the command ~40 ms of its start."""
    if name in _API:
        from pwru import api

        return getattr(api, name)
    raise AttributeError(f"module 'pwru' has no attribute {name!r}")
