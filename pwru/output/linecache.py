"""Reusing rendered lines: events of a trace differ in few fields, so most lines repeat.

A packet crossing five tracepoints, or a flow of a thousand packets, gives events
that differ only in their time and skb address; everything else in the record — the
probe, process, CPU, namespace, device, lengths, tuple, drop reason, metadata — is
the same bytes again and again. For an event without extras (no stack, skb dump,
packet bytes...), with no timestamp column and no sink, the line is the skb address
followed by a *tail* that those bytes decide. The tail is rendered once by the
normal renderer and then looked up by the record's bytes: a slice and a dict lookup
instead of decoding and formatting a dozen fields.

What printed lines depend on besides the record stays as the renderer has it: a
widening TUPLE column (text) drops the cached tails, and names that can change
while tracing (an interface that appears later, a netns name) are re-read at least
as often as the name resolver itself re-reads them, because the cache forgets
everything every second.
"""

from __future__ import annotations

import struct
import time

from pwru.bpf.abi import EVENT_SIZE
from pwru.options import Options
from pwru.output.decode import RecordLayout, decode_event
from pwru.output.render import JsonRenderer, Renderer, TextRenderer

_TS_SKB = struct.Struct("=QQ")  # struct pwru_event.ts and .skb_addr, at offset 0
# after ts and skb_addr: func_ip and caller_ip (names without cookies, CALLER) .. comm
_KEY_START = 16
_LIMIT = 1 << 16  # tails kept at most
_LIFETIME_S = 1.0


class LineCache:
    """Lines for records without extras: the skb address plus a cached tail."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.json = isinstance(renderer, JsonRenderer)
        # text: (tail, ""); JSON: the tail around the saved trace's "ts" value
        self._tails: dict[bytes, tuple[str, str]] = {}
        self._widths = self._width_state()
        self._expires = time.monotonic() + _LIFETIME_S

    @staticmethod
    def applies(options: Options, layout: RecordLayout, with_sinks: bool) -> bool:
        """Whether lines of this run are skb address + tail (see the module docstring)."""
        return (
            options.timestamp == "none"
            and not layout.has_extras
            and not with_sinks
            and not options.output_bpfmap  # map arguments follow some records
        )

    def line(self, data: bytes) -> str:
        """The line of one record."""
        tail = self._tails.get(data[_KEY_START:EVENT_SIZE])
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
        head = f'{{"skb":"{event.skb_addr:#x}"' if self.json else f"{event.skb_addr:<#18x} "
        if not line.startswith(head):
            return line
        tail = line[len(head) :]
        if self.json:
            ts = f',"ts":{event.ts},'
            if tail.count(ts) != 1:
                return line
            before, after = tail.split(ts)
            parts = (before + ',"ts":', "," + after)
        else:
            parts = (tail, "")
        if len(self._tails) >= _LIMIT:
            self._tails.clear()
        self._tails[data[_KEY_START:EVENT_SIZE]] = parts
        return line

    def expire(self) -> None:
        """Forget the tails once a second (called once per batch of records), so names
        that change while tracing are looked up again."""
        now = time.monotonic()
        if now >= self._expires:
            self._expires = now + _LIFETIME_S
            self._tails.clear()

    def _width_state(self) -> tuple[int, int]:
        if isinstance(self.renderer, TextRenderer):
            return self.renderer.column_widths
        return (0, 0)
