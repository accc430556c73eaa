"""MappedRing on a memfd laid out like a BPF ring buffer: consumer page, producer page,
data pages mapped once (records that wrap around the end are joined by the reader)."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator

import pytest

from pwru.bpf import ringbuf

PAGE = mmap.PAGESIZE
SIZE = PAGE  # the smallest ring: one data page


class _NoEpoll:
    """epoll refuses regular files; the tests read without waiting."""

    def register(self, _fd: int, _events: int) -> None: ...

    def poll(self, _timeout: float) -> list[tuple[int, int]]:
        return []

    def close(self) -> None: ...


@pytest.fixture
def ring_fd(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(ringbuf.select, "epoll", _NoEpoll)
    fd = os.memfd_create("ring")
    os.ftruncate(fd, 2 * PAGE + SIZE)
    yield fd
    os.close(fd)


def _write(fd: int, consumer: int, records: list[bytes]) -> None:
    """Records from position ``consumer`` on, as the kernel writes them."""
    with mmap.mmap(fd, 2 * PAGE + SIZE) as mem:
        pos = consumer
        for record in records:
            header = struct.pack("<II", len(record), 0)
            for i, byte in enumerate(header + record):
                mem[2 * PAGE + (pos + i) % SIZE] = byte
            pos += (len(record) + 8 + 7) & ~7
        struct.pack_into("<Q", mem, 0, consumer)
        struct.pack_into("<Q", mem, PAGE, pos)


@pytest.mark.parametrize("start", [0, SIZE - 32, SIZE - 16, SIZE - 8])
def test_records_read_whole_across_the_end(ring_fd: int, start: int) -> None:
    records = [bytes(range(1, 21)), b"x" * 13, bytes(range(100, 140))]
    _write(ring_fd, start, records)
    seen: list[bytes] = []
    ring = ringbuf.MappedRing(ring_fd, SIZE, seen.append)
    try:
        assert ring.consume() == 3
        assert seen == records
        assert ring._consumer_pos[0] == start + sum((len(r) + 15) & ~7 for r in records)
    finally:
        ring.close()
