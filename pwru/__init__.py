"""pwru ("packet, where are you?") traces ``struct sk_buff`` through the Linux kernel.

eBPF programs attached to kernel functions and tracepoints report every packet that
matches a pcap-filter expression and meta filters (netns, mark, interface); this package
loads them, reads their events from a ring buffer and prints one line per (packet,
kernel function) event, as text columns compatible with cilium/pwru or as JSON lines.
"""

__version__ = "0.1.0"
