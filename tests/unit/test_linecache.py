"""The line cache prints exactly what the renderer prints, only faster."""

from __future__ import annotations

import io
import random

import pytest

from pwru.bpf import abi
from pwru.options import parse_options
from pwru.output.decode import Event, Extras, RecordLayout, decode_event
from pwru.output.linecache import LineCache
from pwru.output.pcapng import PcapngSink
from pwru.output.printer import Printer, StreamOutput
from pwru.output.render import make_renderer
from tests.unit.test_decode import raw_event, set_tuple
from tests.unit.test_render import FakeNames


class Collect:
    """A sink that wants decoded events."""

    def add(self, event: Event, extras: Extras) -> None:
        pass

    def close(self) -> None:
        pass


def records(n: int, seed: int = 7) -> list[bytes]:
    """Events of a few flows over a few probes, with widening tuples now and then."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ev = raw_event(
            ts=1_000_000 + i * 997,
            probe_id=rnd.randrange(4),
            skb_addr=0xFFFF888000000000 + rnd.randrange(32) * 256,
            cpu=rnd.randrange(2),
            ifindex=rnd.choice((2, 9)),
            len=rnd.choice((60, 1500)),
            flags=abi.PWRU_EVENT_HAS_TUPLE | (abi.PWRU_EVENT_HAS_REASON if i % 7 == 0 else 0),
            reason=6,
        )
        dst = "10.0.0.2" if i < n // 2 else rnd.choice(("10.0.0.2", "2001:db8::1234:5678"))
        sport = rnd.choice((80, 4000, 40000 + rnd.randrange(3)))
        set_tuple(
            ev.tuple, "10.0.0.1" if ":" not in dst else "2001:db8::1", dst, sport, 443, 6, 0x12
        )
        out.append(bytes(ev))
    return out


@pytest.mark.parametrize(
    "argv",
    [[], ["--output-tcp-flags"], ["--output-meta=false"], ["--output-json"],
     ["--output-json", "--output-tcp-flags"], ["--output-tuple=false"]],
)  # fmt: skip
def test_same_lines_as_the_renderer(argv: list[str]) -> None:
    options = parse_options(argv)
    plain = make_renderer(options, FakeNames(), wall_offset_ns=0)
    cached = LineCache(make_renderer(options, FakeNames(), wall_offset_ns=0))
    data = records(3000)
    want = [plain.render(decode_event(d)) for d in data]
    got = [cached.line(d) for d in data]
    assert got == want
    distinct = {d[16:] for d in data}  # the bytes that decide a tail
    assert len(cached._tails) <= len(distinct) < len(data) / 3  # mostly reused


def applies(argv: list[str], layout: RecordLayout, packets: bool = True) -> bool:
    options = parse_options(argv)
    return LineCache.applies(options, layout, make_renderer(options, FakeNames(), packets=packets))


def test_applies_without_timestamps_or_extras_but_unshown_packet_bytes() -> None:
    assert applies([], RecordLayout())
    assert not applies(["--timestamp=current"], RecordLayout())
    assert not applies([], RecordLayout(stack_frames=8))
    assert not applies([], RecordLayout(cb=True, capture_bytes=64))
    bpfmap = ["--output-bpfmap", "--filter-track-bpf-helpers", "--filter-trace-tc"]
    assert not applies(bpfmap, RecordLayout())
    assert applies([], RecordLayout(capture_bytes=64))  # text shows no packet bytes
    assert not applies(["--output-json"], RecordLayout(capture_bytes=64))  # JSON does
    assert applies(["--output-json"], RecordLayout(capture_bytes=64), packets=False)


def test_sinks_that_take_records_keep_the_cache() -> None:
    """A sink that needs decoded events turns the cache off; the pcapng sink does not."""
    options = parse_options(["--output-pcap", "/dev/null"])
    layout = RecordLayout(capture_bytes=options.capture_size)
    for sink, cached in ((Collect(), False), (PcapngSink.open(options, FakeNames(), "", 0), True)):
        renderer = make_renderer(options, FakeNames(), wall_offset_ns=0)
        printer = Printer(renderer, StreamOutput(io.StringIO()), layout, sinks=[sink])
        printer.use_line_cache()
        assert (printer.lines is not None) == cached
        assert len(printer.record_sinks) == cached
        sink.close()


def test_tails_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = LineCache(make_renderer(parse_options([]), FakeNames(), wall_offset_ns=0))
    cached.line(records(1)[0])
    cached.expire()
    assert cached._tails  # not a second yet
    monkeypatch.setattr("pwru.output.linecache._LIFETIME_S", 0.0)
    cached._tails._expires = 0.0
    cached.expire()
    assert not cached._tails
