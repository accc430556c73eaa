"""Counting packet records in a pcap or pcapng file (for the --output-pcap hook).

Only record headers are read: classic pcap (either byte order, µs or ns) and
pcapng Enhanced/Simple/obsolete Packet Blocks (either byte order, per section).
"""

from __future__ import annotations

import struct
from pathlib import Path

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_SECTION = 0x0A0D0D0A
PCAPNG_PACKETS = {0x00000002, 0x00000003, 0x00000006}  # packet, simple, enhanced


def records(path: Path) -> int:
    data = path.read_bytes()
    if data[:4] in PCAP_MAGICS:
        return _pcap(data, PCAP_MAGICS[data[:4]])
    if len(data) >= 12 and struct.unpack_from("<I", data)[0] == PCAPNG_SECTION:
        return _pcapng(data)
    raise ValueError(f"{path}: neither pcap nor pcapng")


def _pcap(data: bytes, order: str) -> int:
    count, offset = 0, 24
    while offset + 16 <= len(data):
        (caplen,) = struct.unpack_from(order + "I", data, offset + 8)
        offset += 16 + caplen
        count += offset <= len(data)
    return count


def _pcapng(data: bytes) -> int:
    count, offset, order = 0, 0, "<"
    while offset + 12 <= len(data):
        if struct.unpack_from("<I", data, offset)[0] == PCAPNG_SECTION:
            order = "<" if data[offset + 8 : offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        kind, length = struct.unpack_from(order + "II", data, offset)
        if length < 12 or offset + length > len(data):
            break  # a block still being written
        count += kind in PCAPNG_PACKETS
        offset += length
    return count
