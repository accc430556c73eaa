"""Ring-buffer records to lines on the output: decode, complete, render, count.

One ``Printer`` per run. ``on_record`` is what the ring buffer reader calls for
every record; lines are collected and written with one ``write`` per poll
(``flush``). ``--output-limit-lines`` ends the run by raising ``LimitReached``
from ``on_record`` (the reader hands it back to the poll loop).

Other consumers of the same decoded events (a drop summary, a pcapng writer, a
per-packet view) are ``Sink``s: each gets every event with its extras, and is
closed once when the run ends, after the last event. A sink with a ``tick()``
(``TimedSink``) is also called once per poll, for work that depends on time.
Without ``lines`` the printer writes no line per event: the sinks print instead
(--output-per-packet). Events only sinks want (a clone's birth) get no line.

When lines come from the line cache (pwru.output.linecache) and every sink takes
records as they are (``RecordSink``: the pcapng writer, which caches its own pieces), a
record is not decoded at all unless a cache misses. Clone births and map helpers'
records, which would need decoding to be told apart, come only with a sink that is no
RecordSink (--summary, --output-per-packet) or with --output-bpfmap (no line cache).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Callable, Protocol, runtime_checkable

from pwru.bpf.abi import PWRU_EVENT_CLONE, PWRU_EVENT_HAS_BPFMAP
from pwru.errors import UsageError
from pwru.options import Options
from pwru.output.decode import Event, Extras, RecordLayout, decode_event, decode_extras
from pwru.output.linecache import LineCache
from pwru.output.render import Renderer
from pwru.output.stack import caller_of, shown_frames


class Output(Protocol):
    """Where lines go: stdout, or the rotating --output-file (output/rotate.py)."""

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write whole events (each may span lines; a newline is added to each)."""
        ...

    def close(self) -> None:
        """Release the output (stdout stays open)."""
        ...


class StreamOutput:
    """A text stream as an Output: one write and a flush per batch."""

    def __init__(self, stream: IO[str], owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned  # close the stream with the output (never stdout)

    def write_lines(self, lines: Sequence[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class Sink(Protocol):
    """A consumer of every decoded event besides the line output."""

    def add(self, event: Event, extras: Extras) -> None:
        """One event (``extras`` is NO_EXTRAS when the record carries none)."""
        ...

    def close(self) -> None:
        """The run ended: write what is left (called once, after the last event)."""
        ...


@runtime_checkable
class RecordSink(Sink, Protocol):
    """A sink that can take ring-buffer records undecoded, when nothing but packet bytes
    follows the event (RecordLayout.extras_before_packet is false)."""

    def add_record(self, data: bytes) -> None: ...


@runtime_checkable
class TimedSink(Sink, Protocol):
    """A sink that also acts on time passing (called once per poll, ~100 ms)."""

    def tick(self) -> None: ...


class LimitReached(Exception):
    """--output-limit-lines events were printed."""


def open_output(options: Options) -> Output:
    """The rotating --output-file (opened before anything is loaded, so a bad path
    costs nothing), or stdout."""
    path = options.output_file
    if not path:
        return StreamOutput(sys.stdout)
    from pwru.output.rotate import RotatingFile, Rotation  # gzip, tempfile: not for stdout

    rotation = Rotation(
        options.output_file_max_size,
        options.output_file_max_backups,
        options.output_file_max_age,
        options.output_file_compress,
    )
    try:
        return RotatingFile(path, rotation)
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
        out: Output,
        layout: RecordLayout,
        *,
        limit: int = 0,
        name_at: Callable[[int], str | None] = lambda _addr: None,
        sinks: Sequence[Sink] = (),
        lines: bool = True,
    ) -> None:
        self.renderer = renderer
        self.out = out
        self.layout = layout
        self.limit = limit  # 0 = unlimited
        self.name_at = name_at  # kernel symbol at an address, for the caller
        self.sinks = list(sinks)
        self.print_lines = lines  # a line per event (else only the sinks print)
        self.lines: LineCache | None = None  # see use_line_cache()
        self.record_sinks: list[Callable[[bytes], None]] = []  # with the line cache
        self.printed = 0
        self.pending: list[str] = []
        header = renderer.header() if lines else None
        if header is not None:
            self.pending.append(header)

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.printed >= self.limit

    def on_record(self, data: bytes) -> None:
        """One ring-buffer record: decoded, completed, rendered, given to the sinks."""
        if self.lines is not None:
            for add_record in self.record_sinks:
                add_record(data)
            self.pending.append(self.lines.line(data))
            self.count()
            return
        event = decode_event(data, self.renderer.names)
        if self.layout.has_extras or self.sinks or event.flags & PWRU_EVENT_HAS_BPFMAP:
            self.add(*self.complete(event, data))
        else:
            self.pending.append(self.renderer.render(event))
            self.count()

    def complete(self, event: Event, data: bytes) -> tuple[Event, Extras]:
        """The event with what its record carries after it, and the caller found there."""
        extras = decode_extras(data, event, self.layout)
        if self.renderer.options.output_caller:
            caller = caller_of(event, extras.frames, self.name_at)
            return event._replace(caller_ip=caller, extras=extras), extras
        return _with_extras(event, extras), extras

    def add(self, event: Event, extras: Extras) -> None:
        """One decoded event: its line (unless only the sinks print), then the sinks (a
        saved trace read back comes in here). A clone's birth goes to the sinks only and
        is not counted. Raises LimitReached after the --output-limit-lines'th event."""
        if event.flags & PWRU_EVENT_CLONE:  # for the per-packet view
            for sink in self.sinks:
                sink.add(event, extras)
            return
        if self.print_lines:
            self.pending.append(self._render(event, extras))
        for sink in self.sinks:  # the event as the kernel side sent it
            sink.add(event, extras)
        self.count()

    def _render(self, event: Event, extras: Extras) -> str:
        options = self.renderer.options
        return self.renderer.render(
            event,
            shown_frames(extras.frames, self.renderer.names.symbol) if options.output_stack else (),
            skb_text=extras.skb_text,
            shinfo_text=extras.shinfo_text,
            cb=extras.cb,
            bpfmap=extras.bpfmap,
        )

    def count(self) -> None:
        self.printed += 1
        if self.full:
            raise LimitReached("output limit reached")

    def use_line_cache(self) -> None:
        """Reuse rendered lines where the run's options allow it (pwru.output.linecache)
        and the sinks take records as they are; call once the sinks are known."""
        options = self.renderer.options
        if not self.print_lines or not LineCache.applies(options, self.layout, self.renderer):
            return
        takers = [sink for sink in self.sinks if isinstance(sink, RecordSink)]
        if len(takers) == len(self.sinks):
            self.record_sinks = [sink.add_record for sink in takers]
            self.lines = LineCache(self.renderer)

    def emit(self, line: str) -> None:
        """Add a line of one's own to the output (a sink's summary, say)."""
        self.pending.append(line)

    def flush(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, TimedSink):
                sink.tick()
        if self.pending:
            self.out.write_lines(self.pending)
            self.pending.clear()
        if self.lines is not None:
            self.lines.expire()

    def close(self, flush: bool) -> None:
        """Close the sinks and the output; ``flush``: write what is pending first (a
        normal end; after an error, nothing more is written)."""
        try:
            if flush:
                self.flush()
                for sink in self.sinks:
                    sink.close()
                self.flush()
        finally:
            self.out.close()
