"""The Python API without a kernel: options by keyword, like the command line's, and
saved traces read back as events."""

from __future__ import annotations

from pathlib import Path

import pytest

import pwru
from pwru.errors import UsageError
from pwru.options import Options, options_from
from tests.unit.test_readback import CONTENT, render


def test_options_by_keyword_are_the_command_lines() -> None:
    assert options_from() == Options()
    opts = options_from(
        pcap_filter="tcp port 80", output_meta=False, kmods=["a"], timestamp="current"
    )
    assert (opts.pcap_filter, opts.output_meta, opts.kmods, opts.timestamp) == (
        "tcp port 80", False, ["a"], "current",
    )  # fmt: skip
    assert options_from(filter_non_skb_funcs=["nft_do_chain"]).filter_track_skb_by_stackid


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"output_mta": True}, "did you mean output_meta"),
        ({"output_meta": "no"}, "expected bool"),
        ({"filter_mark": True}, "expected int"),
        ({"kmods": "a,b"}, "list of str"),
        ({"timestamp": "later"}, "use one of"),
        ({"backend": "ebpf"}, "use one of"),
        ({"capture_bytes": 100_000}, "capture_bytes"),
        ({"output_skb_metadata": ["mark"]}, "must start with skb"),
        ({"notes": []}, "unknown option"),
    ],
)
def test_bad_options_are_usage_errors(values: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        options_from(**values)


def test_tracer_checks_options_before_anything_is_loaded() -> None:
    with pytest.raises(UsageError):
        pwru.Tracer(output_mta=False)


def test_read_trace_yields_events(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    trace.write_text(render(["--output-json", *CONTENT]))
    events = list(pwru.read_trace(trace))
    assert len(events) == 8 and all(isinstance(e, pwru.Event) for e in events)
    first = events[0]
    assert (first.func, first.skb, first.time, first.netns) == (
        "ip_local_out", 0xFFFF888012345678, 1_000_000_000, 4026531840,
    )  # fmt: skip
    assert first.tuple is not None and first.tuple.dport == 80
    assert events[1].reason_name == "SKB_DROP_REASON_NETFILTER_DROP"
    assert first.packet is not None and first.packet.len == 98
