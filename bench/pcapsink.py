"""Microbenchmark of --output-pcap's per-event path, without a kernel.

Run: ``python3 bench/pcapsink.py [--events N] [--profile]``. To time
another pwru with the same records, run it in that checkout's directory with
``PYTHONPATH=.:THIS_CHECKOUT`` (its pwru first, this bench after).

Records are built like a UDP flood's (bench/drain.py: 64-byte payloads from netns a
dropped by iptables in b): a packet's events go through a dozen probes, and records
differ only in time, skb address, CPU, and a few packet bytes (IP id and checksum,
payload). Three paths are timed, per event (the best of --repeat runs):

* ``printer``: ``Printer.on_record`` as a run with ``--output-pcap F`` calls it: the
  text line (to /dev/null) and the pcapng sink (into memory), flushed every 256 records;
* ``record``: ``PcapngSink.add_record`` alone (what the printer hands the sink);
* ``decoded``: ``decode_event`` + ``decode_extras`` + ``PcapngSink.add`` (the path of
  events that come decoded: ``--read``, or beside the drop summary's sink).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pwru.bpf import abi
from pwru.kernel.netns import current_netns
from pwru.options import parse_options
from pwru.output.decode import RecordLayout, decode_event, decode_extras
from pwru.output.names import SystemNames
from pwru.output.pcapng import PcapngSink, PcapngWriter
from pwru.output.printer import Printer, StreamOutput
from pwru.output.render import make_renderer
from pwru.output.savedtrace import header_line

PROBES = (
    "__netif_receive_skb_core", "ip_rcv", "ip_rcv_core", "nf_hook_slow", "ip_rcv_finish",
    "ip_route_input_noref", "ip_local_deliver", "nf_hook_slow", "kfree_skb_reason",
    "skb_release_head_state", "skb_release_data", "kfree_skbmem",
)  # fmt: skip
DROP_PROBE = 8
REASONS = {6: "SKB_DROP_REASON_NETFILTER_DROP"}
FLUSH_EVERY = 256


def names() -> SystemNames:
    return SystemNames(lambda ev: PROBES[ev.probe_id], REASONS)


def udp_frame(n: int) -> bytes:
    """Ethernet + IPv4 + UDP + 64-byte payload; IP id, checksum and payload vary with n."""
    payload = struct.pack("=Q", n) * 8
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 92, n & 0xFFFF, 0x4000, 64, 17, (n * 7919) & 0xFFFF,
                     socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))  # fmt: skip
    udp = struct.pack("!HHHH", 40000, 9, 72, 0)
    return bytes(6) + b"\x02" * 6 + b"\x08\x00" + ip + udp + payload


def records(count: int, netns: int, ifindex: int) -> list[bytes]:
    """``count`` records of a UDP flood, a packet's probes in order."""
    out = []
    pid = os.getpid()
    for i in range(count):
        n, probe = divmod(i, len(PROBES))
        ev = abi.RawEvent(ts=10**12 + i * 850, skb_addr=0xFFFF888100000000 + (n % 64) * 0x100,
                          probe_id=probe, pid=pid if n % 3 else 0, cpu=n % 2,
                          type=abi.PWRU_EVENT_TRACEPOINT, stack_id=-1, netns=netns,
                          ifindex=ifindex, len=92, mtu=1500, protocol=socket.htons(0x0800),
                          comm=b"flood" if n % 3 else b"swapper/1")  # fmt: skip
        ev.flags = abi.PWRU_EVENT_HAS_TUPLE
        if probe == DROP_PROBE:
            ev.flags |= abi.PWRU_EVENT_HAS_REASON
            ev.reason = 6
        ev.tuple.saddr[:4] = list(socket.inet_aton("10.0.0.1"))
        ev.tuple.daddr[:4] = list(socket.inet_aton("10.0.0.2"))
        ev.tuple.sport, ev.tuple.dport = socket.htons(40000), socket.htons(9)
        ev.tuple.l3_proto, ev.tuple.l4_proto = 0x0800, 17
        frame = udp_frame(n)
        link = abi.PWRU_LINK_ETHERNET if probe == 0 else abi.PWRU_LINK_RAW_IP
        data = frame if link == abi.PWRU_LINK_ETHERNET else frame[14:]
        head = abi.RawPacket(len=len(data), captured=len(data), link=link, flags=0)
        out.append(bytes(ev) + bytes(head) + data)
    return out


def pcap_sink(out: io.BytesIO, resolver: SystemNames) -> PcapngSink:
    """PcapngSink.open's sink, writing into ``out``."""
    options = parse_options(["--output-pcap", "/dev/null"])
    header = header_line(options, 0)
    sink = PcapngSink.open(options, resolver, header, 0)
    sink.out.close()
    sink.out = out
    sink.writer = PcapngWriter(out, (header,))
    return sink


def printer(out: io.BytesIO) -> Printer:
    resolver = names()
    options = parse_options(["--output-pcap", "/dev/null"])
    renderer = make_renderer(options, resolver, wall_offset_ns=0)
    layout = RecordLayout(capture_bytes=options.capture_size)
    text = StreamOutput(open(os.devnull, "w"), owned=True)  # noqa: SIM115
    p = Printer(renderer, text, layout, sinks=[pcap_sink(out, resolver)])
    p.use_line_cache()
    return p


def run_printer(data: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        p = printer(io.BytesIO())
        for start in range(0, len(data), FLUSH_EVERY):
            for record in data[start : start + FLUSH_EVERY]:
                p.on_record(record)
            p.flush()

    return run


def run_record(data: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        sink = pcap_sink(io.BytesIO(), names())
        for record in data:
            sink.add_record(record)

    return run


def run_decoded(data: list[bytes]) -> Callable[[], None]:
    layout = RecordLayout(capture_bytes=1514)

    def run() -> None:
        resolver = names()
        sink = pcap_sink(io.BytesIO(), resolver)
        for record in data:
            event = decode_event(record, resolver)
            extras = decode_extras(record, event, layout)
            sink.add(event._replace(extras=extras), extras)

    return run


def best_us(run: Callable[[], None], events: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the printer path")
    args = parser.parse_args()
    data = records(args.events, current_netns(), 1)
    for name, make in (("printer", run_printer), ("record", run_record), ("decoded", run_decoded)):
        if name == "record" and not hasattr(PcapngSink, "add_record"):
            continue  # an older pwru (PYTHONPATH=its checkout:. to compare)
        us = best_us(make(data), args.events, args.repeat)
        print(f"{name:8} {us:6.2f} µs/event  ({1e6 / us:,.0f} events/s)")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run_printer(data))
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
