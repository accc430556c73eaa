#!/usr/bin/env python3
"""Extract the vmlinux BTF blob from a kernel image that has no ELF sections.

An arm64 ``vmlinuz`` (as shipped by Debian) is a raw ``Image``, possibly gzip-
or xz-compressed. The kernel's ``.BTF`` section is copied into it verbatim, so
the blob can be found by its header and sliced out:

    struct btf_header {          /* little-endian here */
        __u16 magic;             /* 0xeB9F */
        __u8  version;           /* 1 */
        __u8  flags;             /* 0 */
        __u32 hdr_len;           /* 24 */
        __u32 type_off, type_len;    /* relative to the end of the header */
        __u32 str_off,  str_len;
    };

The blob is exactly ``hdr_len + str_off + str_len`` bytes (the string section
follows the type section). Feed the result to
``bpftool btf dump file BLOB format c``.

Usage: extract_btf.py VMLINUZ OUTPUT
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

BTF_MAGIC_LE = b"\x9f\xeb"
BTF_VERSION = 1
BTF_HDR_LEN = 24
_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, 4 x section


@dataclass(frozen=True)
class BtfCandidate:
    offset: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int

    @property
    def size(self) -> int:
        return BTF_HDR_LEN + self.str_off + self.str_len


def decompress(raw: bytes) -> bytes:
    """Return the raw kernel Image, undoing gzip or xz compression if present."""
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return raw


def parse_header(image: bytes, offset: int) -> BtfCandidate | None:
    """Validate a BTF header at ``offset``; None if it is not a plausible one."""
    if offset + BTF_HDR_LEN > len(image):
        return None
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = (
        _HDR.unpack_from(image, offset)
    )
    if magic != 0xEB9F or version != BTF_VERSION or flags != 0:
        return None
    if hdr_len != BTF_HDR_LEN:
        return None
    # Sections are laid out as [types][strings], both after the header.
    if type_off != 0 or type_len == 0 or type_len % 4:
        return None
    if str_off != type_off + type_len or str_len < 2:
        return None
    cand = BtfCandidate(offset, type_off, type_len, str_off, str_len)
    if offset + cand.size > len(image):
        return None
    strings_start = offset + hdr_len + str_off
    strings_end = strings_start + str_len
    # The string section starts with the empty name and ends NUL-terminated.
    if image[strings_start] != 0 or image[strings_end - 1] != 0:
        return None
    return cand


def find_btf(image: bytes) -> BtfCandidate:
    """Find the single plausible BTF blob in ``image`` (largest if several)."""
    found: list[BtfCandidate] = []
    pos = image.find(BTF_MAGIC_LE)
    while pos != -1:
        cand = parse_header(image, pos)
        if cand is not None:
            found.append(cand)
        pos = image.find(BTF_MAGIC_LE, pos + 1)
    if not found:
        raise LookupError("no BTF header found (kernel built without CONFIG_DEBUG_INFO_BTF?)")
    return max(found, key=lambda c: c.size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vmlinuz", type=Path, help="kernel image (raw, gzip or xz)")
    ap.add_argument("output", type=Path, help="where to write the BTF blob")
    args = ap.parse_args(argv)

    image = decompress(args.vmlinuz.read_bytes())
    try:
        btf = find_btf(image)
    except LookupError as exc:
        print(f"{args.vmlinuz}: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(image[btf.offset : btf.offset + btf.size])
    print(
        f"{args.vmlinuz}: BTF at image offset {btf.offset:#x}, {btf.size} bytes "
        f"(types {btf.type_len}, strings {btf.str_len}) -> {args.output}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
