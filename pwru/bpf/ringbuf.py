"""Reading the events ring buffer: straight from its mapped pages where that is safe.

A BPF ring buffer is shared memory: a consumer page (our read position), a producer
page (the kernel's write position) and the data pages. The kernel offers the data
pages twice in a row, so that a record that wraps around the end reads as one piece;
pwru maps them once and joins the two parts of such a (rare) record itself, because
the second mapping counted the whole ring twice in pwru's resident memory (32 MiB
for the default 16 MiB ring). Each record starts with an
8-byte header: its length, with a BUSY bit while the kernel still writes it and a
DISCARD bit for a record the program gave up. Reading the pages from Python costs no
ctypes callback per record (libbpf's ``ring_buffer__poll`` makes one), and lets pwru
take a bounded batch per wake-up: libbpf's poll keeps consuming while records keep
arriving, so under a flood it never returned and nothing got written.

Reading shared memory without acquire loads is only correct where the CPU does not
reorder loads with loads (x86_64's total store order); elsewhere the libbpf reader is
used (``open_ring``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
from typing import Callable, Protocol

from pwru.bpf.libbpf import RingBuffer

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER = 8  # struct bpf_ringbuf_hdr: u32 len, u32 pg_off

BATCH = 4096  # records handled per poll before the output is written and signals checked

OnRecord = Callable[[bytes], None]


class Ring(Protocol):
    """What the session needs of a ring reader."""

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for records, handle at most a batch; how many."""
        ...

    def consume(self) -> int:
        """Handle every record already in the ring, without waiting."""
        ...

    def close(self) -> None: ...


class MappedRing:
    """A ring buffer read through its mapped pages (see the module docstring)."""

    def __init__(self, map_fd: int, size: int, on_record: OnRecord) -> None:
        page = mmap.PAGESIZE
        self._on_record = on_record
        self._mask = size - 1
        self._size = size
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._producer = mmap.mmap(
                map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
            )
        except BaseException:
            self._consumer.close()
            raise
        # Positions and headers are read and written as native words through cast
        # memoryviews: one aligned 8- or 4-byte move each. struct's '=' formats move a
        # byte at a time, and a consumer position torn at a carry looked a whole ring
        # behind to the kernel, which then refused records as if the ring were full.
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")
        self._data = memoryview(self._producer)[page:]
        self._headers = self._data.cast("I")
        self._poller = select.epoll()
        self._poller.register(map_fd, select.EPOLLIN)

    def _read(self, limit: int) -> int:
        """Handle up to ``limit`` complete records; the read position moves past each
        one before the next, so the kernel can reuse the space at once."""
        consumer_pos, headers = self._consumer_pos, self._headers
        data, mask, size = self._data, self._mask, self._size
        pos = consumer_pos[0]
        end = self._producer_pos[0]
        handled = 0
        while pos < end and handled < limit:
            start = pos & mask
            header = headers[start >> 2]
            if header & _BUSY:
                break  # the kernel is still writing it
            length = header & ~(_BUSY | _DISCARD)
            if not header & _DISCARD:
                handled += 1
                first = start + _HEADER  # headers are 8-aligned: never split by the end
                if first + length <= size:
                    # one copy: bytes hash, compare and slice faster than views of the ring
                    self._on_record(bytes(data[first : first + length]))
                else:
                    wrapped = length - (size - first)  # the rest is at the ring's start
                    self._on_record(bytes(data[first:size]) + bytes(data[:wrapped]))
            pos += (length + _HEADER + 7) & ~7
            consumer_pos[0] = pos
        return handled

    def poll(self, timeout_ms: int) -> int:
        handled = self._read(BATCH)
        if handled:
            return handled
        self._poller.poll(timeout_ms / 1000)
        return self._read(BATCH)

    def consume(self) -> int:
        total = 0
        while handled := self._read(BATCH):
            total += handled
        return total

    def close(self) -> None:
        self._poller.close()
        for view in (self._headers, self._data, self._producer_pos, self._consumer_pos):
            view.release()
        with contextlib.suppress(BufferError):  # a record view still referenced somewhere
            self._producer.close()
        self._consumer.close()


def open_ring(map_fd: int, size: int, on_record: OnRecord) -> Ring:
    """The fastest correct reader for this CPU: mapped pages on x86_64, libbpf elsewhere."""
    if os.uname().machine in ("x86_64", "AMD64"):
        return MappedRing(map_fd, size, on_record)
    return RingBuffer(map_fd, on_record)
