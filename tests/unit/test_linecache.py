"""The line cache prints exactly what the renderer prints, only faster."""

from __future__ import annotations

import random

import pytest

from pwru.bpf import abi
from pwru.options import parse_options
from pwru.output.decode import RecordLayout, decode_event
from pwru.output.linecache import LineCache
from pwru.output.render import make_renderer
from tests.unit.test_decode import raw_event, set_tuple
from tests.unit.test_render import FakeNames


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


def test_applies_only_without_timestamps_extras_or_sinks() -> None:
    assert LineCache.applies(parse_options([]), RecordLayout(), with_sinks=False)
    assert not LineCache.applies(parse_options(["--timestamp=current"]), RecordLayout(), False)
    assert not LineCache.applies(parse_options([]), RecordLayout(stack_frames=8), False)
    assert not LineCache.applies(parse_options([]), RecordLayout(), with_sinks=True)


def test_tails_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = LineCache(make_renderer(parse_options([]), FakeNames(), wall_offset_ns=0))
    cached.line(records(1)[0])
    cached.expire()
    assert cached._tails  # not a second yet
    monkeypatch.setattr("pwru.output.linecache._LIFETIME_S", 0.0)
    cached._expires = 0.0
    cached.expire()
    assert not cached._tails
