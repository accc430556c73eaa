"""Reusing rendered lines: events of a trace differ in few fields, so most lines repeat.

A packet crossing five tracepoints, or a flow of a thousand packets, gives events
that differ only in their time and skb address; everything else in the record — the
probe, process, CPU, namespace, device, lengths, tuple, drop reason, metadata — is
the same bytes again and again. For an event without extras (no stack, skb dump,
skb->cb...; packet bytes may follow when the lines do not show them), with no
timestamp column, and no sink that needs the decoded event (the pcapng writer takes
records as they are), the line is the skb address followed by a *tail* that those
bytes decide. The tail is rendered once by the normal renderer and then looked up by
the record's bytes: a slice and a dict lookup instead of decoding and formatting a
dozen fields.

What printed lines depend on besides the record stays as the renderer has it: a
widening TUPLE column (text) drops the cached tails, and names that can change
while tracing (an interface that appears later, a netns name) are re-read at least
as often as the name resolver itself re-reads them, because the cache forgets
everything every second.

``RecordCache`` (the forgetting) and ``json_tail`` (the split around "skb" and "ts")
serve the pcapng writer's block comments too (pwru.output.pcapng).
"""

from __future__ import annotations

import struct
import time
from typing import Generic, TypeVar

from pwru.bpf.abi import EVENT_SIZE
from pwru.options import Options
from pwru.output.decode import Event, RecordLayout, decode_event
from pwru.output.render import JsonRenderer, Renderer, TextRenderer

_TS_SKB = struct.Struct("=QQ")  # struct pwru_event.ts and .skb_addr, at offset 0
# after ts and skb_addr: func_ip and caller_ip (names without cookies, CALLER) .. comm
KEY_START = 16  # record bytes from here on decide a line (pcapng's pieces too)
_LIMIT = 1 << 16  # tails kept at most
_LIFETIME_S = 1.0
V = TypeVar("V")


class RecordCache(dict[bytes, V], Generic[V]):
    """What a record's bytes decide (keyed by ``data[16:...]``: no time, no skb address),
    forgotten when _LIMIT entries are held and once a second, so that names which change
    while tracing are looked up again."""

    def __init__(self) -> None:
        super().__init__()
        self._expires = time.monotonic() + _LIFETIME_S

    def put(self, key: bytes, value: V) -> None:
        if len(self) >= _LIMIT:
            self.clear()
        self[key] = value

    def expire(self) -> None:
        """Forget everything if a second has passed (called once per batch of records)."""
        now = time.monotonic()
        if now >= self._expires:
            self._expires = now + _LIFETIME_S
            self.clear()


def json_tail(line: str, event: Event) -> tuple[str, str] | None:
    """A JSON line's pieces around its skb address and "ts" value: ``line`` is
    ``{"skb":"<skb>"`` + before + ts + after; None for a line of another shape."""
    head = f'{{"skb":"{event.skb_addr:#x}"'
    ts = f',"ts":{event.ts},'
    if not line.startswith(head) or line.count(ts) != 1:
        return None
    before, after = line[len(head) :].split(ts)
    return before + ',"ts":', "," + after


class LineCache:
    """Lines for records without extras (but packet bytes): the skb address plus a cached tail."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.json = isinstance(renderer, JsonRenderer)
        # text: (tail, ""); JSON: the tail around the saved trace's "ts" value
        self._tails: RecordCache[tuple[str, str]] = RecordCache()
        self._widths = self._width_state()

    @staticmethod
    def applies(options: Options, layout: RecordLayout, renderer: Renderer) -> bool:
        """Whether lines of this run are skb address + tail (see the module docstring):
        packet bytes may follow the event, when the lines do not show them."""
        shows_packets = isinstance(renderer, JsonRenderer) and renderer.packets
        return (
            options.timestamp == "none"
            and not layout.extras_before_packet
            and not (layout.capture_bytes and shows_packets)
            and not options.output_bpfmap  # map arguments follow some records
        )

    def line(self, data: bytes) -> str:
        """The line of one record."""
        tail = self._tails.get(data[KEY_START:EVENT_SIZE])
        if tail is None:
            return self._miss(data)
        ts, skb = _TS_SKB.unpack_from(data)
        if self.json:
            return f'{{"skb":"{skb:#x}"{tail[0]}{ts}{tail[1]}'
        return f"{skb:<#18x} {tail[0]}"

    def _miss(self, data: bytes) -> str:
        event = decode_event(data, self.renderer.names)
        line = self.renderer.render(event)
        widths = self._width_state()
        if widths != self._widths:  # a column widened: every cached tail is too narrow
            self._widths = widths
            self._tails.clear()
        if self.json:
            parts = json_tail(line, event)
        else:
            head = f"{event.skb_addr:<#18x} "
            parts = (line[len(head) :], "") if line.startswith(head) else None
        if parts is not None:
            self._tails.put(data[KEY_START:EVENT_SIZE], parts)
        return line

    def expire(self) -> None:
        """Forget the tails once a second (called once per batch of records), so names
        that change while tracing are looked up again."""
        self._tails.expire()

    def _width_state(self) -> tuple[int, int]:
        if isinstance(self.renderer, TextRenderer):
            return self.renderer.column_widths
        return (0, 0)
