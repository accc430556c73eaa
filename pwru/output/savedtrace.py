"""The saved-trace format: pwru's JSON lines, a header line first, a few keys more.

``--output-json`` is what pwru saves and ``--read`` shows again, so a JSON trace holds
everything the text and JSON outputs print:

* line 1, the header: ``{"pwru_trace": {"format": 1, "version": ..., "wall_offset_ns": ...,
  "options": {...}, "skb_metadata_fields": [...]}}``: which pwru wrote it, with which
  options (those that decide what the events hold), and the offset that turns event
  times (CLOCK_MONOTONIC) into wall-clock time. No pwru event has a ``pwru_trace`` key,
  so jq filters over events skip it (``select(.func)``).
* every other line: one event with cilium/pwru's keys, in pwru's order, then the keys
  pwru lacks, last: ``ts`` (the event's monotonic time in ns, whatever --timestamp
  says), ``pid``, ``comm`` (the task's), ``probe_type`` (tracepoint, kprobe,
  kprobe-multi, tc, xdp), ``reason`` (the drop reason's number, with one),
  ``skb_fields`` (the --output-skb-metadata values as read) and ``packet`` (captured
  bytes: ``{"link": "ethernet", "len": 98, "data": "<base64>", "truncated": true}``).

A reader ignores keys it does not know, in the header and in events, so traces of a
newer pwru with more keys still read.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pwru import __version__
from pwru.bpf.abi import PWRU_LINK_ETHERNET, PWRU_LINK_NONE, PWRU_LINK_RAW_IP
from pwru.errors import UsageError
from pwru.options import Options
from pwru.output.decode import Packet

if TYPE_CHECKING:
    from pwru.filter.skbexpr import MetadataField

TRACE_KEY = "pwru_trace"
FORMAT = 1

# Options that say where a run's output went or how it ran, not what its events hold.
NOT_RECORDED = frozenset(
    (
        "version",
        "debug",
        "read",
        "ready_file",
        "notes",
        "output_file",
        "output_json",
        "output_pcap",
        "output_limit_lines",
    )
)

# Recorded options that decide what an event holds. A trace read back shows what was
# recorded; --output-meta=false and --output-tuple=false may still hide those columns.
CONTENT_OPTIONS = (
    "output_tcp_flags",
    "output_tunnel",
    "output_stack",
    "output_caller",
    "output_skb",
    "output_skb_shared_info",
    "output_skb_metadata",
)
HIDEABLE_OPTIONS = ("output_meta", "output_tuple")
# What was traced, besides the filter_* options.
TRACED_OPTIONS = (
    "pcap_filter",
    "kernel_btf",
    "kmods",
    "all_kmods",
    "backend",
    "ringbuf_size_bytes",
    "capture_bytes",
)

LINK_NAMES = {PWRU_LINK_NONE: "none", PWRU_LINK_ETHERNET: "ethernet", PWRU_LINK_RAW_IP: "raw_ip"}
LINKS = {name: value for value, name in LINK_NAMES.items()}


class TraceHeader(NamedTuple):
    """What the first line of a saved trace says."""

    version: str
    options: Options  # as recorded (only recorded fields; the rest default)
    wall_offset_ns: int  # realtime - monotonic when the trace was made
    metadata: tuple[MetadataField, ...]  # --output-skb-metadata fields, to format values


def header_line(
    options: Options, wall_offset_ns: int, metadata: Sequence[MetadataField] = ()
) -> str:
    """The first line of a JSON trace."""
    recorded = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if f.name not in NOT_RECORDED
    }
    recorded["capture_bytes"] = options.capture_size
    body = {
        "format": FORMAT,
        "version": __version__,
        "wall_offset_ns": wall_offset_ns,
        "options": recorded,
        "skb_metadata_fields": [dataclasses.asdict(f) for f in metadata],
    }
    return json.dumps({TRACE_KEY: body}, separators=(",", ":"))


def parse_header(obj: Mapping[str, Any], source: str) -> TraceHeader:
    """The header object of a trace (``source`` names the file in errors)."""
    body = obj.get(TRACE_KEY)
    if not isinstance(body, dict) or not isinstance(body.get("options"), dict):
        raise UsageError(f"{source}: not a pwru trace (its first line is no pwru_trace header)")
    if body.get("format") != FORMAT:
        raise UsageError(f"{source}: trace format {body.get('format')!r} is not {FORMAT}")
    known = {f.name for f in dataclasses.fields(Options)}
    try:
        options = Options(**{k: v for k, v in body["options"].items() if k in known})
        metadata = tuple(_metadata_field(d) for d in body.get("skb_metadata_fields", []))
        return TraceHeader(
            str(body.get("version", "")), options, int(body.get("wall_offset_ns", 0)), metadata
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise UsageError(f"{source}: damaged pwru_trace header ({error})") from None


def _metadata_field(d: Mapping[str, Any]) -> MetadataField:
    from pwru.filter.skbexpr import MetadataField

    fields = dict(d)
    fields["enumerators"] = tuple((int(v), str(n)) for v, n in fields.get("enumerators", ()))
    return MetadataField(**fields)


def reading_options(recorded: Options, asked: Options) -> Options:
    """The options a trace is shown with: what was traced and what the events hold come
    from the trace (filters, backend, content flags), how to show it from the reader's
    command line (text or JSON, timestamps, file, limit, pcap, summaries)."""
    traced = {
        f.name: getattr(recorded, f.name)
        for f in dataclasses.fields(Options)
        if f.name.startswith("filter_") or f.name in TRACED_OPTIONS or f.name in CONTENT_OPTIONS
    }
    for name in HIDEABLE_OPTIONS:
        traced[name] = getattr(recorded, name) and getattr(asked, name)
    return dataclasses.replace(asked, **traced)


def packet_json(packet: Packet) -> str:
    """The ``packet`` key's value."""
    data = base64.b64encode(packet.data).decode("ascii")
    truncated = ',"truncated":true' if packet.truncated else ""
    link = LINK_NAMES.get(packet.link, "none")
    return f'{{"link":"{link}","len":{packet.len},"data":"{data}"{truncated}}}'


def parse_packet(obj: Mapping[str, Any]) -> Packet:
    """A ``packet`` value back (ValueError/KeyError/TypeError when damaged)."""
    return Packet(
        LINKS.get(obj.get("link", "none"), PWRU_LINK_NONE),
        int(obj["len"]),
        base64.b64decode(obj["data"], validate=True),
        bool(obj.get("truncated", False)),
    )
