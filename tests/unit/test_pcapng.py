"""The pcapng writer: blocks as the format defines them, read back block by block, and
the comment a person reads in Wireshark."""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pwru.bpf import abi
from pwru.errors import UsageError
from pwru.options import parse_options
from pwru.output import pcapng
from pwru.output.decode import Event, Extras, Packet, RecordLayout, decode_event, decode_extras
from pwru.output.printer import Printer, StreamOutput
from pwru.output.readback import open_trace
from pwru.output.render import make_renderer
from pwru.output.savedtrace import header_line
from tests.unit.test_decode import raw_event, set_tuple
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


# --- records as the printer hands them over (PcapngSink.add_record) ------------------


def records(n: int, seed: int = 5) -> list[bytes]:
    """Repeated flows with new times, skb addresses and packet bytes, and now and then
    something else: drops, XDP verdicts, odd names, no device, no or cut packet parts."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        odd = rnd.random() < 0.2
        probe = rnd.randrange(4)
        ev = raw_event(
            ts=10**12 + i * 977 + (rnd.randrange(1 << 40) if odd else 0),
            skb_addr=rnd.choice((0, 0xFFFF888100000000 + rnd.randrange(64) * 256)),
            probe_id=probe,
            type=abi.PWRU_EVENT_XDP if probe == 3 else abi.PWRU_EVENT_TRACEPOINT,
            flags=abi.PWRU_EVENT_HAS_TUPLE | rnd.choice((0, 0, abi.PWRU_EVENT_HAS_REASON)),
            reason=rnd.choice((6, 99)) if odd else 6,
            pid=rnd.choice((0, 4242)) if odd else 4242,
            comm=rnd.choice((b"flood", b'we"ird\\', "ünï".encode())) if odd else b"flood",
            ifindex=rnd.choice((0, 2, 9)) if odd else 2,
        )
        if probe == 3 and ev.flags & abi.PWRU_EVENT_HAS_REASON:
            ev.flags |= abi.PWRU_EVENT_FEXIT
        set_tuple(ev.tuple, "10.0.0.1", "10.0.0.2", 40000, 9, 17)
        data = bytes([0x45, 0]) + struct.pack("!H", i & 0xFFFF) + bytes(rnd.choice((60, 68)))
        link = rnd.choice((abi.PWRU_LINK_ETHERNET, abi.PWRU_LINK_RAW_IP, abi.PWRU_LINK_NONE))
        truncated = abi.PWRU_PACKET_TRUNCATED if rnd.random() < 0.1 else 0
        part = bytes(abi.RawPacket(len=len(data) + 40, captured=len(data), link=link,
                                   flags=truncated)) + data  # fmt: skip
        cut = rnd.choice((len(part),) * 8 + (0, 5, 20))
        out.append(bytes(ev) + part[:cut])
    return out


def sink(out: io.BytesIO, *argv: str) -> pcapng.PcapngSink:
    options = parse_options(["--output-pcap", "/dev/null", *argv])
    header = header_line(options, 1234)
    made = pcapng.PcapngSink.open(options, FakeNames(), header, 1234)
    made.out.close()
    made.out = out
    made.writer = pcapng.PcapngWriter(out, (header,))
    return made


def decoded(data: bytes) -> tuple[Event, Extras]:
    event = decode_event(data, FakeNames())
    extras = decode_extras(data, event, RecordLayout(capture_bytes=1514))
    return event._replace(extras=extras), extras


@pytest.mark.parametrize("argv", [[], ["--output-tcp-flags"], ["--output-meta=false"]])
def test_records_make_the_file_events_make(argv: list[str]) -> None:
    """add_record (cached pieces) writes the bytes that add writes for the decoded events."""
    data = records(2000)
    fast, slow = io.BytesIO(), io.BytesIO()
    fast_sink, slow_sink = sink(fast, *argv), sink(slow, *argv)
    for number, record in enumerate(data):
        fast_sink.add_record(record)
        slow_sink.add(*decoded(record))
        if number % 500 == 0:
            fast_sink.pieces.clear()  # as if a second had passed
    assert fast.getvalue() == slow.getvalue()
    distinct = {record[16 : abi.EVENT_SIZE + abi.PACKET_STRUCT.size] for record in data}
    assert len(fast_sink.pieces) <= len(distinct) < len(data) / 3  # mostly reused
    blocks = list(pcapng.read_blocks(io.BytesIO(fast.getvalue()), "x"))
    packets = [b for b in blocks if b.kind == pcapng.EPB]
    assert len(packets) == len(data)
    event, extras = decoded(data[7])
    assert packets[7].ts == event.ts + 1234
    assert packets[7].comments[0] == pcapng.event_comment(event, extras.packet)
    assert json.loads(packets[7].comments[1])["ts"] == event.ts


def test_printer_hands_records_to_the_sink_and_writes_the_same(tmp_path: Path) -> None:
    """A run with --output-pcap: lines from the line cache, blocks from records; the
    text and the file are those of the decoded path, tshark reads the file, and --read
    gives the events back."""
    data = records(1500, seed=9)
    outputs = []
    for cached in (True, False):
        text, pcap = io.StringIO(), io.BytesIO()
        options = parse_options(["--output-pcap", "/dev/null"])
        renderer = make_renderer(options, FakeNames(), wall_offset_ns=0)
        layout = RecordLayout(capture_bytes=options.capture_size)
        p = Printer(renderer, StreamOutput(text), layout, sinks=[sink(pcap)])
        if cached:
            p.use_line_cache()
            assert p.lines is not None and p.record_sinks
        for record in data:
            p.on_record(record)
        p.flush()
        outputs.append((text.getvalue(), pcap.getvalue()))
    assert outputs[0] == outputs[1]
    path = tmp_path / "trace.pcapng"
    path.write_bytes(outputs[0][1])
    if shutil.which("tshark"):
        shown = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True)
        assert shown.returncode == 0 and len(shown.stdout.splitlines()) == len(data)
    back = [seen(ev) for ev, _ in open_trace(str(path)).events()]
    assert back == [seen(decoded(record)[0]) for record in data]


def seen(ev: Event) -> tuple[int, int, str, bytes]:
    """What --read gets back of an event in a pcapng file, and where (no packet part:
    an empty one)."""
    return ev.ts, ev.skb_addr, ev.func, ev.packet.data if ev.packet else b""
