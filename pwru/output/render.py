"""Text columns and JSON lines, both rendered from the same decoded Event.

Formats follow cilium/pwru (internal/pwru/output.go) so that scripts and habits
carry over; docs/output.md describes every column and key, and every difference:

text  ``[TIME] SKB CPU PROCESS [TIMESTAMP] [NETNS MARK/x IFACE PROTO MTU LEN] [CB]
[NETNS NAME] [TUPLE] FUNC [CALLER] [skb metadata] [TUNNEL]``, with pwru's widths; the
TUPLE and FUNC (with --output-caller) columns widen to the longest value seen so far.
XDP events print --output-xdp-metadata where skb events print --output-skb-metadata.
--output-bpfmap adds a map helper's map id, name, key and value below the line, the
bytes as hex dumps (pwru's layout, Go's ``hex.Dump``).

json  one object per line with pwru's keys, in pwru's order, empty values left out
(Go's ``omitempty``): skb, skb_shared_info, cpu, process, func, caller_func, time,
netns, netns_name, mark, iface, proto, mtu, len, cb, tuple, tunnel_tuple, stack,
skb_metadata; ours beside them: skb_cb (all of skb->cb) after cb, and
skb_metadata_values (--output-skb-metadata) and bpfmap (--output-bpfmap: the map's
id, name, key and value sizes, key/value as hex strings) at the end.
The JSON output is also pwru's saved-trace format (pwru.output.savedtrace): a header
line first, and after pwru's keys the few a trace needs to be read back (ts, pid, ...).

Rendering is per event, so the hot path uses cached strings (tuples, centered
interface names) and plain f-strings.
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pwru.bpf.abi import (
    EVENT_TYPE_NAMES,
    PWRU_EVENT_FEXIT,
    PWRU_EVENT_HAS_REASON,
    PWRU_EVENT_TC,
    PWRU_EVENT_XDP,
)
from pwru.options import Options
from pwru.output.decode import Bpfmap, Event, Tuple5
from pwru.output.savedtrace import header_line, packet_json

XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}

if TYPE_CHECKING:
    from pwru.filter.skbexpr import MetadataField

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
ETH_P_IPV6 = 0x86DD

L4_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmp6"}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")  # bit 0 .. 7

_CACHE_LIMIT = 4096
# skb->cb as cilium/pwru shows it: offsetof(struct qdisc_skb_cb, data) (8 since Linux
# 3.x; tests/kernel check it against the running kernel's BTF), five native u32 words
QDISC_CB_DATA = 8
CB_WORDS = 5
CB_HEADER = "__sk_buff->cb[]"
_CB_WORDS = struct.Struct(f"={CB_WORDS}I")
_LAST_SEEN_LIMIT = 1 << 16  # skbs remembered for --timestamp=relative
_NO_TUPLE = Tuple5("", "", 0, 0, 0, 0, 0)  # what pwru prints when nothing was parsed


class NameResolver(Protocol):
    """Names the renderers need; pwru.output.names.SystemNames implements it."""

    def probe_name(self, ev: Event) -> str:
        """Kernel function or tracepoint name of the probe that sent ``ev``."""
        ...

    def drop_reason(self, value: int) -> str | None:
        """Name of an ``enum skb_drop_reason`` value, None if unknown."""
        ...

    def iface(self, netns: int, ifindex: int) -> str:
        """``name:ifindex`` (at most 16 chars), or the ifindex alone."""
        ...

    def process(self, pid: int, comm: str) -> str:
        """``exe:pid`` (at most 16 chars)."""
        ...

    def symbol(self, addr: int) -> str:
        """Nearest kernel symbol for a code address (used by --output-caller)."""
        ...

    def netns_name(self, netns: int) -> str:
        """A name for a network namespace (--output-netns-names), "" if none."""
        ...


def tcp_flags_text(flags: int) -> str:
    """pwru's TCP flag string: ``SYN|ACK`` (empty for 0)."""
    return "|".join(name for bit, name in enumerate(TCP_FLAG_NAMES) if flags & (1 << bit))


_TCP_FLAGS = tuple(tcp_flags_text(f) for f in range(256))


def _addr(tup: Tuple5, addr: str) -> str:
    return f"[{addr}]" if tup.l3_proto == ETH_P_IPV6 else addr


def tuple_text(tup: Tuple5 | None, tcp_flags: bool) -> str:
    """``10.0.0.1:1234->10.0.0.2:80(tcp)``; ``(tcp:SYN|ACK)`` with ``tcp_flags``."""
    t = tup or _NO_TUPLE
    l4 = L4_NAMES.get(t.l4_proto, "")
    if tcp_flags and t.l4_proto == IPPROTO_TCP and t.tcp_flags:
        l4 = f"{l4}:{_TCP_FLAGS[t.tcp_flags]}"
    return f"{_addr(t, t.saddr)}:{t.sport}->{_addr(t, t.daddr)}:{t.dport}({l4})"


def tuple_json(tup: Tuple5 | None, tcp_flags: bool) -> dict[str, Any]:
    """pwru's jsonTuple, empty fields left out."""
    t = tup or _NO_TUPLE
    items: list[tuple[str, Any]] = [
        ("saddr", _addr(t, t.saddr)),
        ("daddr", _addr(t, t.daddr)),
        ("sport", t.sport),
        ("dport", t.dport),
        ("proto", t.l4_proto),
        ("flags", _TCP_FLAGS[t.tcp_flags] if tcp_flags else ""),
    ]
    return {key: value for key, value in items if value}


def center(text: str, width: int) -> str:
    """pwru's centerAlignString: the odd space of padding goes to the right."""
    pad = width - len(text)
    return text if pad <= 0 else " " * (pad // 2) + text + " " * (pad - pad // 2)


def cb_words(cb: bytes) -> tuple[int, ...]:
    """What pwru shows of skb->cb: the five u32 a tc program sees as ``__sk_buff->cb[]``
    (``struct qdisc_skb_cb.data``, bytes 8..28), zeros when the record has no cb."""
    data = cb[QDISC_CB_DATA : QDISC_CB_DATA + 4 * CB_WORDS]
    return _CB_WORDS.unpack(data) if len(data) == _CB_WORDS.size else (0,) * CB_WORDS


def cb_text(cb: bytes) -> str:
    """pwru's cb column: ``[0x0000002A,0x00000000,...]`` (56 characters)."""
    return "[" + ",".join(f"0x{word:08X}" for word in cb_words(cb)) + "]"


def metadata_name(expr: str) -> str:
    """The field name pwru prints for an --output-skb-metadata expression."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)
    return words[-1] if words else expr


def hex_dump(data: bytes) -> str:
    """Go's ``hex.Dump`` (what pwru prints map keys and values with): 16 bytes a line,
    offset, hex in two groups of eight, the printable characters between bars."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        cells = []
        for i in range(16):
            cell = f"{chunk[i]:02x} " if i < len(chunk) else "   "
            cells.append(cell + (" " if i == 7 else " |" if i == 15 else ""))
        text = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in chunk)
        lines.append(f"{off:08x}  {''.join(cells)}{text}|\n")
    return "".join(lines)


def bpfmap_text(bpfmap: Bpfmap) -> str:
    """pwru's lines for a map helper's arguments (no value part when none was read)."""
    text = (
        f"map_id: {bpfmap.id}\nmap_name: {bpfmap.name}\n"
        f"key({bpfmap.key_size}):\n{hex_dump(bpfmap.key)}"
    )
    if bpfmap.value is not None:
        text += f"value({bpfmap.value_size}):\n{hex_dump(bpfmap.value)}"
    return text.rstrip("\n")


def bpfmap_json(bpfmap: Bpfmap) -> dict[str, Any]:
    """--output-bpfmap in JSON lines: key and value as hex strings."""
    found: dict[str, Any] = {
        "id": bpfmap.id,
        "name": bpfmap.name,
        "key_size": bpfmap.key_size,
        "key": bpfmap.key.hex(),
        "value_size": bpfmap.value_size,
    }
    if bpfmap.value is not None:
        found["value"] = bpfmap.value.hex()
    return found


class Renderer:
    """Turns events into lines. Keeps per-trace state (relative timestamps, widths)."""

    def __init__(
        self,
        options: Options,
        names: NameResolver,
        wall_offset_ns: int,
        metadata: Sequence[MetadataField] = (),
        xdp_metadata: Sequence[MetadataField] = (),
    ) -> None:
        self.options = options
        self.names = names
        self._ts_mode = options.timestamp
        self._wall_offset_ns = wall_offset_ns
        self._last_seen: dict[int, int] = {}
        self._wall_sec = -1
        self._wall_prefix = ""
        self._metadata_names = [metadata_name(e) for e in options.output_skb_metadata]
        # --output-skb-metadata fields as compiled (pwru.filter.skbexpr); they know their types
        self._metadata_fields = tuple(metadata)
        self._xdp_metadata_fields = tuple(xdp_metadata)  # --output-xdp-metadata
        self._tuples: dict[Tuple5 | None, str] = {}

    def header(self) -> str | None:
        """The column header line, or None when the format has none."""
        return None

    @property
    def wall_offset_ns(self) -> int:
        """realtime - monotonic, as used for --timestamp=absolute (saved with a trace)."""
        return self._wall_offset_ns

    @property
    def metadata_fields(self) -> tuple[MetadataField, ...]:
        """The --output-skb-metadata fields as compiled (saved with a trace)."""
        return self._metadata_fields

    def render(
        self,
        ev: Event,
        stack: Sequence[str] = (),
        *,
        skb_text: str = "",
        shinfo_text: str = "",
        cb: bytes = b"",
        bpfmap: Bpfmap | None = None,
    ) -> str:
        """One event as one line (no trailing newline); ``stack`` holds symbol
        names of the event's stack, innermost first, for --output-stack; ``cb`` is
        the record's skb->cb (--output-skb-cb)."""
        raise NotImplementedError

    def tuple_text(self, tup: Tuple5 | None) -> str:
        """The format's text for a tuple (cached by ``_tuple``: few flows, many events)."""
        raise NotImplementedError

    # shared pieces

    def _tuple(self, tup: Tuple5 | None) -> str:
        text = self._tuples.get(tup)
        if text is None:
            if len(self._tuples) >= _CACHE_LIMIT:
                self._tuples.clear()
            text = self._tuples[tup] = self.tuple_text(tup)
        return text

    def func_name(self, ev: Event) -> str:
        """FUNC column: probe name, drop reason or XDP verdict, (tc)/(xdp) marker."""
        name = self.names.probe_name(ev)
        if ev.flags & PWRU_EVENT_FEXIT:  # an XDP program's exit: ``reason`` is its verdict
            name += f"({XDP_VERDICTS.get(ev.reason or 0, ev.reason)})"
        elif ev.reason is not None and ev.flags & PWRU_EVENT_HAS_REASON:
            reason = self.names.drop_reason(ev.reason)
            name = f"{name}({reason})" if reason is not None else f"{name} ({ev.reason})"
        if ev.type == PWRU_EVENT_TC:
            name += "(tc)"
        elif ev.type == PWRU_EVENT_XDP:
            name += "(xdp)"
        return name

    def time_value(self, ev: Event) -> int:
        """The TIMESTAMP value of --timestamp=current (event time) or relative (since
        the skb's previous event)."""
        return self.relative_ts(ev) if self._ts_mode == "relative" else ev.ts

    def relative_ts(self, ev: Event) -> int:
        """Nanoseconds since the previous event of the same skb (0 for its first)."""
        last_seen = self._last_seen
        last = last_seen.pop(ev.skb_addr, None)  # pop + set: most recent last
        last_seen[ev.skb_addr] = ev.ts
        if len(last_seen) > _LAST_SEEN_LIMIT:
            del last_seen[next(iter(last_seen))]
        return 0 if last is None or ev.ts < last else ev.ts - last

    def absolute_ts(self, ev: Event) -> str:
        """Wall-clock time of the event, ``YYYY-MM-DDTHH:MM:SS.mmm`` (local time)."""
        wall_ns = ev.ts + self._wall_offset_ns
        sec, ns = divmod(wall_ns, 1_000_000_000)
        if sec != self._wall_sec:
            self._wall_sec = sec
            self._wall_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(sec))
        return f"{self._wall_prefix}.{ns // 1_000_000:03d}"


class TextRenderer(Renderer):
    """pwru's text columns."""

    def __init__(
        self,
        options: Options,
        names: NameResolver,
        wall_offset_ns: int,
        metadata: Sequence[MetadataField] = (),
        xdp_metadata: Sequence[MetadataField] = (),
    ) -> None:
        super().__init__(options, names, wall_offset_ns, metadata, xdp_metadata)
        self._tuple_width = 0
        self._func_width = 0
        self._ifaces: dict[tuple[int, int], str] = {}

    def header(self) -> str:
        o = self.options
        parts = []
        if o.timestamp == "absolute":
            parts.append(f"{'TIME':<23} ")
        parts.append(f"{'SKB':<18} {'CPU':<3} {'PROCESS':<16}")
        if o.timestamp != "none":
            parts.append(f" {'TIMESTAMP':<16}")
        if o.output_meta:
            parts.append(
                f" {'NETNS':<10} {'MARK/x':<8} {'IFACE'.center(16)} {'PROTO':<6} "
                f"{'MTU':<5} {'LEN':<5}"
            )
        if o.shows_cb:
            parts.append(f" {CB_HEADER:<56}")
        if o.output_netns_names:  # no space before it, as in pwru
            parts.append(center("NETNS NAME", o.netns_names_max_length))
        if o.output_tuple:
            parts.append(" TUPLE")
        parts.append(" FUNC")
        if o.output_caller:
            parts.append(" CALLER")
        if o.output_tunnel:
            parts.append(" TUNNEL")
        return "".join(parts)

    def tuple_text(self, tup: Tuple5 | None) -> str:
        return tuple_text(tup, self.options.output_tcp_flags)

    @property
    def column_widths(self) -> tuple[int, int]:
        """The TUPLE and FUNC widths so far (they only grow)."""
        return (self._tuple_width, self._func_width)

    def render(
        self,
        ev: Event,
        stack: Sequence[str] = (),
        *,
        skb_text: str = "",
        shinfo_text: str = "",
        cb: bytes = b"",
        bpfmap: Bpfmap | None = None,
    ) -> str:
        o = self.options
        parts = [self._lead(ev)]
        if o.output_meta:
            parts.append(self._meta(ev))
        if o.shows_cb:
            parts.append(" " + cb_text(cb))
        if o.output_netns_names:
            parts.append(self._netns_name(ev.netns))
        if o.output_tuple:
            tup = self._tuple(ev.tuple)
            if len(tup) > self._tuple_width:
                self._tuple_width = len(tup)
            parts.append(f" {tup:<{self._tuple_width}}")
        parts.append(self._func(ev))
        parts += self._metadata(ev)
        if o.output_stack:
            parts.extend("\n" + frame for frame in stack)
        if skb_text:
            parts.append("\n" + skb_text)
        if shinfo_text:
            parts.append("\n" + shinfo_text)
        if o.output_tunnel:
            parts.append(" " + self._tuple(ev.tunnel_tuple))
        if bpfmap is not None:
            parts.append("\n" + bpfmap_text(bpfmap))
        return "".join(parts)

    def _lead(self, ev: Event) -> str:
        """[TIME] SKB CPU PROCESS [TIMESTAMP]."""
        line = f"{ev.skb_addr:<#18x} {ev.cpu:<3} {self.names.process(ev.pid, ev.comm):<16}"
        mode = self._ts_mode
        if mode == "none":
            return line
        if mode == "absolute":
            return f"{self.absolute_ts(ev):<23} {line} {ev.ts:<16}"
        return f"{line} {self.time_value(ev):<16}"

    def _meta(self, ev: Event) -> str:
        """NETNS MARK/x IFACE PROTO MTU LEN."""
        key = (ev.netns, ev.ifindex)
        iface = self._ifaces.get(key)
        if iface is None:
            name = self.names.iface(ev.netns, ev.ifindex)
            # str.center pads like pwru's centerAlignString for an even width
            iface = name.center(16)
            if ":" in name:  # resolved; a bare ifindex may resolve later
                if len(self._ifaces) >= _CACHE_LIMIT:
                    self._ifaces.clear()
                self._ifaces[key] = iface
        return f" {ev.netns:<10} {ev.mark:<8x} {iface} {ev.protocol:#06x} {ev.mtu:<5} {ev.len:<5}"

    def _netns_name(self, netns: int) -> str:
        """NETNS NAME: the first N characters, centered in N (N = --netns-names-max-length)."""
        width = self.options.netns_names_max_length
        return center(self.names.netns_name(netns)[:width], width)

    def _func(self, ev: Event) -> str:
        """FUNC [CALLER]; FUNC widens to the longest seen when CALLER follows."""
        func = self.func_name(ev)
        if not self.options.output_caller:
            return f" {func}"
        if len(func) > self._func_width:
            self._func_width = len(func)
        return f" {func:<{self._func_width}} {self.names.symbol(ev.caller_ip)}"

    def _metadata(self, ev: Event) -> list[str]:
        """--output-skb-metadata as pwru prints it: " mark=66", typed."""
        if ev.type == PWRU_EVENT_XDP:  # no skb: the slots hold --output-xdp-metadata
            fields = self._xdp_metadata_fields
        elif self._metadata_fields:
            fields = self._metadata_fields
        else:
            return [f" {n}={v}" for n, v in zip(self._metadata_names, ev.skb_metadata)]
        return [f" {f.name}={f.format(v)}" for f, v in zip(fields, ev.skb_metadata)]


class JsonRenderer(Renderer):
    """pwru's JSON lines, and the saved-trace keys after pwru's (see pwru.output.savedtrace).

    Lines are assembled from string pieces rather than through json.dumps (about
    twice as fast); strings go through the json module's own escaping, and the
    tuple objects are encoded once per distinct tuple.
    """

    packets = True  # write captured bytes (False: a pcapng file holds its own)

    def header(self) -> str:
        """The saved-trace header: pwru's version and the options of the run."""
        return header_line(self.options, self.wall_offset_ns, self.metadata_fields)

    def tuple_text(self, tup: Tuple5 | None) -> str:
        return _dumps(tuple_json(tup, self.options.output_tcp_flags))

    def render(
        self,
        ev: Event,
        stack: Sequence[str] = (),
        *,
        skb_text: str = "",
        shinfo_text: str = "",
        cb: bytes = b"",
        bpfmap: Bpfmap | None = None,
    ) -> str:
        o = self.options
        parts = self._head(ev, shinfo_text)
        parts += self._meta(ev, cb)
        if o.output_tuple:
            parts.append(',"tuple":' + self._tuple(ev.tuple))
        if o.output_tunnel:
            parts.append(',"tunnel_tuple":' + self._tuple(ev.tunnel_tuple))
        if o.output_stack and stack:
            parts.append(',"stack":' + _json_str("".join("\n" + frame for frame in stack)))
        # pwru's key for the --output-skb dump; v1.0.12 put a lone shared info dump there
        dump = skb_text if o.output_skb else shinfo_text
        if dump:
            parts.append(',"skb_metadata":' + _json_str("\n" + dump))
        values = self._metadata_values(ev)
        if values:  # ours: pwru's JSON leaves --output-skb-metadata out
            parts.append(',"skb_metadata_values":' + _dumps(values))
        if bpfmap is not None:  # ours: pwru prints map arguments in text only
            parts.append(',"bpfmap":' + _dumps(bpfmap_json(bpfmap)))
        parts += self._saved(ev)
        parts.append("}")
        return "".join(parts)

    def _saved(self, ev: Event) -> list[str]:
        """The keys pwru lacks that a saved trace needs (pwru.output.savedtrace)."""
        parts = [
            f',"ts":{ev.ts},"pid":{ev.pid},"comm":',
            _json_str(ev.comm),
            f',"probe_type":"{EVENT_TYPE_NAMES.get(ev.type, ev.type)}"',
        ]
        if ev.reason is not None:
            parts.append(f',"reason":{ev.reason}')
        if self._metadata_names:
            parts.append(',"skb_fields":[{},{},{},{}]'.format(*ev.skb_metadata))
        packet = ev.extras.packet if ev.extras is not None else None
        if packet is not None and self.packets:
            parts.append(',"packet":' + packet_json(packet))
        return parts

    def _head(self, ev: Event, shinfo_text: str) -> list[str]:
        """skb, skb_shared_info, cpu, process, func, caller_func, time."""
        parts = [f'{{"skb":"{ev.skb_addr:#x}"']
        if shinfo_text:
            parts.append(',"skb_shared_info":' + _json_str("\n" + shinfo_text))
        if ev.cpu:
            parts.append(f',"cpu":{ev.cpu}')
        process = self.names.process(ev.pid, ev.comm)
        if process:
            parts.append(',"process":' + _json_str(process))
        parts.append(',"func":' + _json_str(self.func_name(ev)))
        if self.options.output_caller:
            caller = self.names.symbol(ev.caller_ip)
            if caller:
                parts.append(',"caller_func":' + _json_str(caller))
        if self._ts_mode == "absolute":
            parts.append(f',"time":"{self.absolute_ts(ev)}"')
        elif self._ts_mode != "none":
            parts.append(f',"time":{self.time_value(ev)}')
        return parts

    def _meta(self, ev: Event, cb: bytes) -> list[str]:
        """netns, netns_name, mark, iface, proto, mtu, len, cb (and our skb_cb); zero
        values left out, like pwru."""
        o = self.options
        parts = []
        if o.output_meta and ev.netns:
            parts.append(f',"netns":{ev.netns}')
        if o.output_netns_names:
            name = self.names.netns_name(ev.netns)
            if name:
                parts.append(',"netns_name":' + _json_str(name))
        if not o.output_meta:
            return parts
        if ev.mark:
            parts.append(f',"mark":{ev.mark}')
        iface = self.names.iface(ev.netns, ev.ifindex)
        if iface:
            parts.append(',"iface":' + _json_str(iface))
        for key, value in (("proto", ev.protocol), ("mtu", ev.mtu), ("len", ev.len)):
            if value:
                parts.append(f',"{key}":{value}')
        if o.shows_cb:
            words = ",".join(map(str, cb_words(cb)))
            parts.append(f',"cb":[{words}],"skb_cb":"{cb.hex()}"')
        return parts

    def _metadata_values(self, ev: Event) -> dict[str, int | bool | str]:
        """--output-skb-metadata values by expression: numbers for integers, true/false
        for bools, the printed text for the rest (enum names, pointers, chars)."""
        if not self._metadata_fields:
            return dict(zip(self.options.output_skb_metadata, ev.skb_metadata))
        if ev.type == PWRU_EVENT_XDP:  # XDP events carry no skb to read
            return {}
        return {f.expr: _json_value(f, v) for f, v in zip(self._metadata_fields, ev.skb_metadata)}


def _json_value(field: MetadataField, raw: int) -> int | bool | str:
    if field.kind == "int":
        return field.value(raw)
    if field.kind == "bool":
        return bool(raw)
    return field.format(raw)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A JSON string literal with quotes; non-ASCII kept as UTF-8, like Go's encoder.
_json_str: Callable[[str], str] = json.encoder.encode_basestring


def wall_clock_offset_ns() -> int:
    """realtime - monotonic, to turn bpf_ktime_get_ns() values into wall-clock time."""
    return time.time_ns() - time.monotonic_ns()


def make_renderer(
    options: Options,
    names: NameResolver,
    *,
    wall_offset_ns: int | None = None,
    metadata: Sequence[MetadataField] = (),
    xdp_metadata: Sequence[MetadataField] = (),
    packets: bool = True,
) -> Renderer:
    """The renderer for ``options`` (JSON lines with --output-json, else text).

    ``wall_offset_ns`` (realtime - monotonic) defaults to the current offset;
    ``metadata`` / ``xdp_metadata`` describe the --output-skb-metadata and
    --output-xdp-metadata slots (pwru.filter.skbexpr); ``packets``: JSON lines carry
    captured packet bytes.
    """
    offset = wall_clock_offset_ns() if wall_offset_ns is None else wall_offset_ns
    if options.output_json:
        renderer = JsonRenderer(options, names, offset, metadata, xdp_metadata)
        renderer.packets = packets
        return renderer
    return TextRenderer(options, names, offset, metadata, xdp_metadata)
