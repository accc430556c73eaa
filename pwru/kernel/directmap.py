"""Where the BPF side finds packet bytes held in page fragments (``skb_shinfo(skb)->frags``).

A fragment names a ``struct page``; its bytes are read through the kernel's direct map
of physical memory. On x86_64 the map's start and the ``struct page`` array's start are
the variables ``page_offset_base`` and ``vmemmap_base`` (randomised at boot,
CONFIG_RANDOMIZE_MEMORY, which distribution kernels enable), so the address of a
page's bytes is ``page_offset_base + (page - vmemmap_base) / sizeof(struct page) *
PAGE_SIZE``. The BPF side reads both variables at their kallsyms addresses.

Other architectures compute it from build-time constants that vary by kernel version
and configuration (arm64: VA_BITS, page size, KASAN tags); rather than guess, pwru copies
only the linear part of the packet there and marks the rest as missing. The same goes for
kernels whose kallsyms lists no data symbols (CONFIG_KALLSYMS_ALL off; distribution
kernels have it on) or that are built without CONFIG_RANDOMIZE_MEMORY.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path
from typing import NamedTuple

from pwru.kernel.kallsyms import KALLSYMS


class DirectMap(NamedTuple):
    """Addresses of the two kernel variables (0, 0 when fragments are not copied)."""

    page_offset_base: int
    vmemmap_base: int
    page_shift: int


NO_DIRECT_MAP = DirectMap(0, 0, 0)


def direct_map(kallsyms: str = KALLSYMS, machine: str | None = None) -> DirectMap:
    """The direct map's variables of the running kernel, or NO_DIRECT_MAP."""
    if (machine or os.uname().machine) != "x86_64":
        return NO_DIRECT_MAP
    try:
        text = Path(kallsyms).read_text()
    except OSError:
        return NO_DIRECT_MAP
    found = {name: int(addr, 16) for addr, name in _VARIABLES.findall(text) if int(addr, 16)}
    if "page_offset_base" not in found or "vmemmap_base" not in found:
        return NO_DIRECT_MAP
    page_shift = resource.getpagesize().bit_length() - 1
    return DirectMap(found["page_offset_base"], found["vmemmap_base"], page_shift)


# "ffffffff82a1b0e8 D page_offset_base": data symbols, which pwru's Kallsyms leaves out
_VARIABLES = re.compile(r"^([0-9a-f]+) [dDbB] (page_offset_base|vmemmap_base)$", re.M)
