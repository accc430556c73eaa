"""decode_event: raw ring-buffer records (built with pwru.bpf.abi) to Event values."""

from __future__ import annotations

import ctypes
import socket
import struct

import pytest

from pwru.bpf import abi
from pwru.output.decode import (
    Bpfmap,
    Event,
    Packet,
    RecordLayout,
    Tuple5,
    decode_event,
    decode_extras,
)


def set_tuple(
    t: abi.RawTuple, saddr: str, daddr: str, sport: int, dport: int, l4: int, flags: int = 0
) -> None:
    family = socket.AF_INET6 if ":" in saddr else socket.AF_INET
    src, dst = socket.inet_pton(family, saddr), socket.inet_pton(family, daddr)
    ctypes.memmove(t.saddr, src, len(src))
    ctypes.memmove(t.daddr, dst, len(dst))
    t.sport, t.dport = socket.htons(sport), socket.htons(dport)  # network order
    t.l3_proto = 0x86DD if family == socket.AF_INET6 else 0x0800  # host order
    t.l4_proto, t.tcp_flags = l4, flags


def raw_event(**fields: object) -> abi.RawEvent:
    ev = abi.RawEvent()
    ev.ts = 1_000_000_123
    ev.skb_addr = 0xFFFF888012345678
    ev.func_ip = 0xFFFFFFFF81234560
    ev.caller_ip = 0xFFFFFFFF81000010
    ev.probe_id = 7
    ev.pid = 4242
    ev.cpu = 3
    ev.type = abi.PWRU_EVENT_TRACEPOINT
    ev.stack_id = -1
    ev.netns = 4026531840
    ev.mark = 0xA00
    ev.ifindex = 2
    ev.len = 60
    ev.mtu = 1500
    ev.protocol = socket.htons(0x0800)
    ev.comm = b"curl"
    for name, value in fields.items():
        setattr(ev, name, value)
    return ev


def test_plain_event() -> None:
    ev = decode_event(bytes(raw_event()))
    assert isinstance(ev, Event)
    assert ev == Event(
        ts=1_000_000_123, skb_addr=0xFFFF888012345678, func_ip=0xFFFFFFFF81234560,
        caller_ip=0xFFFFFFFF81000010, reason=None, probe_id=7, pid=4242, cpu=3,
        type=abi.PWRU_EVENT_TRACEPOINT, flags=0, stack_id=-1, netns=4026531840,
        mark=0xA00, ifindex=2, len=60, mtu=1500, protocol=0x0800, tuple=None,
        tunnel_tuple=None, skb_metadata=(0, 0, 0, 0), comm="curl",
    )  # fmt: skip


def test_ipv4_tcp_tuple() -> None:
    raw = raw_event(flags=abi.PWRU_EVENT_HAS_TUPLE)
    set_tuple(raw.tuple, "10.0.2.15", "10.0.0.2", 41234, 80, 6, 0x12)
    ev = decode_event(bytes(raw))
    assert ev.tuple == Tuple5("10.0.2.15", "10.0.0.2", 41234, 80, 0x0800, 6, 0x12)
    assert ev.tunnel_tuple is None


def test_ipv6_tuple_is_compressed() -> None:
    raw = raw_event(flags=abi.PWRU_EVENT_HAS_TUPLE, protocol=socket.htons(0x86DD))
    set_tuple(raw.tuple, "2001:db8:0:0::1", "fe80::abcd:0:0:1", 53, 65535, 17)
    ev = decode_event(bytes(raw))
    assert ev.protocol == 0x86DD
    assert ev.tuple == Tuple5("2001:db8::1", "fe80::abcd:0:0:1", 53, 65535, 0x86DD, 17, 0)


def test_tuple_ignored_without_flag() -> None:
    raw = raw_event(flags=0)
    set_tuple(raw.tuple, "10.0.0.1", "10.0.0.2", 1, 2, 6)
    assert decode_event(bytes(raw)).tuple is None


def test_unknown_l3_gives_empty_addresses() -> None:
    raw = raw_event(flags=abi.PWRU_EVENT_HAS_TUPLE)
    raw.tuple.l4_proto = 6
    assert decode_event(bytes(raw)).tuple == Tuple5("", "", 0, 0, 0, 6, 0)


def test_tunnel_tuple() -> None:
    raw = raw_event(flags=abi.PWRU_EVENT_HAS_TUPLE | abi.PWRU_EVENT_HAS_TUNNEL)
    set_tuple(raw.tuple, "192.168.0.1", "192.168.0.2", 50000, 4789, 17)
    set_tuple(raw.tunnel_tuple, "10.1.0.1", "10.1.0.2", 0, 0, 1)
    ev = decode_event(bytes(raw))
    assert ev.tuple is not None and ev.tuple.dport == 4789
    assert ev.tunnel_tuple == Tuple5("10.1.0.1", "10.1.0.2", 0, 0, 0x0800, 1, 0)


def test_reason_only_with_flag() -> None:
    assert decode_event(bytes(raw_event(reason=2))).reason is None
    ev = decode_event(bytes(raw_event(reason=2, flags=abi.PWRU_EVENT_HAS_REASON)))
    assert ev.reason == 2
    ev = decode_event(bytes(raw_event(reason=0, flags=abi.PWRU_EVENT_HAS_REASON)))
    assert ev.reason == 0
    # the same field carries nf_hook_slow's pf << 8 | hook and a clone's original
    ev = decode_event(bytes(raw_event(reason=0x201, flags=abi.PWRU_EVENT_HAS_HOOK)))
    assert ev.reason == 0x201
    ev = decode_event(bytes(raw_event(reason=0xFFFF8880, flags=abi.PWRU_EVENT_CLONE)))
    assert ev.reason == 0xFFFF8880


def test_comm_and_metadata() -> None:
    raw = raw_event(comm=b"0123456789abcdef")  # no NUL: all 16 bytes
    for i, value in enumerate((1, 2**64 - 1, 0, 42)):
        raw.skb_metadata[i] = value
    ev = decode_event(bytes(raw))
    assert ev.comm == "0123456789abcdef"
    assert ev.skb_metadata == (1, 2**64 - 1, 0, 42)
    assert decode_event(bytes(raw_event(comm=b"ab\xffc"))).comm == "ab\ufffdc"
    assert decode_event(bytes(raw_event(comm=b""))).comm == ""


def test_same_tuple_bytes_different_flags_are_distinct() -> None:
    raws = []
    for flags in (0x02, 0x12):
        raw = raw_event(flags=abi.PWRU_EVENT_HAS_TUPLE)
        set_tuple(raw.tuple, "10.0.0.1", "10.0.0.2", 1000, 80, 6, flags)
        raws.append(bytes(raw))
    first, second, again = (decode_event(r) for r in (raws[0], raws[1], raws[0]))
    assert first.tuple is not None and second.tuple is not None
    assert (first.tuple.tcp_flags, second.tuple.tcp_flags) == (0x02, 0x12)
    assert again.tuple is first.tuple  # cached


def test_buffer_types_and_trailing_bytes() -> None:
    data = bytes(raw_event())
    expected = decode_event(data)
    assert decode_event(memoryview(bytearray(data))) == expected
    assert decode_event(bytearray(data) + b"\0" * 8) == expected  # ring buffer padding
    with pytest.raises(struct.error):
        decode_event(data[:-1])


def test_extras_in_record_order() -> None:
    """Stack, skb text, shared-info text, skb->cb and the captured packet, as bpf/pwru.h
    lays them out after the event."""
    ev = raw_event(flags=abi.PWRU_EVENT_HAS_STACK)
    frames = struct.pack("4Q", 0xFFFFFFFF81000010, 0xFFFFFFFF81000020, 0, 0)
    skb_text, shinfo = b"(struct sk_buff){}\0junk".ljust(32, b"\0"), b"shinfo\0".ljust(16, b"x")
    cb = bytes(range(abi.PWRU_SKB_CB_LEN))
    packet = abi.RawPacket(len=98, captured=5, link=abi.PWRU_LINK_RAW_IP, flags=0)
    data = bytes(ev) + frames + skb_text + shinfo + cb + bytes(packet) + b"\x45hello"
    layout = RecordLayout(
        stack_frames=4, skb_text_len=32, shinfo_text_len=16, cb=True, capture_bytes=64
    )
    extras = decode_extras(data, decode_event(data), layout)
    assert extras.frames == [0xFFFFFFFF81000010, 0xFFFFFFFF81000020]
    assert (extras.skb_text, extras.shinfo_text) == ("(struct sk_buff){}", "shinfo")
    assert extras.cb == cb
    assert extras.packet == Packet(abi.PWRU_LINK_RAW_IP, 98, b"\x45hell", False)


def test_extras_without_stack_flag_or_packet_room() -> None:
    ev = raw_event()  # no PWRU_EVENT_HAS_STACK: the frames' room is skipped
    data = bytes(ev) + bytes(16) + bytes(abi.PWRU_SKB_CB_LEN)
    layout = RecordLayout(stack_frames=2, cb=True, capture_bytes=64)
    extras = decode_extras(data, decode_event(data), layout)
    assert extras.frames == [] and extras.cb == bytes(48) and extras.packet is None
    assert not RecordLayout().has_extras and layout.has_extras
    config = abi.Config(stack_frames=2, output_cb=1, capture_bytes=64)
    assert RecordLayout.of(config) == layout


def raw_bpfmap(key: bytes, value: bytes, flags: int, key_size: int, value_size: int) -> bytes:
    raw = abi.RawBpfmap(id=42, key_size=key_size, value_size=value_size, flags=flags)
    raw.name = b"vm_tc_ports"
    ctypes.memmove(raw.key, key, len(key))
    ctypes.memmove(raw.value, value, len(value))
    return bytes(raw)


def test_bpfmap_ends_the_record() -> None:
    """A map helper's record: the usual layout, its packet part (empty in such a record:
    the BPF side sends records at their real length), then struct pwru_bpfmap; key and
    value cut to the map's sizes."""
    ev = raw_event(flags=abi.PWRU_EVENT_HAS_BPFMAP | abi.PWRU_EVENT_HAS_STACK)
    frames = struct.pack("2Q", 0xFFFFFFFF81000010, 0)
    packet = bytes(abi.RawPacket(len=0, captured=0, link=0))
    part = raw_bpfmap(b"\x1d\x41\0\0junk", b"\x02" + bytes(7), abi.PWRU_BPFMAP_HAS_VALUE, 4, 8)
    data = bytes(ev) + frames + bytes(abi.PWRU_SKB_CB_LEN) + packet + part
    layout = RecordLayout(stack_frames=2, cb=True, capture_bytes=16)
    extras = decode_extras(data, decode_event(data), layout)
    assert extras.frames == [0xFFFFFFFF81000010]
    assert extras.packet is not None and extras.packet.data == b""
    assert extras.bpfmap == Bpfmap(42, "vm_tc_ports", 4, 8, b"\x1d\x41\0\0", b"\x02" + bytes(7))
    no_capture = bytes(ev) + frames + bytes(abi.PWRU_SKB_CB_LEN) + part
    layout = RecordLayout(stack_frames=2, cb=True)
    assert decode_extras(no_capture, decode_event(no_capture), layout).bpfmap == extras.bpfmap


def test_bpfmap_without_value_or_flag() -> None:
    """No PWRU_BPFMAP_HAS_VALUE (a delete, a lookup that found nothing): no value; keys
    longer than PWRU_BPFMAP_DATA_LEN keep that many bytes; no event flag: no part."""
    big = bytes(range(256))
    part = raw_bpfmap(big, b"ignored", 0, 300, 4)
    flagged = bytes(raw_event(flags=abi.PWRU_EVENT_HAS_BPFMAP)) + part
    extras = decode_extras(flagged, decode_event(flagged), RecordLayout())
    assert extras.bpfmap == Bpfmap(42, "vm_tc_ports", 300, 4, big, None)
    plain = bytes(raw_event()) + part
    assert decode_extras(plain, decode_event(plain), RecordLayout()).bpfmap is None
