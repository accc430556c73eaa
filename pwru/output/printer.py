"""Ring-buffer records to lines on the output: decode, complete, render, count.

One ``Printer`` per run. ``on_record`` is what the ring buffer reader calls for
every record; lines are collected and written with one ``write`` per poll
(``flush``). ``--output-limit-lines`` ends the run by raising ``LimitReached``
from ``on_record`` (the reader hands it back to the poll loop).
"""

from __future__ import annotations

import sys
from typing import IO, Callable

from pwru.errors import UsageError
from pwru.output.decode import RecordLayout, decode_event, decode_extras
from pwru.output.render import Renderer
from pwru.output.stack import caller_of, shown_frames


class LimitReached(Exception):
    """--output-limit-lines events were printed."""


def open_output(path: str) -> IO[str]:
    """--output-file (opened before anything is loaded, so a bad path costs nothing),
    or stdout."""
    if not path:
        return sys.stdout
    try:
        return open(path, "w")  # noqa: SIM115 - the Printer's owner closes it
    except OSError as error:
        raise UsageError(f"cannot write --output-file {path}: {error.strerror}") from None


class Printer:
    """Renders every record it is given and writes the lines to ``out``."""

    def __init__(
        self,
        renderer: Renderer,
        out: IO[str],
        layout: RecordLayout,
        *,
        limit: int = 0,
        name_at: Callable[[int], str | None] = lambda _addr: None,
    ) -> None:
        self.renderer = renderer
        self.out = out
        self.layout = layout
        self.limit = limit  # 0 = unlimited
        self.name_at = name_at  # kernel symbol at an address, for the caller
        self.printed = 0
        self.pending: list[str] = []
        header = renderer.header()
        if header is not None:
            self.pending.append(header)

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.printed >= self.limit

    def on_record(self, data: bytes) -> None:
        event = decode_event(data)
        if not self.layout.has_extras:
            self.pending.append(self.renderer.render(event))
        else:
            extras = decode_extras(data, event, self.layout)
            options = self.renderer.options
            if options.output_caller:
                event = event._replace(caller_ip=caller_of(event, extras.frames, self.name_at))
            self.pending.append(
                self.renderer.render(
                    event,
                    shown_frames(extras.frames, self.renderer.names.symbol)
                    if options.output_stack
                    else (),
                    skb_text=extras.skb_text,
                    shinfo_text=extras.shinfo_text,
                )
            )
        self.printed += 1
        if self.full:
            raise LimitReached("output limit reached")

    def flush(self) -> None:
        if self.pending:
            self.out.write("\n".join(self.pending) + "\n")
            self.out.flush()
            self.pending.clear()

    def close(self, flush: bool) -> None:
        """Close the output (unless it is stdout); ``flush``: write what is pending first
        (a normal end; after an error, nothing more is written)."""
        try:
            if flush:
                self.flush()
        finally:
            if self.out is not sys.stdout:
                self.out.close()
