"""Saved traces read back: a JSON trace (--output-json) or a pcapng file (--output-pcap)
becomes the same events, with the same names, that the run which wrote it printed.

``open_trace(path)`` reads the header and returns a ``SavedTrace``: its ``events()``
yields ``(Event, Extras)`` pairs, decoded one line at a time. The names a run looked up
in the system (functions, drop reasons, interfaces, processes, symbols) come from the
trace itself, through ``TraceNames``; the numbers pwru's JSON does not print come from
the saved-trace keys (pwru.output.savedtrace). Unknown keys are ignored, so newer traces
read. Anything else that is wrong with the file ends in one ``UsageError`` line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from pwru.bpf.abi import (
    EVENT_TYPE_NAMES,
    PWRU_EVENT_FEXIT,
    PWRU_EVENT_HAS_REASON,
    PWRU_EVENT_HAS_STACK,
    PWRU_EVENT_HAS_TUNNEL,
    PWRU_EVENT_HAS_TUPLE,
    PWRU_EVENT_TC,
    PWRU_EVENT_XDP,
    PWRU_LINK_ETHERNET,
    PWRU_LINK_RAW_IP,
)
from pwru.errors import UsageError
from pwru.output import pcapng
from pwru.output.decode import Event, Extras, Packet, Tuple5
from pwru.output.render import TCP_FLAG_NAMES
from pwru.output.savedtrace import TraceHeader, parse_header, parse_packet

EVENT_TYPES = {name: value for value, name in EVENT_TYPE_NAMES.items()}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass
class Numbered:
    """Names numbered in the order they are first seen."""

    names: list[str] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)

    def number(self, name: str) -> int:
        found = self.numbers.get(name)
        if found is None:
            found = self.numbers[name] = len(self.names)
            self.names.append(name)
        return found

    def name(self, number: int, default: str) -> str:
        return self.names[number] if 0 <= number < len(self.names) else default


@dataclass
class TraceNames:
    """Names as the trace recorded them (implements pwru.output.render.NameResolver).

    Events read back get small numbers for what the trace names (probe ids, caller
    and stack frame "addresses"); this table turns them back into the names.
    """

    probes: Numbered = field(default_factory=Numbered)
    symbols: Numbered = field(default_factory=lambda: Numbered(["0x0"], {"0x0": 0}))
    reasons: dict[int, str] = field(default_factory=dict)
    ifaces: dict[tuple[int, int], str] = field(default_factory=dict)
    processes: dict[tuple[int, str], str] = field(default_factory=dict)
    netns_names: dict[int, str] = field(default_factory=dict)

    def probe_name(self, ev: Event) -> str:
        return self.probes.name(ev.probe_id, f"probe#{ev.probe_id}")

    def drop_reason(self, value: int) -> str | None:
        return self.reasons.get(value)

    def iface(self, netns: int, ifindex: int) -> str:
        return self.ifaces.get((netns, ifindex), str(ifindex))

    def process(self, pid: int, comm: str) -> str:
        return self.processes.get((pid, comm), f"{comm}:{pid}")

    def symbol(self, addr: int) -> str:
        return self.symbols.name(addr, f"{addr:#x}")

    def netns_name(self, netns: int) -> str:
        return self.netns_names.get(netns, "")


def _tuple(obj: Any) -> Tuple5 | None:
    """A JSON tuple object back (None for ``{}``: nothing was parsed)."""
    if not obj:
        return None
    saddr, daddr = str(obj.get("saddr", "")), str(obj.get("daddr", ""))
    l3 = 0x86DD if saddr.startswith("[") else 0x0800 if saddr else 0
    flags = str(obj.get("flags", ""))
    bits = sum(1 << TCP_FLAG_NAMES.index(f) for f in flags.split("|") if f in TCP_FLAG_NAMES)
    return Tuple5(
        saddr.strip("[]"),
        daddr.strip("[]"),
        int(obj.get("sport", 0)),
        int(obj.get("dport", 0)),
        l3,
        int(obj.get("proto", 0)),
        bits,
    )


def _ifindex(iface: str) -> int:
    """pwru's IFACE text ends with the ifindex: ``veth-b:2``, ``~ry-long-name:9``, ``2``."""
    tail = iface.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _pid(process: str) -> int:
    tail = process.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class EventReader:
    """Saved-trace event objects -> (Event, Extras), filling ``names`` as it goes."""

    def __init__(self, names: TraceNames) -> None:
        self.names = names

    def event(self, d: Mapping[str, Any], packet: Packet | None = None) -> tuple[Event, Extras]:
        """One event object (``packet``: bytes from elsewhere, a pcapng block)."""
        names = self.names
        kind = EVENT_TYPES.get(str(d.get("probe_type", "")), 0)
        reason = d.get("reason")
        probe, flags = self._func(str(d["func"]), kind, reason)
        netns = int(d.get("netns", 0))
        iface = d.get("iface")
        ifindex = _ifindex(iface) if iface is not None else 0
        if iface is not None:
            names.ifaces[(netns, ifindex)] = str(iface)
        pid, comm = int(d.get("pid", _pid(str(d.get("process", ""))))), str(d.get("comm", ""))
        if "process" in d:
            names.processes[(pid, comm)] = str(d["process"])
        if "netns_name" in d:
            names.netns_names[netns] = str(d["netns_name"])
        tup, tunnel = _tuple(d.get("tuple")), _tuple(d.get("tunnel_tuple"))
        frames = [names.symbols.number(f) for f in str(d.get("stack", "")).split("\n") if f]
        flags |= (PWRU_EVENT_HAS_TUPLE if tup else 0) | (PWRU_EVENT_HAS_TUNNEL if tunnel else 0)
        flags |= PWRU_EVENT_HAS_STACK if frames else 0
        md = [int(v) for v in d.get("skb_fields", ())] + [0, 0, 0, 0]
        extras = Extras(
            frames,
            _text(d.get("skb_metadata")),
            _text(d.get("skb_shared_info")),
            packet=packet or (parse_packet(d["packet"]) if "packet" in d else None),
        )
        caller = d.get("caller_func")
        event = Event(
            int(d.get("ts", 0)), int(str(d["skb"]), 16), 0,
            names.symbols.number(str(caller)) if caller is not None else 0,
            None if reason is None else int(reason), probe, pid, int(d.get("cpu", 0)), kind,
            flags, -1, netns, int(d.get("mark", 0)), ifindex, int(d.get("len", 0)),
            int(d.get("mtu", 0)), int(d.get("proto", 0)), tup, tunnel,
            (md[0], md[1], md[2], md[3]), comm, names, extras,
        )  # fmt: skip
        return event, extras

    def _func(self, func: str, kind: int, reason: object) -> tuple[int, int]:
        """The FUNC text back into a probe id and event flags (and the reason's name)."""
        marker = {PWRU_EVENT_TC: "(tc)", PWRU_EVENT_XDP: "(xdp)"}.get(kind, "")
        if marker and func.endswith(marker):
            func = func[: -len(marker)]
        if reason is None:
            return self.names.probes.number(func), 0
        flags = PWRU_EVENT_HAS_REASON
        unnamed = f" ({reason})"
        if func.endswith(unnamed) and kind != PWRU_EVENT_XDP:
            func = func[: -len(unnamed)]
        elif func.endswith(")") and "(" in func:
            func, name = func[:-1].rsplit("(", 1)
            if kind == PWRU_EVENT_XDP:
                flags |= PWRU_EVENT_FEXIT  # reason is the program's verdict
            else:
                self.names.reasons[int(str(reason))] = name
        return self.names.probes.number(func), flags


def _text(value: Any) -> str:
    """--output-skb texts: JSON has them after a newline, the renderers without."""
    text = str(value or "")
    return text[1:] if text.startswith("\n") else text


@dataclass
class SavedTrace:
    """A trace file opened for reading: its header, and its events on demand."""

    path: str
    header: TraceHeader
    names: TraceNames
    source: IO[Any]
    kind: str  # "json" or "pcapng"
    blocks: Iterator[pcapng.Block] | None = None

    def events(self) -> Iterator[tuple[Event, Extras]]:
        """Every event, in the order the trace has them."""
        try:
            if self.kind == "json":
                yield from self._json_events()
            else:
                yield from self._pcapng_events()
        finally:
            self.source.close()

    def _json_events(self) -> Iterator[tuple[Event, Extras]]:
        reader = EventReader(self.names)
        for number, line in enumerate(self.source, start=2):
            if line.strip():
                yield _decoded(reader, _object(line, self.path, number), None, self.path, number)

    def _pcapng_events(self) -> Iterator[tuple[Event, Extras]]:
        assert self.blocks is not None
        reader = EventReader(self.names)
        links: list[int] = []
        for number, block in enumerate(self.blocks, start=2):
            if block.kind == pcapng.IDB:
                links.append(block.link_type)
            elif block.kind == pcapng.EPB:
                obj, packet = _pcapng_event(block, links, self.path, number)
                yield _decoded(reader, obj, packet, self.path, number)

    def close(self) -> None:
        self.source.close()


def _decoded(
    reader: EventReader, obj: Mapping[str, Any], packet: Packet | None, path: str, number: int
) -> tuple[Event, Extras]:
    try:
        return reader.event(obj, packet)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise UsageError(
            f"{path}: event {number} is damaged ({type(error).__name__}: {error})"
        ) from None


def _object(text: str, path: str, number: int) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError:
        raise UsageError(f"{path}: line {number} is not JSON (a truncated trace?)") from None
    if not isinstance(obj, dict) or "skb" not in obj or "func" not in obj:
        raise UsageError(f"{path}: line {number} is not a pwru event")
    return obj


def _pcapng_event(
    block: pcapng.Block, links: list[int], path: str, number: int
) -> tuple[dict[str, Any], Packet]:
    """A packet block's saved-trace event (its second comment) and its bytes."""
    lines = [c for c in block.comments if c.startswith("{")]
    if not lines:
        raise UsageError(f"{path}: packet block {number} has no pwru event (not a pwru pcapng?)")
    link_type = links[block.interface] if block.interface < len(links) else 0
    link = {pcapng.LINKTYPE_ETHERNET: PWRU_LINK_ETHERNET, pcapng.LINKTYPE_RAW: PWRU_LINK_RAW_IP}
    truncated = any(pcapng.MISSING in c for c in block.comments)
    packet = Packet(
        link.get(link_type, 0) if block.length else 0, block.length, block.data, truncated
    )
    return _object(lines[0], path, number), packet


def open_trace(path: str) -> SavedTrace:
    """Open a saved trace and read its header (UsageError: not one, or damaged)."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(4)
        if magic == PCAPNG_MAGIC:
            return _open_pcapng(path, open(path, "rb"))  # noqa: SIM115 - SavedTrace closes it
        return _open_json(path, open(path, encoding="utf-8", errors="replace"))  # noqa: SIM115
    except OSError as error:
        raise UsageError(f"cannot read --read {path}: {error.strerror}") from None


def _open_json(path: str, source: IO[str]) -> SavedTrace:
    try:
        first = source.readline()
        header = json.loads(first) if first.strip() else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        source.close()
        raise UsageError(f"{path}: not a pwru trace (neither a JSON trace nor a pcapng file)")
    try:
        return SavedTrace(path, parse_header(header, path), TraceNames(), source, "json")
    except UsageError:
        source.close()
        raise


def _open_pcapng(path: str, source: BinaryIO) -> SavedTrace:
    try:
        blocks = pcapng.read_blocks(source, path)
        section = next(blocks)
        headers = [c for c in section.comments if c.startswith('{"pwru_trace"')]
        if not headers:
            raise UsageError(
                f"{path}: a pcapng file, but not one pwru wrote (no pwru_trace header)"
            )
        header = parse_header(_object_any(headers[0], path), path)
    except BaseException:
        source.close()
        raise
    return SavedTrace(path, header, TraceNames(), source, "pcapng", blocks)


def _object_any(text: str, path: str) -> Mapping[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError:
        raise UsageError(f"{path}: damaged pwru_trace header") from None
    return obj if isinstance(obj, dict) else {}
