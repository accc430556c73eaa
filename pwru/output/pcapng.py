"""--output-pcap: the traced packets as a pcapng file, one packet per event.

Wireshark and tshark open it: each event is an Enhanced Packet Block with the bytes the
kernel held at that function (from the MAC header, or from the IP header with the
raw-IP link type when no MAC header was set), the event's time, the captured length
beside the packet's true length, and two comments: what pwru knows in a line a person
reads (``func=kfree_skb reason=SKB_DROP_REASON_NETFILTER_DROP netns=4026532540
skb=0xffff888104bd7e00``), then the event as a saved-trace JSON line, so that
``pwru --read`` shows the file like the run that wrote it. Interfaces are Interface
Description Blocks, one per (netns, ifindex, link type), named ``veth-b (netns
4026532540)``; the section header's comment is the saved-trace header line.

The writer is our own (``struct``, one ``write`` per block into a buffered file): it
is on the per-event path, and it writes about 1.5 million blocks/s where python-pcapng
writes about 60,000 (docs/output.md). ``read_blocks`` reads back what it writes (and
other pcapng files, block by block).

Events of a flow differ in little but their time, skb address and a few packet bytes,
so the sink takes ring-buffer records undecoded (``add_record``) and builds each block
from pieces that the record's other bytes decide: the interface, both comments around
the skb address (and the JSON line around its "ts"), cached like the line cache's
tails (pwru.output.linecache). Only a record with new bytes there is decoded and
rendered; the file is the same bytes either way.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO, NamedTuple

from pwru import __version__
from pwru.bpf.abi import EVENT_SIZE, PACKET_STRUCT, PWRU_EVENT_FEXIT, PWRU_LINK_ETHERNET
from pwru.errors import UsageError
from pwru.options import Options
from pwru.output.decode import Event, Extras, Packet, RecordLayout, decode_event, decode_extras
from pwru.output.linecache import KEY_START, RecordCache, json_tail
from pwru.output.render import XDP_VERDICTS, NameResolver, Renderer, make_renderer
from pwru.output.stack import shown_frames

SHB = 0x0A0D0D0A
IDB = 0x00000001
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, told apart by the version nibble
OPT_END = 0
OPT_COMMENT = 1
SHB_OS = 3
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
NS_RESOLUTION = 9  # if_tsresol: 10^-9 s
# The block comment's words for bytes pwru could not copy (read back into Packet.truncated).
MISSING = "bytes past the linear area not captured (in page fragments)"

_BLOCK = struct.Struct("=II")  # type, total length
_U32 = struct.Struct("=I")
_OPTION = struct.Struct("=HH")
_SHB_BODY = struct.Struct("=IHHq")  # magic, major, minor, section length (-1: unknown)
_IDB_BODY = struct.Struct("=HHI")  # link type, reserved, snaplen
_EPB_BODY = struct.Struct("=IIIII")  # interface, ts high, ts low, captured, original
# a whole EPB's fixed parts: type, total length, the body's five; end of options, total
_EPB_HEAD = struct.Struct("=IIIIIII")
_EPB_TAIL = struct.Struct("=HHI")  # opt_endofopt, total length
_EPB_FIXED = _EPB_HEAD.size + 2 * _OPTION.size + _EPB_TAIL.size  # with two comments
_END = _OPTION.pack(OPT_END, 0)
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")  # by -length % 4
# records as they come (PcapngSink.add_record): ts and skb_addr first, then the bytes
# that decide a block's pieces, through struct pwru_packet; its bytes right after.
# One unpack: ts, skb_addr, then struct pwru_packet's len and captured.
_PACKET_AT = EVENT_SIZE + PACKET_STRUCT.size
_RECORD = struct.Struct(f"=QQ{EVENT_SIZE - KEY_START}xIH")


def option(code: int, value: bytes) -> bytes:
    """One option: code, length, value padded to 32 bits."""
    return _OPTION.pack(code, len(value)) + value + b"\0" * (-len(value) % 4)


def block(kind: int, body: bytes) -> bytes:
    """A block: type, total length, body, total length again."""
    total = len(body) + 12
    return _BLOCK.pack(kind, total) + body + _U32.pack(total)


def commented_packet(
    interface: int, ts_ns: int, data: bytes, length: int, first: bytes, second: bytes
) -> bytes:
    """``PcapngWriter.packet`` with two comments, encoded: the same block, its length
    added up rather than measured, in one join (PcapngSink writes one per event)."""
    size, size1, size2 = len(data), len(first), len(second)
    pad, pad1, pad2 = -size % 4, -size1 % 4, -size2 % 4
    total = _EPB_FIXED + size + pad + size1 + pad1 + size2 + pad2
    return b"".join(
        (
            _EPB_HEAD.pack(EPB, total, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, size, length),
            data, _PADS[pad],
            _OPTION.pack(OPT_COMMENT, size1), first, _PADS[pad1],
            _OPTION.pack(OPT_COMMENT, size2), second, _PADS[pad2],
            _EPB_TAIL.pack(OPT_END, 0, total),
        )
    )  # fmt: skip


class PcapngWriter:
    """Writes a pcapng section: the header at creation, interfaces and packets after."""

    def __init__(self, out: BinaryIO, comments: tuple[str, ...] = ()) -> None:
        self.out = out
        options = [option(OPT_COMMENT, c.encode()) for c in comments]
        options.append(option(SHB_OS, f"{platform.system()} {platform.release()}".encode()))
        options.append(option(SHB_USERAPPL, f"pwru {__version__}".encode()))
        out.write(block(SHB, _SHB_BODY.pack(BYTE_ORDER_MAGIC, 1, 0, -1) + b"".join(options) + _END))
        self.interfaces = 0

    def interface(self, link_type: int, snaplen: int, name: str, description: str) -> int:
        """Describe one more interface; returns its id for ``packet``."""
        body = _IDB_BODY.pack(link_type, 0, snaplen) + b"".join(
            (
                option(IF_NAME, name.encode()),
                option(IF_DESCRIPTION, description.encode()),
                option(IF_TSRESOL, bytes((NS_RESOLUTION,))),
                _END,
            )
        )
        self.out.write(block(IDB, body))
        self.interfaces += 1
        return self.interfaces - 1

    def packet(
        self, interface: int, ts_ns: int, data: bytes, length: int, comments: tuple[str, ...]
    ) -> None:
        """One Enhanced Packet Block (``length``: the packet's true length)."""
        head = _EPB_BODY.pack(interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), length)
        chunks = [head, data, _PADS[-len(data) % 4]]
        for comment in comments:  # option() inlined: this runs once per event
            raw = comment.encode()
            chunks += (_OPTION.pack(OPT_COMMENT, len(raw)), raw, _PADS[-len(raw) % 4])
        chunks.append(_END)
        body = b"".join(chunks)
        total = len(body) + 12
        self.out.write(_BLOCK.pack(EPB, total) + body + _U32.pack(total))


def event_comment(ev: Event, packet: Packet | None) -> str:
    """What pwru knows of an event, for a person reading the packet list."""
    before, after = comment_parts(ev, packet)
    return f"{before}{ev.skb_addr:#x}{after}"


def comment_parts(ev: Event, packet: Packet | None) -> tuple[str, str]:
    """``event_comment`` before the skb address (ending in ``skb=``) and after it: the
    address is what differs between the events of a flow at one function."""
    words = [f"func={ev.func}"]
    if ev.reason is not None:
        if ev.flags & PWRU_EVENT_FEXIT:
            words.append(f"verdict={XDP_VERDICTS.get(ev.reason, ev.reason)}")
        else:
            words.append(f"reason={ev.reason_name or ev.reason}")
    words += [f"netns={ev.netns}", "skb="]
    if packet is None or not packet.link:
        return " ".join(words), " (no packet bytes: no MAC or IP header set yet)"
    if packet.truncated:
        return " ".join(words), f" ({MISSING})"
    return " ".join(words), ""


def interface_name(names: NameResolver, netns: int, ifindex: int) -> str:
    """``veth-b (netns 4026532540)``: the device's name without pwru's ``:ifindex``."""
    if not ifindex:
        return f"no device (netns {netns})"
    iface = names.iface(netns, ifindex)
    name = iface[: -len(f":{ifindex}")] if iface.endswith(f":{ifindex}") else f"ifindex {ifindex}"
    return f"{name} (netns {netns})"


class BlockPieces(NamedTuple):
    """What a record's bytes besides time and skb address decide of its block."""

    interface: int
    note: bytes  # the first comment up to the skb address (``... skb=``)
    note_end: bytes  # and after it
    line: bytes  # the JSON line after its skb address, up to its "ts" value
    line_end: bytes  # and after it


@dataclass
class PcapngSink:
    """A printer sink writing every event's packet to ``--output-pcap`` (a
    printer.RecordSink and TimedSink)."""

    out: BinaryIO
    writer: PcapngWriter
    names: NameResolver
    lines: Renderer  # the saved-trace JSON line of each event, for --read
    snaplen: int
    wall_offset_ns: int
    interfaces: dict[tuple[int, int, int], int] = field(default_factory=dict)
    pieces: RecordCache[BlockPieces] = field(default_factory=RecordCache)

    @classmethod
    def open(
        cls, options: Options, names: NameResolver, header: str, wall_offset_ns: int
    ) -> PcapngSink:
        """The sink of ``options.output_pcap``; ``header`` is the trace's header line."""
        try:
            out = open(options.output_pcap, "wb", buffering=1 << 20)  # noqa: SIM115
        except OSError as error:
            raise UsageError(
                f"cannot write --output-pcap {options.output_pcap}: {error.strerror}"
            ) from None
        json_options = replace(options, output_json=True, timestamp="none")
        lines = make_renderer(json_options, names, wall_offset_ns=wall_offset_ns, packets=False)
        snaplen = options.capture_size
        return cls(out, PcapngWriter(out, (header,)), names, lines, snaplen, wall_offset_ns)

    def add(self, event: Event, extras: Extras) -> None:
        packet = extras.packet
        self.writer.packet(
            self._interface(event, packet),
            event.ts + self.wall_offset_ns,
            packet.data if packet else b"",
            packet.len if packet else 0,
            (event_comment(event, packet), self._line(event, extras)),
        )

    def add_record(self, data: bytes) -> None:
        """A record with nothing but packet bytes after the event: ``add`` of it decoded,
        from cached pieces (see the module docstring)."""
        pieces = self.pieces.get(data[KEY_START:_PACKET_AT])
        if pieces is None:
            self._miss(data)
            return
        ts, skb, length, captured = _RECORD.unpack_from(data)
        interface, note, note_end, line, line_end = pieces
        address = b"%#x" % skb
        self.out.write(
            commented_packet(
                interface,
                ts + self.wall_offset_ns,
                data[_PACKET_AT : _PACKET_AT + captured],
                length,
                note + address + note_end,
                b'{"skb":"%s"%s%d%s' % (address, line, ts, line_end),
            )
        )

    def _miss(self, data: bytes) -> None:
        """A record whose pieces are not cached: decoded, its pieces kept if it has a
        packet part and its JSON line the usual shape, else written from the event."""
        event = decode_event(data, self.names)
        extras = decode_extras(data, event, RecordLayout(capture_bytes=self.snaplen))
        event = event._replace(extras=extras)  # as the printer hands it to ``add``
        interface = self._interface(event, extras.packet)
        note, note_end = comment_parts(event, extras.packet)
        line = json_tail(self._line(event, extras), event)
        if len(data) < _PACKET_AT or line is None:
            self.add(event, extras)
            return
        pieces = BlockPieces(interface, note.encode(), note_end.encode(),
                             line[0].encode(), line[1].encode())  # fmt: skip
        self.pieces.put(data[KEY_START:_PACKET_AT], pieces)
        self.add_record(data)

    def tick(self) -> None:
        """Forget the cached pieces once a second, as the line cache does its tails."""
        self.pieces.expire()

    def _interface(self, event: Event, packet: Packet | None) -> int:
        link = LINKTYPE_ETHERNET if packet and packet.link == PWRU_LINK_ETHERNET else LINKTYPE_RAW
        key = (event.netns, event.ifindex, link)
        interface = self.interfaces.get(key)
        if interface is None:
            interface = self.interfaces[key] = self._describe(*key)
        return interface

    def _line(self, event: Event, extras: Extras) -> str:
        """The event's saved-trace JSON line (the second comment)."""
        stack = shown_frames(extras.frames, self.names.symbol) if extras.frames else ()
        return self.lines.render(
            event, stack, skb_text=extras.skb_text, shinfo_text=extras.shinfo_text
        )

    def _describe(self, netns: int, ifindex: int, link: int) -> int:
        name = interface_name(self.names, netns, ifindex)
        description = f"ifindex {ifindex} in netns {netns}, as pwru saw it"
        return self.writer.interface(link, self.snaplen, name, description)

    def close(self) -> None:
        self.out.close()


# --- reading -------------------------------------------------------------------


@dataclass
class Block:
    """One block read back: its type and what pwru uses of it."""

    kind: int
    comments: list[str]
    interface: int = 0  # EPB: interface id
    ts: int = 0  # EPB: timestamp in the interface's units
    data: bytes = b""  # EPB: captured bytes
    length: int = 0  # EPB: original length
    link_type: int = 0  # IDB


def read_blocks(source: BinaryIO, name: str) -> Iterator[Block]:
    """The blocks of a pcapng file (one section); UsageError when it is not pcapng or
    is cut short."""
    head = source.read(12)
    if len(head) < 12 or head[:4] != _U32.pack(SHB):
        raise UsageError(f"{name}: not a pcapng file")
    order = next(
        (o for o in "<>" if struct.unpack_from(o + "I", head, 8)[0] == BYTE_ORDER_MAGIC), ""
    )
    if not order:
        raise UsageError(f"{name}: not a pcapng file (no byte-order magic)")
    while head:
        if len(head) < 8:
            raise UsageError(f"{name}: truncated pcapng file (a block header is cut short)")
        kind, total = struct.unpack_from(order + "II", head)
        if total < 12 or total % 4:
            raise UsageError(f"{name}: damaged pcapng file (block length {total})")
        body = head[8:] + source.read(total - len(head))
        if len(body) < total - 8:
            raise UsageError(f"{name}: truncated pcapng file (the last block is cut short)")
        yield _parse_block(kind, body[:-4], order)
        head = source.read(8)


def _parse_block(kind: int, body: bytes, order: str) -> Block:
    if kind == EPB and len(body) >= 20:
        interface, high, low, captured, length = struct.unpack_from(order + "IIIII", body)
        data = body[20 : 20 + captured]
        opts = 20 + captured + (-captured % 4)
        return Block(kind, _comments(body, opts, order), interface, high << 32 | low, data, length)
    if kind == IDB and len(body) >= 8:
        return Block(
            kind, _comments(body, 8, order), link_type=struct.unpack_from(order + "H", body)[0]
        )
    if kind == SHB and len(body) >= 16:
        return Block(kind, _comments(body, 16, order))
    return Block(kind, [])


def _comments(body: bytes, offset: int, order: str) -> list[str]:
    """The opt_comment values among a block's options."""
    comments = []
    while offset + 4 <= len(body):
        code, size = struct.unpack_from(order + "HH", body, offset)
        if code == OPT_END:
            break
        value = body[offset + 4 : offset + 4 + size]
        if code == OPT_COMMENT:
            comments.append(value.decode("utf-8", "replace"))
        offset += 4 + size + (-size % 4)
    return comments
