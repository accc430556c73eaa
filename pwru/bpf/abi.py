"""The binary contract with the BPF side, declared once (mirror of bpf/pwru.h).

``RawTuple``, ``RawEvent`` and ``Config`` are ``ctypes.Structure`` copies of ``struct
pwru_tuple``, ``struct pwru_event`` and ``struct pwru_config``: naturally aligned,
no packing, explicit padding fields, exactly as in the C header. pwru.bpf.config fills
a ``Config`` for ``.rodata``; tests build ``RawEvent`` values to feed the decoder
(pwru.output.decode turns records into its own ``Event``).

``EVENT_STRUCT`` is the precompiled ``struct.Struct`` the event decoder uses on the
hot path (one ``unpack_from`` per event). Its format is written out by hand for
speed and checked against ``ctypes.sizeof(RawEvent)`` at import, and field by field
by tests/unit/test_layout.py (against the ctypes layout and against the BTF of the
built BPF object).

Byte order: fields are native (the BPF object is built for the host); addresses,
ports and ``RawEvent.protocol`` are in network order, as on the wire.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Final

PWRU_TASK_COMM_LEN: Final = 16
PWRU_MAX_SKB_METADATA: Final = 4

# enum pwru_event_type: which kind of probe produced an event.
PWRU_EVENT_KPROBE: Final = 0
PWRU_EVENT_KPROBE_MULTI: Final = 1
PWRU_EVENT_TC: Final = 2
PWRU_EVENT_XDP: Final = 3
PWRU_EVENT_TRACEPOINT: Final = 4

EVENT_TYPE_NAMES: Final = {
    PWRU_EVENT_KPROBE: "kprobe",
    PWRU_EVENT_KPROBE_MULTI: "kprobe-multi",
    PWRU_EVENT_TC: "tc",
    PWRU_EVENT_XDP: "xdp",
    PWRU_EVENT_TRACEPOINT: "tracepoint",
}

# enum pwru_event_flags: bits of Event.flags.
PWRU_EVENT_HAS_REASON: Final = 1 << 0  # .reason holds an skb_drop_reason
PWRU_EVENT_HAS_TUPLE: Final = 1 << 1  # .tuple was parsed from the packet
PWRU_EVENT_HAS_TUNNEL: Final = 1 << 2  # .tunnel_tuple holds the inner packet
PWRU_EVENT_HAS_STACK: Final = 1 << 3  # stack frames follow the event
PWRU_EVENT_FEXIT: Final = 1 << 4  # tc/XDP program exit: .reason is its return value
PWRU_EVENT_HAS_BPFMAP: Final = 1 << 5  # a RawBpfmap ends the record (--output-bpfmap)
PWRU_EVENT_HAS_HOOK: Final = 1 << 6  # nf_hook_slow: .reason = state->pf << 8 | state->hook
PWRU_EVENT_CLONE: Final = 1 << 7  # a clone's birth: .skb_addr the new skb, .reason the original
PWRU_MAX_STACK_FRAMES: Final = 50
PWRU_MAX_SKB_TEXT: Final = 65536

PWRU_SKB_CB_LEN: Final = 48

# enum pwru_link: what captured packet bytes start with.
PWRU_LINK_NONE: Final = 0
PWRU_LINK_ETHERNET: Final = 1
PWRU_LINK_RAW_IP: Final = 2

# enum pwru_packet_flags: bits of RawPacket.flags.
PWRU_PACKET_TRUNCATED: Final = 1 << 0  # bytes past the linear area were wanted, not copied

# Records with packet bytes are built in scratch buffers, one per CPU and nesting
# level (see bpf/pwru.h).
PWRU_MAX_CAPTURE: Final = 9216  # --capture-bytes at most
PWRU_CAPTURE_MASK: Final = 0x3FFF  # bounds offsets and lengths of copies (verifier)
PWRU_CAPTURE_FRAGS: Final = 8  # page fragments copied from at most, per event
PWRU_SCRATCH_SIZE: Final = 43008
PWRU_SCRATCH_LEVELS: Final = 4

# Every probe program loads this 64-bit immediate once; the loader replaces the
# low 32 bits with the probe's index (see probe_id() in bpf/pwru.bpf.c).
PWRU_PROBE_ID_MARKER: Final = 0x7077727500000000
PWRU_PROBE_ID_MARKER_HI: Final = 0x70777275

# probe_id of kprobe events on kernels without BPF cookies (5.10): named by func_ip.
PWRU_PROBE_BY_ADDR: Final = 0xFFFFFFFF

# struct pwru_bpfmap: a map helper's map, key and value (--output-bpfmap).
PWRU_BPFMAP_DATA_LEN: Final = 256  # key and value bytes kept
PWRU_BPF_OBJ_NAME_LEN: Final = 16
# enum pwru_bpfmap_flags: bits of RawBpfmap.flags.
PWRU_BPFMAP_HAS_VALUE: Final = 1 << 0  # .value was read


class RawTuple(ctypes.Structure):
    """struct pwru_tuple (40 bytes)."""

    _fields_ = [
        ("saddr", ctypes.c_uint8 * 16),  # IPv4 uses the first 4 bytes
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),  # network order
        ("dport", ctypes.c_uint16),  # network order
        ("l3_proto", ctypes.c_uint16),  # host order: 0x0800, 0x86dd or 0
        ("l4_proto", ctypes.c_uint8),  # IPPROTO_*
        ("tcp_flags", ctypes.c_uint8),  # TCP header byte 13
    ]


class RawEvent(ctypes.Structure):
    """struct pwru_event: one record in the "events" ring buffer (216 bytes)."""

    _fields_ = [
        ("ts", ctypes.c_uint64),  # bpf_ktime_get_ns()
        ("skb_addr", ctypes.c_uint64),
        ("func_ip", ctypes.c_uint64),
        ("caller_ip", ctypes.c_uint64),  # if asked; drop events: always
        ("reason", ctypes.c_uint64),  # valid with PWRU_EVENT_HAS_REASON
        ("probe_id", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("stack_id", ctypes.c_int32),
        ("netns", ctypes.c_uint32),
        ("mark", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("mtu", ctypes.c_uint32),
        ("protocol", ctypes.c_uint16),  # network order
        ("_pad0", ctypes.c_uint16),
        ("tuple", RawTuple),
        ("tunnel_tuple", RawTuple),
        ("skb_metadata", ctypes.c_uint64 * PWRU_MAX_SKB_METADATA),
        ("comm", ctypes.c_char * PWRU_TASK_COMM_LEN),
    ]


class RawPacket(ctypes.Structure):
    """struct pwru_packet: header of the captured bytes ending a record (8 bytes)."""

    _fields_ = [
        ("len", ctypes.c_uint32),  # bytes the packet has from the start of data
        ("captured", ctypes.c_uint16),  # bytes that follow
        ("link", ctypes.c_uint8),  # PWRU_LINK_*
        ("flags", ctypes.c_uint8),  # PWRU_PACKET_*
    ]


class RawBpfmap(ctypes.Structure):
    """struct pwru_bpfmap: ends the record of a map helper's event (544 bytes)."""

    _fields_ = [
        ("id", ctypes.c_uint32),  # the map's id
        ("key_size", ctypes.c_uint32),  # the map's sizes; key/value hold at most
        ("value_size", ctypes.c_uint32),  # PWRU_BPFMAP_DATA_LEN bytes of each
        ("flags", ctypes.c_uint32),  # PWRU_BPFMAP_*
        ("name", ctypes.c_char * PWRU_BPF_OBJ_NAME_LEN),
        ("key", ctypes.c_uint8 * PWRU_BPFMAP_DATA_LEN),
        ("value", ctypes.c_uint8 * PWRU_BPFMAP_DATA_LEN),
    ]


class Config(ctypes.Structure):
    """struct pwru_config: run-time configuration in .rodata (72 bytes)."""

    _fields_ = [
        ("netns", ctypes.c_uint32),  # 0 = any
        ("mark", ctypes.c_uint32),
        ("mark_mask", ctypes.c_uint32),  # 0 = mark filter off
        ("ifindex", ctypes.c_uint32),  # 0 = any
        ("stack_frames", ctypes.c_uint32),  # stack frames appended to each record
        ("skb_text_len", ctypes.c_uint32),  # bytes of --output-skb text appended
        ("shinfo_text_len", ctypes.c_uint32),  # bytes of --output-skb-shared-info text
        ("capture_bytes", ctypes.c_uint32),  # packet bytes appended at most (0 = none)
        ("output_meta", ctypes.c_uint8),
        ("output_tuple", ctypes.c_uint8),
        ("output_tunnel", ctypes.c_uint8),
        ("output_skb_metadata", ctypes.c_uint8),
        ("track_skb", ctypes.c_uint8),
        ("track_skb_by_stackid", ctypes.c_uint8),
        ("have_pcap_filter", ctypes.c_uint8),
        ("have_tunnel_filter", ctypes.c_uint8),
        ("have_skb_expr", ctypes.c_uint8),
        ("output_cb", ctypes.c_uint8),  # skb->cb appended
        ("kprobe_cookie", ctypes.c_uint8),  # kprobes may call bpf_get_attach_cookie
        ("kprobe_func_ip", ctypes.c_uint8),  # kprobes may call bpf_get_func_ip
        ("have_xdp_expr", ctypes.c_uint8),  # filter_xdp_expr was spliced in
        ("output_xdp_metadata", ctypes.c_uint8),  # read_xdp_metadata was spliced in
        ("track_bpf_helpers", ctypes.c_uint8),  # tc/XDP programs mark their packet
        ("diagnose", ctypes.c_uint8),  # events carry nf_hook_slow's hook and clone births
        # packet bytes in page fragments, read through the direct map (x86_64)
        ("page_offset_base", ctypes.c_uint64),  # &page_offset_base, or 0
        ("vmemmap_base", ctypes.c_uint64),  # &vmemmap_base, or 0
        ("page_shift", ctypes.c_uint32),
        ("filter_loops", ctypes.c_uint8),
        ("filter_direct", ctypes.c_uint8),  # tp_btf programs read packets with plain loads
        ("kprobe_btf", ctypes.c_uint8),  # kprobes read the skb through skb_btf_cast
        ("_pad2", ctypes.c_uint8),
    ]


# struct pwru_tuple as a struct format: saddr, daddr (raw bytes), sport, dport
# (raw network-order u16 read natively), l3_proto, l4_proto, tcp_flags.
TUPLE_FORMAT: Final = "=16s16sHHHBB"

# struct pwru_event, one item per member (the two tuples kept as raw 40-byte
# strings so the decoder can cache their decoded form). "=" means native byte
# order with no implicit alignment: the C layout has explicit padding.
EVENT_FORMAT: Final = (
    "="
    "QQQQQ"  # ts, skb_addr, func_ip, caller_ip, reason
    "IIIII"  # probe_id, pid, cpu, type, flags
    "i"  # stack_id
    "IIIII"  # netns, mark, ifindex, len, mtu
    "H2x"  # protocol, _pad0
    "40s40s"  # tuple, tunnel_tuple
    f"{PWRU_MAX_SKB_METADATA}Q"  # skb_metadata
    f"{PWRU_TASK_COMM_LEN}s"  # comm
)

# struct pwru_packet as a struct format.
PACKET_FORMAT: Final = "=IHBB"

# struct pwru_bpfmap: id, key_size, value_size, flags, name, key, value.
BPFMAP_FORMAT: Final = (
    f"=IIII{PWRU_BPF_OBJ_NAME_LEN}s{PWRU_BPFMAP_DATA_LEN}s{PWRU_BPFMAP_DATA_LEN}s"
)

TUPLE_STRUCT: Final = struct.Struct(TUPLE_FORMAT)
PACKET_STRUCT: Final = struct.Struct(PACKET_FORMAT)
BPFMAP_STRUCT: Final = struct.Struct(BPFMAP_FORMAT)
EVENT_STRUCT: Final = struct.Struct(EVENT_FORMAT)
EVENT_SIZE: Final = ctypes.sizeof(RawEvent)
CONFIG_SIZE: Final = ctypes.sizeof(Config)

if (
    EVENT_STRUCT.size != EVENT_SIZE
    or TUPLE_STRUCT.size != ctypes.sizeof(RawTuple)
    or BPFMAP_STRUCT.size != ctypes.sizeof(RawBpfmap)
):
    raise ImportError(
        f"pwru.bpf.abi: struct formats ({EVENT_STRUCT.size}, {TUPLE_STRUCT.size} bytes) "
        f"disagree with ctypes ({EVENT_SIZE}, {ctypes.sizeof(RawTuple)} bytes)"
    )
