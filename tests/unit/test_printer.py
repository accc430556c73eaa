"""The printer: records in, lines out, sinks fed, the line limit kept."""

from __future__ import annotations

import io
import json

import pytest

from pwru.bpf import abi
from pwru.options import parse_options
from pwru.output.decode import Event, Extras, RecordLayout
from pwru.output.printer import LimitReached, Printer, StreamOutput
from pwru.output.render import make_renderer
from tests.unit.test_decode import raw_event
from tests.unit.test_render import FakeNames


class Output(io.StringIO):
    """Keeps its text readable after the printer closes it."""

    def close(self) -> None:
        self.closed_by_printer = True


class Collect:
    """A sink that keeps what it is given and, when closed, prints a line of its own."""

    def __init__(self, printer: Printer) -> None:
        self.printer = printer
        self.events: list[tuple[Event, Extras]] = []

    def add(self, event: Event, extras: Extras) -> None:
        self.events.append((event, extras))

    def close(self) -> None:
        self.printer.emit(f"closed after {len(self.events)} events")


NO_LAYOUT = RecordLayout()


def printer(
    out: Output, *argv: str, layout: RecordLayout = NO_LAYOUT, limit: int = 0
) -> Printer:
    renderer = make_renderer(parse_options(list(argv)), FakeNames(), wall_offset_ns=0)
    return Printer(renderer, StreamOutput(out, owned=True), layout, limit=limit)


def record(**fields: object) -> bytes:
    return bytes(raw_event(**{"probe_id": 0, **fields}))


def test_lines_then_flush() -> None:
    out = Output()
    p = printer(out, "--output-meta=false", "--output-tuple=false")
    p.on_record(record(probe_id=1))
    assert out.getvalue() == ""  # written once per poll
    p.flush()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("SKB") and lines[1].endswith(" kfree_skb")
    assert p.printed == 1


def test_limit_raises_after_the_last_line() -> None:
    p = printer(Output(), limit=2)
    p.on_record(record())
    with pytest.raises(LimitReached):
        p.on_record(record())
    assert p.full and len(p.pending) == 3  # header and both lines


def test_sinks_get_every_event_and_close_after_the_lines() -> None:
    out = Output()
    p = printer(out, "--output-json", layout=RecordLayout(cb=True))
    sink = Collect(p)
    p.sinks.append(sink)
    cb = bytes(range(abi.PWRU_SKB_CB_LEN))
    for probe in (0, 1):
        p.on_record(record(probe_id=probe) + cb)
    p.close(flush=True)
    assert [ev.probe_id for ev, _ in sink.events] == [0, 1]
    assert all(extras.cb == cb for _, extras in sink.events)
    lines = out.getvalue().splitlines()
    assert "pwru_trace" in json.loads(lines[0])  # the saved-trace header
    assert [json.loads(ln)["func"] for ln in lines[1:3]] == ["ip_local_out", "kfree_skb"]
    assert lines[3:] == ["closed after 2 events"]


def test_no_sink_output_after_an_error() -> None:
    out = Output()
    p = printer(out)
    sink = Collect(p)
    p.sinks.append(sink)
    p.on_record(record())
    p.close(flush=False)
    assert sink.events and out.closed_by_printer and out.getvalue() == ""


class Ticking(Collect):
    """A sink that also wants time to pass."""

    ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_without_lines_only_the_sinks_print() -> None:
    """--output-per-packet: no header, no line per event; the events still count for the
    line limit, and a sink with tick() is called at every flush."""
    out = Output()
    renderer = make_renderer(parse_options([]), FakeNames(), wall_offset_ns=0)
    p = Printer(renderer, StreamOutput(out, owned=True), NO_LAYOUT, limit=3, lines=False)
    sink = Ticking(p)
    p.sinks.append(sink)
    p.on_record(record())
    p.on_record(record(probe_id=1))
    p.flush()
    assert out.getvalue() == "" and sink.ticks == 1 and p.printed == 2
    with pytest.raises(LimitReached):
        p.on_record(record())
    p.close(flush=True)
    assert out.getvalue() == "closed after 3 events\n" and sink.ticks == 3


def test_a_clone_birth_goes_to_the_sinks_only() -> None:
    out = Output()
    p = printer(out, "--output-json", limit=1)
    sink = Collect(p)
    p.sinks.append(sink)
    birth = record(flags=abi.PWRU_EVENT_CLONE, reason=0xFFFF888000000100, skb_addr=0x200)
    p.on_record(birth)  # not printed, not counted towards the limit
    assert p.printed == 0 and sink.events[0][0].reason == 0xFFFF888000000100
    with pytest.raises(LimitReached):
        p.on_record(record())
    p.flush()
    events = [json.loads(ln) for ln in out.getvalue().splitlines()][1:]  # after the header
    assert [e["skb"] for e in events] == ["0xffff888012345678"]
