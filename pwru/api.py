"""The Python API: saved traces read back, and live tracing as a context manager.

``read_trace(path)`` yields the events of a file pwru wrote (``--output-json`` or
``--output-pcap``); ``Tracer(...)`` attaches on ``with`` entry, yields events while it
is iterated, and detaches on every way out of the ``with`` block. Both yield
``pwru.Event``: the event type pwru's own outputs render, with ``.func``, ``.skb``,
``.tuple``, ``.netns``, ``.reason`` / ``.reason_name``, ``.time``, ``.iface``,
``.process`` and ``.packet``. ``Tracer`` takes the command line's options as keyword
arguments (``pwru.Options`` fields: ``pcap_filter="udp port 53"``,
``filter_netns="/run/netns/a"``, ``backend="tracepoint"``...). See docs/python.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pwru.options import Options, options_from
from pwru.output.decode import Event, Extras, decode_event
from pwru.output.printer import LimitReached, Printer
from pwru.output.readback import open_trace

if TYPE_CHECKING:
    from pwru.session import Session

__all__ = ["Event", "Options", "Tracer", "read_trace"]

POLL_MS = 100


def read_trace(path: str | PathLike[str]) -> Iterator[Event]:
    """The events of a saved trace, in order (``ev.extras`` holds the stack, the
    printed skb and the packet bytes where the trace has them).

    Raises ``pwru.errors.UsageError`` when the file is not a pwru trace or is damaged.
    """
    trace = open_trace(str(path))
    try:
        for event, _extras in trace.events():
            yield event
    finally:
        trace.close()


class EventCollector(Printer):
    """The session's record consumer for the API: keeps decoded events for the caller
    (and feeds the sinks the options ask for, e.g. ``output_pcap``) instead of printing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending.clear()  # no header: nothing is printed
        self.events: list[Event] = []

    def on_record(self, data: bytes) -> None:
        event = decode_event(data, self.renderer.names)
        self.add(*self.complete(event, data))

    def add(self, event: Event, extras: Extras) -> None:
        self.events.append(event)
        for sink in self.sinks:
            sink.add(event, extras)
        self.count()

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def flush(self) -> None:
        self.pending.clear()


class Tracer:
    """Live tracing: ``with Tracer(pcap_filter="tcp port 80") as t: for ev in t: ...``.

    Entering loads and attaches pwru's programs (root, or CAP_BPF + CAP_PERFMON);
    leaving the ``with`` block detaches them, whether it ends normally, by ``break``,
    or by an exception. Iterating blocks until events come; ``poll()`` waits at most a
    given time. ``output_limit_lines=N`` ends the iteration after N events.
    """

    def __init__(self, pcap_filter: str = "", **options: Any) -> None:
        self.options: Options = options_from(pcap_filter=pcap_filter, **options)
        self._session: Session | None = None
        self._collector: EventCollector | None = None
        self.finished = False

    def __enter__(self) -> Tracer:
        from pwru.session import Session, StopFlag

        session = Session(self.options, StopFlag(), printer_class=EventCollector)
        try:
            session.setup()
        except BaseException:
            session.close(drain=False)
            raise
        assert isinstance(session.printer, EventCollector)
        self._session, self._collector = session, session.printer
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(normal=kind is None)

    def close(self, normal: bool = True) -> None:
        """Detach and unload (what ``with`` does on exit); ``normal``: also finish the
        sinks' files (an ``output_pcap``)."""
        session, self._session = self._session, None
        if session is not None:
            session.close(drain=normal)
        self.finished = True

    def poll(self, timeout_ms: int = POLL_MS) -> list[Event]:
        """The events that arrived, waiting up to ``timeout_ms`` for the first."""
        if self._session is None or self._collector is None:
            raise RuntimeError("Tracer.poll() outside its with block")
        if not self.finished:
            assert self._session.ring is not None
            try:
                self._session.ring.poll(timeout_ms)
            except LimitReached:
                self.finished = True
        return self._collector.take()

    def __iter__(self) -> Iterator[Event]:
        """Every event until the line limit (or forever): break out when done."""
        while not self.finished:
            yield from self.poll()
