"""Ring-buffer records to lines on the output: decode, complete, render, count.

One ``Printer`` per run. ``on_record`` is what the ring buffer reader calls for
every record; lines are collected and written with one ``write`` per poll
(``flush``). ``--output-limit-lines`` ends the run by raising ``LimitReached``
from ``on_record`` (the reader hands it back to the poll loop).

Other consumers of the same decoded events (a drop summary, a pcapng writer, a
per-packet view) are ``Sink``s: each gets every event with its extras, and is
closed once when the run ends, after the last event.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Callable, Protocol

from pwru.errors import UsageError
from pwru.output.decode import Event, Extras, RecordLayout, decode_event, decode_extras
from pwru.output.render import Renderer
from pwru.output.stack import caller_of, shown_frames


class Sink(Protocol):
    """A consumer of every decoded event besides the line output."""

    def add(self, event: Event, extras: Extras) -> None:
        """One event (``extras`` is NO_EXTRAS when the record carries none)."""
        ...

    def close(self) -> None:
        """The run ended: write what is left (called once, after the last event)."""
        ...


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


def _with_extras(event: Event, extras: Extras) -> Event:
    """``event._replace(extras=extras)``, a third of the time (once per event)."""
    return _new_event(Event, (*event[:-1], extras))


_new_event = tuple.__new__


def check_writable(path: str, flag: str) -> None:
    """A file a sink will write (created now, before anything is loaded), if any."""
    if path:
        try:
            open(path, "ab").close()
        except OSError as error:
            raise UsageError(f"cannot write {flag} {path}: {error.strerror}") from None


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
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.renderer = renderer
        self.out = out
        self.layout = layout
        self.limit = limit  # 0 = unlimited
        self.name_at = name_at  # kernel symbol at an address, for the caller
        self.sinks = list(sinks)
        self.printed = 0
        self.pending: list[str] = []
        header = renderer.header()
        if header is not None:
            self.pending.append(header)

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.printed >= self.limit

    def on_record(self, data: bytes) -> None:
        """One ring-buffer record: decoded, completed, rendered, given to the sinks."""
        event = decode_event(data, self.renderer.names)
        if not self.layout.has_extras and not self.sinks:
            self.pending.append(self.renderer.render(event))
            self.printed += 1  # count(), inline: the hot path
            if self.full:
                raise LimitReached("output limit reached")
        else:
            self.add(*self.complete(event, data))

    def complete(self, event: Event, data: bytes) -> tuple[Event, Extras]:
        """The event with what its record carries after it, and the caller found there."""
        extras = decode_extras(data, event, self.layout)
        if self.renderer.options.output_caller:
            caller = caller_of(event, extras.frames, self.name_at)
            return event._replace(caller_ip=caller, extras=extras), extras
        return _with_extras(event, extras), extras

    def add(self, event: Event, extras: Extras) -> None:
        """One decoded event: its line, then the sinks (a saved trace read back comes
        in here). Raises LimitReached after the --output-limit-lines'th event."""
        options = self.renderer.options
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
        for sink in self.sinks:
            sink.add(event, extras)
        self.count()

    def count(self) -> None:
        self.printed += 1
        if self.full:
            raise LimitReached("output limit reached")

    def emit(self, line: str) -> None:
        """Add a line of one's own to the output (a sink's summary, say)."""
        self.pending.append(line)

    def flush(self) -> None:
        if self.pending:
            self.out.write("\n".join(self.pending) + "\n")
            self.out.flush()
            self.pending.clear()

    def close(self, flush: bool) -> None:
        """Close the sinks and the output (unless it is stdout); ``flush``: write what is
        pending first (a normal end; after an error, nothing more is written)."""
        try:
            if flush:
                self.flush()
                for sink in self.sinks:
                    sink.close()
                self.flush()
        finally:
            if self.out is not sys.stdout:
                self.out.close()
