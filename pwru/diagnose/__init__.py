"""Turning what pwru saw into words a network engineer can act on.

``reasons`` explains kernel drop reasons (``enum skb_drop_reason`` and the subsystem
reasons of qdiscs and Open vSwitch) and, on kernels without drop reasons, the function
that freed the packet; each explanation carries a hint whose ``{placeholders}`` are
filled from the event (protocol, addresses, ports, device, network namespace). The texts
are ours, written from the kernel's own definitions in include/net/dropreason-core.h and
from the code that sets each reason.
"""
