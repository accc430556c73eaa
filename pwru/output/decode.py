"""Decoded events: Python-native values of one ring-buffer record.

``decode_event`` runs once per record, so it is written for speed: one
``struct.unpack_from`` with the precompiled layout, and caches keyed by the raw
bytes for the parts that repeat across events of the same packet (the 40-byte
tuples, the 16-byte comm).

``decode_extras`` reads what the config appends after ``struct pwru_event``
(bpf/pwru.h): stack frames, the BTF-printed skb and shared info, skb->cb, the
captured packet, and a map helper's map, key and value (``struct pwru_bpfmap``,
only in records flagged PWRU_EVENT_HAS_BPFMAP).

All integers are host order; ``Event.protocol`` is ``ntohs(skb->protocol)``;
``Tuple5`` addresses are text (dotted IPv4, compressed IPv6, no brackets).

An ``Event`` is what every consumer gets: the renderers, the sinks, a saved trace
read back (pwru.output.readback) and the Python API. It carries the run's
``NameResolver`` so that ``ev.func``, ``ev.iface``, ``ev.process`` and
``ev.reason_name`` answer in words, looked up only when asked.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from pwru.bpf.abi import (
    BPFMAP_STRUCT,
    EVENT_SIZE,
    EVENT_STRUCT,
    PACKET_STRUCT,
    PWRU_BPFMAP_DATA_LEN,
    PWRU_BPFMAP_HAS_VALUE,
    PWRU_EVENT_CLONE,
    PWRU_EVENT_HAS_BPFMAP,
    PWRU_EVENT_HAS_HOOK,
    PWRU_EVENT_HAS_REASON,
    PWRU_EVENT_HAS_STACK,
    PWRU_EVENT_HAS_TUNNEL,
    PWRU_EVENT_HAS_TUPLE,
    PWRU_PACKET_TRUNCATED,
    PWRU_SKB_CB_LEN,
    TUPLE_STRUCT,
    Config,
)

if TYPE_CHECKING:
    from pwru.output.render import NameResolver

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


# Values of the (up to 4) --output-skb-metadata expressions, unused slots 0.
SkbMetadata = tuple[int, int, int, int]


class Tuple5(NamedTuple):
    """An L3/L4 tuple parsed from a packet by the BPF side."""

    saddr: str  # "" when l3_proto is neither IPv4 nor IPv6
    daddr: str
    sport: int  # host order
    dport: int
    l3_proto: int  # 0x0800, 0x86dd or 0
    l4_proto: int  # IPPROTO_*
    tcp_flags: int  # TCP header byte 13 (FIN=0x01 ... CWR=0x80)


class Event(NamedTuple):
    """One (packet, kernel function) event."""

    ts: int  # bpf_ktime_get_ns(): CLOCK_MONOTONIC nanoseconds
    skb_addr: int
    func_ip: int  # probed function address (kprobe*) or 0
    caller_ip: int  # return address into the caller, or 0
    # skb drop reason (PWRU_EVENT_HAS_REASON), nf_hook_slow's pf << 8 | hook
    # (PWRU_EVENT_HAS_HOOK) or a clone's original (PWRU_EVENT_CLONE); None otherwise
    reason: int | None
    probe_id: int  # index in the control plane's probe table
    pid: int  # tgid
    cpu: int
    type: int  # PWRU_EVENT_* from pwru.bpf.abi
    flags: int  # PWRU_EVENT_HAS_* bits from pwru.bpf.abi
    stack_id: int  # < 0 when no stack was taken
    netns: int  # netns inode, 0 when unknown or meta output is off
    mark: int
    ifindex: int
    len: int
    mtu: int
    protocol: int  # skb->protocol, host order (0x0800 for IPv4)
    tuple: Tuple5 | None  # None unless PWRU_EVENT_HAS_TUPLE
    tunnel_tuple: Tuple5 | None  # None unless PWRU_EVENT_HAS_TUNNEL
    skb_metadata: SkbMetadata  # values of --output-skb-metadata
    comm: str  # current task's comm
    names: NameResolver | None = None  # the run's names for probes, reasons, ...
    extras: Extras | None = None  # what followed the event in its record, if decoded

    # Words for the numbers (API users, sinks); the renderers ask ``names`` directly.

    @property
    def skb(self) -> int:
        """Address of the sk_buff (or xdp_buff)."""
        return self.skb_addr

    @property
    def time(self) -> int:
        """bpf_ktime_get_ns() at the event: CLOCK_MONOTONIC nanoseconds."""
        return self.ts

    @property
    def func(self) -> str:
        """The kernel function or tracepoint (or tc/XDP program) of the event."""
        if self.names is None:
            return f"{self.func_ip:#x}" if self.func_ip else f"probe#{self.probe_id}"
        return self.names.probe_name(self)

    @property
    def reason_name(self) -> str | None:
        """The drop reason's name (``SKB_DROP_REASON_...``), None without one."""
        if self.reason is None or self.names is None:
            return None
        return self.names.drop_reason(self.reason)

    @property
    def iface(self) -> str:
        """``name:ifindex`` of the skb's device, like pwru's IFACE column."""
        if self.names is None:
            return str(self.ifindex)
        return self.names.iface(self.netns, self.ifindex)

    @property
    def process(self) -> str:
        """``exe:pid`` of the task the event ran in, like pwru's PROCESS column."""
        if self.names is None:
            return f"{self.comm}:{self.pid}"
        return self.names.process(self.pid, self.comm)

    @property
    def packet(self) -> Packet | None:
        """The captured packet bytes (--output-pcap, --capture-bytes), or None."""
        return self.extras.packet if self.extras is not None else None


_CACHE_LIMIT = 4096
_LITTLE = sys.byteorder == "little"
_unpack_event = EVENT_STRUCT.unpack_from
_unpack_tuple = TUPLE_STRUCT.unpack
_new_event = tuple.__new__
_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_REASON_FLAGS = PWRU_EVENT_HAS_REASON | PWRU_EVENT_HAS_HOOK | PWRU_EVENT_CLONE
_tuple_cache: dict[bytes, Tuple5] = {}
_comm_cache: dict[bytes, str] = {}


def _ntohs(value: int) -> int:
    """A network-order u16 that was read with native byte order, in host order."""
    if _LITTLE:
        return ((value & 0xFF) << 8) | (value >> 8)
    return value


def _decode_tuple(raw: bytes) -> Tuple5:
    saddr, daddr, sport, dport, l3_proto, l4_proto, tcp_flags = _unpack_tuple(raw)
    if l3_proto == ETH_P_IP:
        src, dst = _ntop(_AF_INET, saddr[:4]), _ntop(_AF_INET, daddr[:4])
    elif l3_proto == ETH_P_IPV6:
        src, dst = _ntop(_AF_INET6, saddr), _ntop(_AF_INET6, daddr)
    else:
        src = dst = ""
    tup = Tuple5(src, dst, _ntohs(sport), _ntohs(dport), l3_proto, l4_proto, tcp_flags)
    if len(_tuple_cache) >= _CACHE_LIMIT:
        _tuple_cache.clear()
    _tuple_cache[raw] = tup
    return tup


def _decode_comm(raw: bytes) -> str:
    comm = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if len(_comm_cache) >= _CACHE_LIMIT:
        _comm_cache.clear()
    _comm_cache[raw] = comm
    return comm


def decode_event(data: bytes | bytearray | memoryview, names: NameResolver | None = None) -> Event:
    """Decode one ``struct pwru_event`` record (at least ``EVENT_SIZE`` bytes);
    ``names`` answers the event's questions in words (see ``Event.func``).

    Raises ``struct.error`` when ``data`` is too short.
    """
    (
        ts, skb_addr, func_ip, caller_ip, reason,
        probe_id, pid, cpu, type_, flags, stack_id,
        netns, mark, ifindex, length, mtu, protocol,
        tuple_raw, tunnel_raw, md0, md1, md2, md3, comm_raw,
    ) = _unpack_event(data)  # fmt: skip
    if _LITTLE:
        protocol = ((protocol & 0xFF) << 8) | (protocol >> 8)
    tup: Tuple5 | None = None
    if flags & PWRU_EVENT_HAS_TUPLE:
        tup = _tuple_cache.get(tuple_raw)
        if tup is None:
            tup = _decode_tuple(tuple_raw)
    tunnel: Tuple5 | None = None
    if flags & PWRU_EVENT_HAS_TUNNEL:
        tunnel = _tuple_cache.get(tunnel_raw)
        if tunnel is None:
            tunnel = _decode_tuple(tunnel_raw)
    comm = _comm_cache.get(comm_raw)
    if comm is None:
        comm = _decode_comm(comm_raw)
    # tuple.__new__ skips NamedTuple's keyword-handling __new__ (~30% faster).
    return _new_event(
        Event,
        (
            ts, skb_addr, func_ip, caller_ip,
            reason if flags & _REASON_FLAGS else None,
            probe_id, pid, cpu, type_, flags, stack_id,
            netns, mark, ifindex, length, mtu, protocol,
            tup, tunnel, (md0, md1, md2, md3), comm, names, None,
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class RecordLayout:
    """What follows ``struct pwru_event`` in a record, as the config asked for it."""

    stack_frames: int = 0
    skb_text_len: int = 0
    shinfo_text_len: int = 0
    cb: bool = False
    capture_bytes: int = 0

    @classmethod
    def of(cls, config: Config) -> RecordLayout:
        """The layout records have under ``config``."""
        return cls(
            config.stack_frames,
            config.skb_text_len,
            config.shinfo_text_len,
            bool(config.output_cb),
            config.capture_bytes,
        )

    @property
    def has_extras(self) -> bool:
        return self.extras_before_packet or bool(self.capture_bytes)

    @property
    def extras_before_packet(self) -> bool:
        """Whether anything but packet bytes follows the event (then the packet part
        does not start at EVENT_SIZE)."""
        return bool(self.stack_frames or self.skb_text_len or self.shinfo_text_len or self.cb)


class Packet(NamedTuple):
    """Bytes of the packet as the kernel held them at the event (``struct pwru_packet``)."""

    link: int  # PWRU_LINK_*: what ``data`` starts with
    len: int  # bytes the packet has from there (on the wire)
    data: bytes  # the first of them, as captured
    truncated: bool  # bytes past the linear area were wanted but not copied


class Bpfmap(NamedTuple):
    """A map helper's map and arguments (``struct pwru_bpfmap``, --output-bpfmap)."""

    id: int
    name: str
    key_size: int  # the map's; ``key`` holds at most PWRU_BPFMAP_DATA_LEN bytes of it
    value_size: int
    key: bytes
    value: bytes | None  # None: not read (a delete, a lookup that found nothing)


class Extras(NamedTuple):
    """The parts of a record after the event."""

    frames: list[int]  # kernel stack, innermost first, without the 0 padding
    skb_text: str  # --output-skb
    shinfo_text: str  # --output-skb-shared-info
    cb: bytes = b""  # skb->cb (--output-skb-cb)
    packet: Packet | None = None  # captured bytes (--output-pcap)
    bpfmap: Bpfmap | None = None  # a map helper's arguments (--output-bpfmap)


NO_EXTRAS = Extras([], "", "")


def _text(data: bytes | memoryview, offset: int, length: int) -> str:
    return bytes(data[offset : offset + length]).split(b"\0", 1)[0].decode(errors="replace")


def _packet(data: bytes | memoryview, offset: int) -> Packet | None:
    if len(data) < offset + PACKET_STRUCT.size:
        return None
    length, captured, link, flags = PACKET_STRUCT.unpack_from(data, offset)
    start = offset + PACKET_STRUCT.size
    raw = bytes(data[start : start + captured])
    return Packet(link, length, raw, bool(flags & PWRU_PACKET_TRUNCATED))


def _bpfmap(data: bytes | memoryview, offset: int) -> Bpfmap | None:
    if len(data) < offset + BPFMAP_STRUCT.size:
        return None
    map_id, key_size, value_size, flags, name, key, value = BPFMAP_STRUCT.unpack_from(data, offset)
    return Bpfmap(
        map_id,
        name.split(b"\0", 1)[0].decode(errors="replace"),
        key_size,
        value_size,
        key[: min(key_size, PWRU_BPFMAP_DATA_LEN)],
        value[: min(value_size, PWRU_BPFMAP_DATA_LEN)] if flags & PWRU_BPFMAP_HAS_VALUE else None,
    )


def decode_extras(data: bytes | memoryview, event: Event, layout: RecordLayout) -> Extras:
    """Stack frames, BTF-printed texts, skb->cb, packet bytes and a map helper's
    arguments following the event."""
    if len(data) <= EVENT_SIZE:
        return NO_EXTRAS
    offset = EVENT_SIZE
    frames: list[int] = []
    if layout.stack_frames:
        if event.flags & PWRU_EVENT_HAS_STACK:
            raw = struct.unpack_from(f"{layout.stack_frames}Q", data, offset)
            frames = [ip for ip in raw if ip]
        offset += layout.stack_frames * 8
    skb_text = _text(data, offset, layout.skb_text_len) if layout.skb_text_len else ""
    offset += layout.skb_text_len
    shinfo = _text(data, offset, layout.shinfo_text_len) if layout.shinfo_text_len else ""
    offset += layout.shinfo_text_len
    cb = b""
    if layout.cb:
        cb = bytes(data[offset : offset + PWRU_SKB_CB_LEN])
        offset += PWRU_SKB_CB_LEN
    packet = _packet(data, offset) if layout.capture_bytes else None
    bpfmap = None
    if event.flags & PWRU_EVENT_HAS_BPFMAP:  # after the packet part (empty in its record)
        if layout.capture_bytes:
            offset += PACKET_STRUCT.size + (len(packet.data) if packet is not None else 0)
        bpfmap = _bpfmap(data, offset)
    return Extras(frames, skb_text, shinfo, cb, packet, bpfmap)
