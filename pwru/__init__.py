"""pwru ("packet, where are you?") traces ``struct sk_buff`` through the Linux kernel.

eBPF programs attached to kernel functions and tracepoints report every packet that
matches a pcap-filter expression and meta filters (netns, mark, interface); this package
loads them, reads their events from a ring buffer and prints one line per (packet,
kernel function) event, as text columns compatible with cilium/pwru or as JSON lines.

As a library: ``pwru.Tracer(...)`` traces live, ``pwru.read_trace(path)`` reads a saved
trace back; both yield ``pwru.Event`` values (docs/python.md).
"""

__version__ = "0.1.0"

# The Python API (docs/python.md); after __version__, which its modules import.
from pwru.api import Event, Options, Tracer, read_trace  # noqa: E402
from pwru.errors import PwruError, UsageError  # noqa: E402

__all__ = ["Event", "Options", "PwruError", "Tracer", "UsageError", "__version__", "read_trace"]
