#!/usr/bin/env python3
"""Regenerate the per-kernel lists of ``enum skb_drop_reason`` names in this folder.

Usage (from the repository root, as root: fetch-kernel.sh writes /var/cache/pwru-vm):

    tests/data/drop_reasons/update.py --host            # the running kernel -> <major.minor>.txt
    tests/data/drop_reasons/update.py PKG [PKG ...]     # Debian kernel packages

A Debian amd64 ``vmlinuz`` is a bzImage: a setup header, then the kernel compressed with
xz (6.1) or zstd (6.12 and later). The payload's place is in the boot protocol header
(``setup_sects`` at 0x1f1, ``payload_offset``/``payload_length`` at 0x248), so it is cut out
and decompressed (xz with Python's lzma, zstd with the ``zstd`` program), the BTF blob is
found in the result by ``vmlinux-headers/extract_btf.py``, and pwru's own BTF reader lists
the enumerators. The kernel's banner ("Linux version ...") names the exact version.
"""

from __future__ import annotations

import argparse
import lzma
import platform
import re
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "vmlinux-headers")]

from extract_btf import find_btf  # noqa: E402

from pwru.kernel.btf import KernelBtf  # noqa: E402

ENUM = "skb_drop_reason"


def bzimage_payload(image: bytes) -> bytes:
    """The decompressed kernel inside an x86 bzImage."""
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = image[start : start + length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor().decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        out = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True, check=False)
        return out.stdout  # zstd complains about the appended size word; the data is whole
    raise SystemExit(f"unknown payload compression: {payload[:6].hex()}")


def names_from_image(vmlinuz: Path) -> tuple[list[str], str, str]:
    """(enumerator names in value order, kernel release, Debian version) of a vmlinuz."""
    kernel = bzimage_payload(vmlinuz.read_bytes())
    cand = find_btf(kernel)
    btf = KernelBtf(kernel[cand.offset : cand.offset + cand.size], str(vmlinuz))
    banner = re.search(rb"Linux version (\S+) .*? Debian (\d[^ )]*)", kernel)
    if banner is None:
        raise SystemExit(f"{vmlinuz}: no Debian kernel banner")
    return _ordered(btf), banner.group(1).decode(), banner.group(2).decode()


def _ordered(btf: KernelBtf) -> list[str]:
    values = btf.enum_values(ENUM)
    if not values:
        raise SystemExit(f"{btf!r}: no enum {ENUM}")
    return [name for name, _ in sorted(values.items(), key=lambda item: (item[1], item[0]))]


def fetch(package: str) -> Path:
    """Download and unpack a Debian kernel package with tests/vm/fetch-kernel.sh."""
    out = subprocess.run(
        [str(ROOT / "tests/vm/fetch-kernel.sh"), package],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.split()[0])


def write(names: list[str], version: str, source: str) -> Path:
    """Write <major.minor>.txt with a comment header."""
    major_minor = ".".join(re.split(r"[.-]", version)[:2])
    path = HERE / f"{major_minor}.txt"
    lines = [f"# Linux {version}", f"# from {source}", f"# {len(names)} names of enum {ENUM}"]
    path.write_text("\n".join(lines + names) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", action="store_true", help="read /sys/kernel/btf/vmlinux")
    ap.add_argument("packages", nargs="*", help="Debian kernel package names")
    args = ap.parse_args(argv)
    if args.host:
        release = platform.release()
        version = release.split("-")[0]
        path = write(_ordered(KernelBtf.load()), version, f"/sys/kernel/btf/vmlinux of {release}")
        print(path)
    for package in args.packages:
        vmlinuz = fetch(package)
        names, release, version = names_from_image(vmlinuz)
        source = f"{package} ({release}), BTF cut out of its vmlinuz"
        print(write(names, version, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
