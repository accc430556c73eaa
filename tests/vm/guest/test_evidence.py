"""Packet bytes in page fragments, inside stock Debian kernels (tests/vm/kernels.txt).

The CI host's kernel lists no data symbols in kallsyms (CONFIG_KALLSYMS_ALL off), so
pwru cannot find the direct map there and marks fragment bytes as missing
(tests/kernel/test_evidence.py). Distribution kernels list them: here pwru must copy
what lies in fragments, byte for byte, for the two shapes of a non-linear packet:

  * headers in a page: a 6,000-byte frame sent whole through a packet socket keeps only
    its MAC header in the linear area (cilium/pwru issue 253);
  * payload in pages: a TCP segment built by tcp_sendmsg on a scatter-gather device.

Once with tp_btf programs, once with kprobes (their programs differ, and so does what
the verifier sees), each loading the capture code for real.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from netlab import Lab, PwruRun
from pwru.kernel.directmap import NO_DIRECT_MAP, direct_map
from pwru.output import pcapng
from tests.kernel.test_evidence import FRAG_SIZE, RAW_FRAME, mac, tcp_exchange

from .conftest import run as run_tool
from .conftest import tool

pytestmark = pytest.mark.vm

READY_TIMEOUT = 300.0  # one pwru start under TCG on a busy host
# where each backend sees the frame arrive, before ip_rcv pulls its headers
ARRIVAL = {"tracepoint": "netif_receive_skb", "kprobe": "ip_rcv"}


def packets(path: Path, func: str) -> list[pcapng.Block]:
    with path.open("rb") as source:
        return [
            b
            for b in pcapng.read_blocks(source, str(path))
            if b.kind == pcapng.EPB and b.comments and b.comments[0].startswith(f"func={func} ")
        ]


@pytest.mark.parametrize("backend", sorted(ARRIVAL))
def test_fragments_are_copied(backend: str, tmp_path: Path) -> None:
    assert direct_map() != NO_DIRECT_MAP, "this kernel lists no page_offset_base"
    run_tool(tool("modprobe"), "veth")  # a guest loads no module by itself
    lab = Lab.create(subnet=61)
    try:
        for host in (lab.a, lab.b):
            host.run("ip", "link", "set", host.ifname, "mtu", "9000")
        pcap = tmp_path / f"{backend}.pcapng"
        args = ["--backend", backend, "--filter-netns", lab.b.netns_path]
        args += ["--capture-bytes", "9216", "--output-pcap", str(pcap)]
        args += ["--output-file", str(tmp_path / "out")]
        if backend == "kprobe":
            args += ["--filter-func", "ip_rcv"]
        run = PwruRun(args, tmp_path, timeout=READY_TIMEOUT)
        lab.a.run(sys.executable, "-c", RAW_FRAME, lab.a.ifname, mac(lab.b), lab.a.ipv4,
                  lab.b.ipv4, str(FRAG_SIZE))  # fmt: skip
        payload = bytes(i % 199 for i in range(3000))
        tcp_exchange(lab, 7793, payload)
        assert run.stop(timeout=120) == 0, run.stderr
        arrivals = packets(pcap, ARRIVAL[backend])
        frames = [b for b in arrivals if b.length == 14 + 28 + FRAG_SIZE]
        assert len(frames) == 1, [(b.length, b.comments[0]) for b in arrivals]
        frame = frames[0]
        assert pcapng.MISSING not in frame.comments[0] and len(frame.data) == frame.length
        assert frame.data[:6] == bytes.fromhex(mac(lab.b).replace(":", ""))
        assert frame.data[23] == 17 and struct.unpack("!H", frame.data[36:38])[0] == 7799
        assert frame.data[42:] == bytes(i % 251 for i in range(FRAG_SIZE))
        segments = [b for b in arrivals if b.length > 1000 and b.length != frame.length]
        assert segments and all(len(b.data) == b.length for b in segments)
        assert b"".join(b.data[66:] for b in segments) == payload  # after eth+ip+tcp(ts)
    finally:
        lab.close()
