"""--filter-skb-expr and --output-skb-metadata in this kernel.

Three layers:

* the verifier accepts the generated bodies in every probe program (tracepoint,
  kprobe and kprobe-multi programs all load here, even where they cannot attach);
* the bodies, spliced through the product's load path (pwru.bpf.loader) into the
  tracepoint programs and attached with pwru.trace.tracepoint, see real traffic
  between two namespaces: filtered events are exactly the expected ones, and
  metadata read through pwru's BTF offsets equals what the CO-RE side reads
  into the same event (mark, len, protocol, ifindex, netns);
* the installed ``pwru`` command with the flags.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

from netlab import Host, Lab, PwruRun
from pwru.bpf import loader
from pwru.bpf.abi import Config
from pwru.bpf.libbpf import RingBuffer
from pwru.bpf.loader import LoadRequest
from pwru.filter.skbexpr import MetadataField, compile_filter_expr, compile_metadata
from pwru.kernel.btf import KernelBtf
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options
from pwru.output.decode import Event, decode_event
from pwru.trace import tracepoint
from pwru.trace.backend import TraceContext
from pwru.trace.probes import ProbeTable

FILTER_EXPRESSIONS = [
    "skb->dev->ifindex == 2",
    "skb->mark == 0x42",
    "skb->mark & 0x40",
    "skb->protocol == 0x0800",
    "skb->pkt_type == 0",
    "skb->cloned != 0",
    "skb->len > 100",
    "skb->hash >= 0xffffffff",
    "skb->dev->nd_net.net->ns.inum == 4026531840",
    "skb->dev->ifindex < -1",
    "skb->sk->__sk_common.skc_family == 10",
    "skb->tstamp > 0x100000000",
    "skb->mark == SKB_DROP_REASON_NOT_SPECIFIED",
    "skb->dev != 0",
]
METADATA_SETS = [
    ["skb->mark", "skb->len", "skb->protocol", "skb->dev->ifindex"],
    ["skb->pkt_type", "skb->sk", "skb->dev->nd_net.net->ns.inum", "skb->tstamp"],
    ["skb->hash"],
]
PROBE_PROGRAMS = [
    *(f"pwru_kp_skb{i}" for i in range(5)),
    *(f"pwru_km_skb{i}" for i in range(5)),
    "pwru_kp_kfree_reason",
    "pwru_kp_skdrop_reason",
    "pwru_km_kfree_reason",
    "pwru_km_skdrop_reason",
]


@cache
def btf() -> KernelBtf:
    return KernelBtf.load()


@cache
def tracepoint_requests() -> tuple[LoadRequest, ...]:
    """One load per tracepoint program, bound to a tracepoint that fits it."""
    first: dict[str, LoadRequest] = {}
    for tp in btf().skb_tracepoints():
        program = tracepoint.program_for(tp)
        if program is not None and program not in first:
            first[program] = LoadRequest(program, 0, tp.btf_id)
    return tuple(first.values())


@pytest.mark.parametrize(
    ("expr", "metadata"),
    [(e, METADATA_SETS[i % len(METADATA_SETS)]) for i, e in enumerate(FILTER_EXPRESSIONS)],
)
def test_every_probe_program_verifies(expr: str, metadata: list[str]) -> None:
    bodies = {
        "filter_skb_expr": compile_filter_expr(expr, btf()),
        "read_skb_metadata": compile_metadata(metadata, btf())[0],
    }
    config = Config(
        output_meta=1, output_tuple=1, output_tunnel=1, output_skb_metadata=1,
        have_skb_expr=1, track_skb=1, stack_frames=50,
    )  # fmt: skip
    requests = [*tracepoint_requests(), *(LoadRequest(p) for p in PROBE_PROGRAMS)]
    obj = loader.load(config, requests, bodies, 4096)
    try:
        for request in requests:
            assert obj.program_fd(request.program) > 0, request.program
    finally:
        obj.close()


# --------------------------------------------------------------------------
# Through pwru's load path, on real traffic (no session needed)


@contextmanager
def tracing(
    config: Config, bodies: dict[str, bytes], events: list[Event]
) -> Iterator[Callable[[], None]]:
    """Attach pwru's tracepoint programs with ``bodies`` spliced in; events are
    appended to ``events`` by the function yielded (call it after the traffic)."""
    tracepoints = tracepoint.TracepointBackend(
        TraceContext(Options(), btf(), btf(), Kallsyms.load, lambda _name: True)
    )
    obj = loader.load(config, tracepoints.plan(ProbeTable()), bodies, 1 << 22)
    ring: RingBuffer | None = None
    try:
        tracepoints.attach(obj, lambda: False)
        ring = RingBuffer(obj.events.fd, lambda data: events.append(decode_event(data)))

        def drain() -> None:
            assert ring is not None
            time.sleep(0.2)
            while ring.poll(100):
                pass

        yield drain
    finally:
        if ring is not None:
            ring.close()
        tracepoints.close()
        obj.close()


def config_for(netns: int, *, have_expr: bool = False, metadata: bool = False) -> Config:
    return Config(
        netns=netns,
        output_meta=1,
        output_tuple=1,
        have_skb_expr=int(have_expr),
        output_skb_metadata=int(metadata),
    )


def ifindex(host: Host) -> int:
    return int(host.run("cat", f"/sys/class/net/{host.ifname}/ifindex").stdout)


def test_filter_on_device(lab: Lab) -> None:
    """Traffic on veth-b and on b's loopback; the expression keeps veth-b's."""
    veth = ifindex(lab.b)

    def traffic() -> None:
        lab.a.send_udp(lab.b.ipv4, 7901, sport=42001)
        lab.b.send_udp("127.0.0.1", 7902, sport=42002)

    baseline: list[Event] = []
    with tracing(config_for(lab.b.inode), {}, baseline) as drain:
        traffic()
        drain()
    assert {1, veth} <= {ev.ifindex for ev in baseline}, baseline
    events: list[Event] = []
    body = compile_filter_expr(f"skb->dev->ifindex == {veth}", btf())
    with tracing(
        config_for(lab.b.inode, have_expr=True), {"filter_skb_expr": body}, events
    ) as drain:
        traffic()
        drain()
    assert events
    assert {ev.ifindex for ev in events} == {veth}
    sports = {ev.tuple.sport for ev in events if ev.tuple is not None}
    assert 42001 in sports and 42002 not in sports


def test_filter_on_mark(lab: Lab) -> None:
    events: list[Event] = []
    body = compile_filter_expr("skb->mark == 0x42", btf())
    with tracing(
        config_for(lab.a.inode, have_expr=True), {"filter_skb_expr": body}, events
    ) as drain:
        lab.a.send_udp(lab.b.ipv4, 7903, mark=0x42, sport=42003)
        lab.a.send_udp(lab.b.ipv4, 7903, mark=0x43, sport=42004)
        lab.a.send_udp(lab.b.ipv4, 7903, sport=42005)
        drain()
    assert events
    assert {ev.mark for ev in events} == {0x42}
    assert {ev.tuple.sport for ev in events if ev.tuple is not None} == {42003}


def test_filter_on_protocol_in_host_order(lab: Lab) -> None:
    events: list[Event] = []
    body = compile_filter_expr("skb->protocol == 0x86dd", btf())
    with tracing(
        config_for(lab.b.inode, have_expr=True), {"filter_skb_expr": body}, events
    ) as drain:
        lab.a.send_udp(lab.b.ipv4, 7904, sport=42006)
        lab.a.send_udp(lab.b.ipv6, 7904, sport=42007)
        drain()
    assert events
    assert {ev.protocol for ev in events} == {0x86DD}
    tuples = [ev.tuple for ev in events if ev.tuple is not None]
    assert {t.l3_proto for t in tuples} == {0x86DD}
    # the datagram, and b's ICMPv6 "port unreachable" about it (no ports)
    assert {t.sport for t in tuples} <= {42007, 0} and any(t.sport == 42007 for t in tuples)


def test_filter_on_a_bitfield(lab: Lab) -> None:
    """skb->pkt_type (3 bits): PACKET_BROADCAST (1) only for the broadcast datagram."""
    events: list[Event] = []
    body = compile_filter_expr("skb->pkt_type == 1", btf())
    with tracing(
        config_for(lab.b.inode, have_expr=True), {"filter_skb_expr": body}, events
    ) as drain:
        lab.a.python(
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "s.bind(('', 42008))\n"
            f"s.sendto(b'x' * 32, ({lab.b.ipv4.rsplit('.', 1)[0] + '.255'!r}, 7905))\n"
        )
        lab.a.send_udp(lab.b.ipv4, 7905, sport=42009)
        drain()
    assert events
    assert {ev.tuple.sport for ev in events if ev.tuple is not None} == {42008}


def test_metadata_agrees_with_the_event(lab: Lab) -> None:
    """Values read through pwru's BTF offsets == the CO-RE reads of the same skb."""
    exprs = ["skb->mark", "skb->len", "skb->protocol", "skb->dev->ifindex"]
    body, fields = compile_metadata(exprs, btf())
    events: list[Event] = []
    with tracing(
        config_for(lab.a.inode, metadata=True), {"read_skb_metadata": body}, events
    ) as drain:
        lab.a.send_udp(lab.b.ipv4, 7906, mark=0x42, sport=42010)
        lab.a.send_udp(lab.b.ipv6, 7906, mark=7, sport=42011, payload=100)
        drain()
    assert len(events) >= 4
    for ev in events:
        values = [f.value(v) for f, v in zip(fields, ev.skb_metadata)]
        assert values == [ev.mark, ev.len, ev.protocol, ev.ifindex], ev
    assert {ev.mark for ev in events} >= {0x42, 7}
    assert {fields[2].format(ev.skb_metadata[2]) for ev in events} >= {"0x0800", "0x86dd"}


def test_metadata_netns_and_null_device(lab: Lab) -> None:
    """skb->dev->nd_net.net->ns.inum is the event's netns where the skb has a device,
    and 0 (unreadable through a NULL dev) where it has none."""
    exprs = ["skb->dev->nd_net.net->ns.inum", "skb->dev", "skb->sk", "skb->pkt_type"]
    body, fields = compile_metadata(exprs, btf())
    events: list[Event] = []
    with tracing(
        config_for(lab.b.inode, metadata=True), {"read_skb_metadata": body}, events
    ) as drain:
        lab.a.send_udp(lab.b.ipv4, 7907, sport=42012)
        lab.b.send_udp(lab.a.ipv4, 7907, sport=42013)
        drain()
    assert events
    for ev in events:
        inum, dev, _, pkt_type = ev.skb_metadata
        if dev:
            assert inum == ev.netns == lab.b.inode, ev
        else:
            assert inum == 0 and ev.ifindex == 0, ev
        assert pkt_type in range(8)
    assert any(ev.skb_metadata[1] for ev in events)
    assert fields[1].format(events[0].skb_metadata[1]).startswith("0x")


# --------------------------------------------------------------------------
# The pwru command


def test_pwru_filter_skb_expr_device(lab: Lab, workdir: Path) -> None:
    veth = ifindex(lab.b)
    run = PwruRun(
        [
            "--output-json",
            "--filter-netns", lab.b.netns_path,
            "--filter-skb-expr", f"skb->dev->ifindex == {veth}",
        ],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7911, sport=42021)
    lab.b.send_udp("127.0.0.1", 7912, sport=42022)
    assert run.stop() == 0, run.stderr
    events = run.json_events()
    assert events, run.stderr
    assert {str(e.get("iface", "")).rsplit(":", 1)[-1] for e in events} == {str(veth)}


def test_pwru_filter_skb_expr_mark(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        [
            "--output-json",
            "--filter-netns", lab.a.netns_path,
            "--filter-skb-expr", "skb->mark == 0x42",
        ],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7913, mark=0x42, sport=42023)
    lab.a.send_udp(lab.b.ipv4, 7913, sport=42024)
    assert run.stop() == 0, run.stderr
    events = run.json_events()
    assert events, run.stderr
    assert {e.get("mark") for e in events} == {0x42}
    sports = {e["tuple"]["sport"] for e in events if isinstance(e.get("tuple"), dict)}  # type: ignore[index]
    assert sports == {42023}


def test_pwru_output_skb_metadata(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        [
            "--filter-netns", lab.a.netns_path,
            "--output-skb-metadata", "skb->mark,skb->len,skb->protocol",
            "udp and port 7914",
        ],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7914, mark=0x42, sport=42025)
    assert run.stop() == 0, run.stderr
    lines = run.lines()[1:]  # after the header
    assert lines, run.stderr
    for line in lines:
        columns = line.split()
        mark_hex, length = columns[4], columns[8]  # MARK/x and LEN
        assert line.endswith(f" mark={int(mark_hex, 16)} len={length} protocol=0x0800"), line
    assert any(" mark=66 " in line for line in lines)


def test_metadata_fields_are_typed() -> None:
    """MetadataField carries what rendering needs, for the fields of this kernel."""
    _, fields = compile_metadata(
        ["skb->mark", "skb->dev->ifindex", "skb->protocol", "skb->dev"], btf()
    )
    described: Sequence[MetadataField] = fields
    assert [(f.name, f.kind, f.signed, f.big_endian) for f in described] == [
        ("mark", "int", False, False),
        ("ifindex", "int", True, False),
        ("protocol", "int", False, True),
        ("dev", "pointer", False, False),
    ]
