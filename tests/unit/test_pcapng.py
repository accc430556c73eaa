"""The pcapng writer: blocks as the format defines them, read back block by block, and
the comment a person reads in Wireshark."""

from __future__ import annotations

import io
import struct

import pytest

from pwru.bpf import abi
from pwru.errors import UsageError
from pwru.output import pcapng
from pwru.output.decode import Packet
from tests.unit.test_render import EV, FakeNames


def test_blocks_round_trip() -> None:
    out = io.BytesIO()
    writer = pcapng.PcapngWriter(out, ("a header",))
    eth = writer.interface(pcapng.LINKTYPE_ETHERNET, 1514, "veth-b (netns 1)", "ifindex 2")
    raw = writer.interface(pcapng.LINKTYPE_RAW, 1514, "lo (netns 1)", "ifindex 1")
    writer.packet(raw, 5 << 32 | 7, b"\x45" + bytes(18), 60, ("one", "two ünïcode"))
    writer.packet(eth, 9, b"", 0, ())
    data = out.getvalue()
    assert len(data) % 4 == 0
    assert struct.unpack_from("=III", data) == (pcapng.SHB, struct.unpack_from("=I", data, 4)[0],
                                                pcapng.BYTE_ORDER_MAGIC)  # fmt: skip
    blocks = list(pcapng.read_blocks(io.BytesIO(data), "x"))
    assert [b.kind for b in blocks] == [pcapng.SHB, pcapng.IDB, pcapng.IDB, pcapng.EPB, pcapng.EPB]
    assert blocks[0].comments == ["a header"]
    assert [b.link_type for b in blocks[1:3]] == [pcapng.LINKTYPE_ETHERNET, pcapng.LINKTYPE_RAW]
    first = blocks[3]
    assert (first.interface, first.ts, first.data, first.length) == (
        1, 5 << 32 | 7, b"\x45" + bytes(18), 60,
    )  # fmt: skip
    assert first.comments == ["one", "two ünïcode"]
    assert (blocks[4].data, blocks[4].length, blocks[4].comments) == (b"", 0, [])


def test_big_endian_sections_read() -> None:
    body = struct.pack(">IHHq", pcapng.BYTE_ORDER_MAGIC, 1, 0, -1) + struct.pack(">HH", 0, 0)
    shb = struct.pack(">II", pcapng.SHB, len(body) + 12) + body + struct.pack(">I", len(body) + 12)
    assert [b.kind for b in pcapng.read_blocks(io.BytesIO(shb), "be")] == [pcapng.SHB]


@pytest.mark.parametrize("cut", [3, 9, 30])
def test_cut_files_are_usage_errors(cut: int) -> None:
    out = io.BytesIO()
    writer = pcapng.PcapngWriter(out)
    writer.packet(writer.interface(1, 64, "x", "y"), 0, bytes(20), 20, ())
    data = out.getvalue()
    with pytest.raises(UsageError, match="pcapng"):
        list(pcapng.read_blocks(io.BytesIO(data[: len(data) - cut]), "cut"))


def test_comment_says_what_pwru_knows() -> None:
    names = FakeNames()
    drop = EV._replace(probe_id=1, reason=6, flags=abi.PWRU_EVENT_HAS_REASON, names=names)
    packet = Packet(abi.PWRU_LINK_ETHERNET, 98, bytes(14), True)
    assert pcapng.event_comment(drop, packet) == (
        "func=kfree_skb reason=SKB_DROP_REASON_NETFILTER_DROP netns=4026531840 "
        f"skb=0xffff888012345678 ({pcapng.MISSING})"
    )
    verdict = EV._replace(probe_id=3, type=abi.PWRU_EVENT_XDP, reason=1, names=names,
                          flags=abi.PWRU_EVENT_HAS_REASON | abi.PWRU_EVENT_FEXIT)  # fmt: skip
    assert pcapng.event_comment(verdict, packet._replace(truncated=False)).startswith(
        "func=xdp_prog verdict=XDP_DROP netns="
    )
    assert "no packet bytes" in pcapng.event_comment(EV._replace(names=names), None)


def test_interface_names() -> None:
    names = FakeNames()
    assert pcapng.interface_name(names, 7, 2) == "eth0 (netns 7)"
    assert pcapng.interface_name(names, 7, 5) == "ifindex 5 (netns 7)"  # not resolved
    assert pcapng.interface_name(names, 7, 0) == "no device (netns 7)"
