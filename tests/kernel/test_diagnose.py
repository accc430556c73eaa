"""--summary and --output-per-packet end to end on this kernel (tracepoint backend).

One lab for the module: a and b on a veth pair, c behind b (b routes between them;
netlab's add_routed_host). b holds every way to die that the summary must explain:

  7301  iptables DROP in INPUT (3 datagrams)        7302  nftables `udp dport 7302 counter drop` (2)
  7303  UDP, nothing listens                         7304  TCP connect, nothing listens (reset)
  7305  a UDP socket with a tiny buffer, never read  7306  raw frame with a bad IP checksum
  7307  raw frame shorter than its IP total length   203.0.113.9  no route in b (forwarding on)
  198.51.100.77 -> b  reverse-path filter (that source lives behind veth-bc)
  7310  to c with TTL 1: expires in b while forwarding
  7308  a UDP socket in b that reads (delivered)     7309  to c: forwarded by b
  7321  b DNATs b:7321 to c:7322 in PREROUTING (the per-packet view follows it to c)

Four pwru start together: text --summary and JSON --summary --output-per-packet, both
--filter-netns b (only b's events: other machines' tests cannot disturb them), text
--output-per-packet on the same, and a --filter-track-skb per-packet run that follows
the DNAT'ed datagram from b into c. The traffic is sent once; each test asserts on the
runs' output. Raw frames come from an AF_PACKET socket in a. (The DNAT is b's, on the
way in: with tracepoints a locally sent packet is first seen at net_dev_queue, after
its OUTPUT chain has rewritten it.)
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netlab import Host, Lab, PwruRun, sh
from pwru.kernel.netns import run_in_netns

T = TypeVar("T")
P = "SKB_DROP_REASON_"
NO_ROUTE_DST = "203.0.113.9"
SPOOFED = "198.51.100.77"  # in c's subnet, sent from a: b's reverse path says veth-bc
NAT_PORT, NAT_TO_PORT = 7321, 7322
NFT_TABLE = "pwrutest"


@dataclass
class Traces:
    lab: Lab
    text: PwruRun  # --summary
    json: PwruRun  # --output-json --summary --output-per-packet
    story: PwruRun  # --output-per-packet (text)
    nat: PwruRun  # --output-per-packet --filter-track-skb, DNAT in b
    syn: str  # what the TCP connect saw
    read: int  # datagrams b's reading socket got
    summary: dict[str, Any] = field(default_factory=dict)
    packets: list[dict[str, Any]] = field(default_factory=list)
    paragraphs: list[dict[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- traffic
def in_netns(host: Host, fn: Callable[[], T]) -> T:
    return run_in_netns(host.netns_path, fn)


def udp_socket(host: Host, port: int = 0, addr: str = "", rcvbuf: int = 0) -> socket.socket:
    """A UDP socket that lives in ``host``'s namespace (bound when ``port``)."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if port or addr:
            s.bind((addr, port))
        return s

    return in_netns(host, make)


def send(host: Host, dst: str, port: int, count: int = 1, *, ttl: int = 0, src: str = "",
         size: int = 16) -> None:  # fmt: skip
    s = udp_socket(host, addr=src)
    with s:
        if ttl:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        for _ in range(count):
            s.sendto(b"x" * size, (dst, port))


def tcp_connect(host: Host, dst: str, port: int) -> str:
    def connect() -> str:
        with socket.socket() as s:
            s.settimeout(2)
            try:
                s.connect((dst, port))
                return "connected"
            except ConnectionRefusedError:
                return "refused"
            except OSError as error:
                return str(error)

    return in_netns(host, connect)


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp_frame(src_mac: bytes, dst_mac: bytes, saddr: str, daddr: str, dport: int, *,
                   bad_checksum: bool = False, claim_extra: int = 0) -> bytes:  # fmt: skip
    """Ethernet + IPv4 + UDP; ``claim_extra``: the IP total length claims more bytes
    than the frame has (a truncated packet)."""
    payload = b"pwru" * 4
    udp = struct.pack("!HHHH", 40999, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp) + claim_extra
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                         socket.inet_aton(saddr), socket.inet_aton(daddr))  # fmt: skip
    csum = checksum(header) ^ (0x5A5A if bad_checksum else 0)
    header = header[:10] + struct.pack("!H", csum) + header[12:]
    return dst_mac + src_mac + b"\x08\x00" + header + udp


def mac(host: Host, ifname: str) -> bytes:
    text = host.run("cat", f"/sys/class/net/{ifname}/address").stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def send_raw(lab: Lab, frames: list[bytes]) -> None:
    def raw() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((lab.a.ifname, 0))
            for frame in frames:
                s.send(frame)

    in_netns(lab.a, raw)


# --------------------------------------------------------------------------- the lab
def build(lab: Lab) -> None:
    a, b = lab.a, lab.b
    c = lab.add_routed_host()
    b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "7301", "-j", "DROP")
    sh("ip", "netns", "exec", b.netns, "nft", "-f", "-", input=(
        f"table inet {NFT_TABLE} {{ chain input {{ type filter hook input priority 0; "
        "udp dport 7302 counter drop; }; }\n"))  # fmt: skip
    b.run("iptables", "-t", "nat", "-A", "PREROUTING", "-p", "udp", "-d", b.ipv4,
          "--dport", str(NAT_PORT), "-j", "DNAT", "--to-destination",
          f"{c.ipv4}:{NAT_TO_PORT}")  # fmt: skip
    a.run("ip", "route", "add", "203.0.113.0/24", "via", b.ipv4)
    a.run("ip", "addr", "add", f"{SPOOFED}/32", "dev", "lo")
    for name in ("all", b.ifname):
        b.run("sysctl", "-qw", f"net.ipv4.conf.{name}.rp_filter=1")
    b.run("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")


def send_everything(lab: Lab, full: socket.socket, reader: socket.socket) -> tuple[str, int]:
    a, b = lab.a, lab.b
    assert lab.c is not None
    send(a, b.ipv4, 7301, 3)
    send(a, b.ipv4, 7302, 2)
    send(a, b.ipv4, 7303)
    syn = tcp_connect(a, b.ipv4, 7304)
    send(a, b.ipv4, 7305, 12, size=1200)
    src_mac, dst_mac = mac(a, a.ifname), mac(b, b.ifname)
    send_raw(lab, [
        ipv4_udp_frame(src_mac, dst_mac, a.ipv4, b.ipv4, 7306, bad_checksum=True),
        ipv4_udp_frame(src_mac, dst_mac, a.ipv4, b.ipv4, 7307, claim_extra=100),
    ])  # fmt: skip
    send(a, NO_ROUTE_DST, 7311)
    send(a, b.ipv4, 7312, src=SPOOFED)
    send(a, lab.c.ipv4, 7310, ttl=1)
    send(a, b.ipv4, 7308, 2)
    send(a, lab.c.ipv4, 7309)
    send(a, b.ipv4, NAT_PORT)
    reader.settimeout(2)
    read = sum(1 for _ in range(2) if reader.recv(100))
    return syn, read


def start_all(arg_sets: list[list[str]], workdir: Path) -> list[PwruRun]:
    with ThreadPoolExecutor(max_workers=len(arg_sets)) as pool:
        futures = [pool.submit(PwruRun, args, workdir, 120.0) for args in arg_sets]
        errors = [f.exception() for f in futures]
    runs = [f.result() for f in futures if f.exception() is None]
    if any(errors):
        for run in runs:
            run.stop()
        raise next(e for e in errors if e is not None)
    return runs


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traces]:
    lab = Lab.create()
    sockets: list[socket.socket] = []
    try:
        build(lab)
        full = udp_socket(lab.b, 7305, rcvbuf=1024)  # never read: fills up
        reader = udp_socket(lab.b, 7308)
        sockets += [full, reader]
        netns_b = ["--filter-netns", lab.b.netns_path]
        nat = f"udp and dst port {NAT_PORT}"
        runs = start_all(
            [
                [*netns_b, "--summary"],
                [*netns_b, "--summary", "--output-json", "--output-per-packet"],
                [*netns_b, "--output-per-packet"],
                [*netns_b, "--filter-track-skb", "--output-per-packet", nat],
            ],
            tmp_path_factory.mktemp("diagnose"),
        )  # fmt: skip
        try:
            syn, read = send_everything(lab, full, reader)
            time.sleep(0.5)
        finally:
            codes = [run.stop(signal.SIGINT, timeout=60) for run in runs]
        assert codes == [0, 0, 0, 0], [run.stderr for run in runs]
        traces = Traces(lab, *runs, syn=syn, read=read)
        parse(traces)
        yield traces
    finally:
        for s in sockets:
            s.close()
        lab.close()


# --------------------------------------------------------------------------- output
PARAGRAPH = re.compile(
    r"^#(?P<n>\d+) (?P<reason>\S+) in (?P<func>\S+), netns (?P<netns>\S+) \((?P<inode>\d+)\)"
    r"(?: on (?P<iface>\S+))?(?:, (?P<flow>\S+))?: (?P<count>\d+) packets?$"
)


def parse(tr: Traces) -> None:
    lines = tr.json.lines()
    summaries = [json.loads(ln)["summary"] for ln in lines if ln.startswith('{"summary"')]
    assert len(summaries) == 1 and lines[-1].startswith('{"summary"'), tr.json.stdout[-3000:]
    tr.summary = summaries[0]
    tr.packets = [json.loads(ln)["packet"] for ln in lines if ln.startswith('{"packet"')]
    text = tr.text.stdout.splitlines()
    start = text.index(next(ln for ln in text if ln.startswith("pwru summary: ")))
    for i, line in enumerate(text[start:], start):
        m = PARAGRAPH.match(line)
        if m:
            assert text[i + 1].startswith("   why:   ") and text[i + 2].startswith("   check: ")
            tr.paragraphs.append(
                {**m.groupdict(), "why": text[i + 1][10:], "check": text[i + 2][10:]}
            )


def drop(tr: Traces, reason: str, **tuple_fields: object) -> dict[str, Any]:
    """The JSON summary's drop group with this reason and tuple fields."""
    found = [
        d
        for d in tr.summary["drops"]
        if d["reason"] == P + reason
        and all(d.get("tuple", {}).get(k) == v for k, v in tuple_fields.items())
    ]
    assert len(found) == 1, f"{reason} {tuple_fields}: {json.dumps(tr.summary, indent=1)}"
    assert found[0]["netns"] == tr.lab.b.inode
    assert found[0]["known"] is True and found[0]["explanation"] and found[0]["hint"]
    return found[0]


def paragraph(tr: Traces, item: dict[str, Any]) -> dict[str, str]:
    """The text summary's paragraph for the same group as a JSON drop item."""
    flow = item.get("tuple", {})
    want = f"{flow.get('saddr')}:{flow.get('sport', 0)}->{flow.get('daddr')}:{flow.get('dport', 0)}"
    found = [
        p
        for p in tr.paragraphs
        if p["reason"] == item["reason"].removeprefix(P) and (p["flow"] or "").startswith(want)
    ]
    assert len(found) == 1, f"{want}: {tr.paragraphs}\n{tr.text.stdout[-4000:]}"
    p = found[0]
    assert p["netns"] == tr.lab.b.netns and int(p["inode"]) == tr.lab.b.inode, p
    assert p["func"] == item["func"] and int(p["count"]) == item["count"], (p, item)
    assert p["why"] == item["explanation"] and p["check"] == item["hint"], (p, item)
    return p


def both(tr: Traces, reason: str, **tuple_fields: object) -> dict[str, Any]:
    item = drop(tr, reason, **tuple_fields)
    paragraph(tr, item)
    return item


# --------------------------------------------------------------------------- the drops
def test_iptables_drop_names_the_rule_and_its_counter(traces: Traces) -> None:
    item = both(traces, "NETFILTER_DROP", dport=7301)
    rule = "-A INPUT -p udp -m udp --dport 7301 -j DROP"
    assert item["count"] == 3
    assert item["rules"] == [f"`{rule}` (iptables, table filter, chain INPUT)"], item
    assert "its packet counter grew by 3 during the trace" in item["hint"], item
    assert f"netns {traces.lab.b.netns}" in item["hint"]
    # the tracepoint backend has no nf_hook_slow event: the hook comes from the rule
    assert item["hook"] == "INPUT (the rule's chain)", item
    assert any("nf_hook_slow" in note for note in traces.summary["unknown"])


def test_nftables_drop_names_the_rule_and_its_counter(traces: Traces) -> None:
    item = both(traces, "NETFILTER_DROP", dport=7302)
    assert item["count"] == 2 and item["func"] == "nft_do_chain", item
    rule = f"`udp dport 7302 counter drop` (nft, table inet {NFT_TABLE}, chain input)"
    assert item["rules"] == [rule], item
    assert "its packet counter grew by 2 during the trace" in item["hint"], item


def test_udp_to_a_closed_port(traces: Traces) -> None:
    item = both(traces, "NO_SOCKET", dport=7303, proto=17)
    assert item["count"] == 1 and item["func"] == "__udp4_lib_rcv", item
    hint = item["hint"]
    assert hint.startswith(f"nothing listens on udp/7303 in netns {traces.lab.b.netns}"), hint
    assert "ICMP port unreachable" in hint and "ss -lnup 'sport = :7303'" in hint, hint


def test_tcp_to_a_closed_port_is_reset(traces: Traces) -> None:
    assert traces.syn == "refused"
    item = both(traces, "NO_SOCKET", dport=7304, proto=6)
    assert item["func"] == "tcp_v4_rcv", item
    assert item["hint"].startswith(f"nothing listens on tcp/7304 in netns {traces.lab.b.netns}")
    assert "the kernel answered with a TCP reset" in item["hint"], item


def test_socket_receive_buffer_full(traces: Traces) -> None:
    item = both(traces, "SOCKET_RCVBUFF", dport=7305)
    assert item["count"] >= 3, item  # 12 datagrams of 1200 bytes into ~2 KiB
    hint = item["hint"]
    assert hint.startswith(f"the receive buffer of the socket on udp/7305 in netns "
                           f"{traces.lab.b.netns} was full (now "), hint  # fmt: skip
    assert "reads too slowly" in hint and "ss -uamn 'sport = :7305'" in hint, hint
    drops = int(re.search(r"the socket counted (\d+) drops", hint).group(1))  # type: ignore[union-attr]
    assert drops >= item["count"], hint


def test_bad_ip_checksum_from_raw_frame(traces: Traces) -> None:
    item = both(traces, "IP_CSUM", dport=7306)
    assert item["iface"] == traces.lab.b.ifname, item
    assert f"arrived on {traces.lab.b.ifname} from {traces.lab.a.ipv4}" in item["hint"], item


def test_truncated_packet_from_raw_frame(traces: Traces) -> None:
    item = both(traces, "PKT_TOO_SMALL", dport=7307)
    assert item["iface"] == traces.lab.b.ifname, item
    assert item["hint"].startswith(
        f"malformed on the wire: it came in on {traces.lab.b.ifname} from {traces.lab.a.ipv4}"
    ), item


def test_no_route(traces: Traces) -> None:
    item = both(traces, "IP_INNOROUTES", daddr=NO_ROUTE_DST)
    b = traces.lab.b
    ask = f"ip -4 route get {NO_ROUTE_DST} from {traces.lab.a.ipv4} iif {b.ifname}"
    command = f"`ip netns exec {b.netns} {ask}`"
    assert item["hint"].startswith(
        f"no route to {NO_ROUTE_DST} in netns {b.netns}: {command} says: "
    ), item
    assert "unreachable" in item["hint"], item


def test_reverse_path_filter(traces: Traces) -> None:
    item = both(traces, "IP_RPFILTER", saddr=SPOOFED)
    b = traces.lab.b
    hint = item["hint"]
    assert hint.startswith(f"packets from {SPOOFED} came in on {b.ifname} in netns {b.netns}")
    assert f"ip route get {SPOOFED}` says: {SPOOFED} via" not in hint  # on-link, not a gateway
    assert f"says: {SPOOFED} dev veth-bc" in hint, hint
    assert f"rp_filter all=1, {b.ifname}=1" in hint, hint


def test_ttl_expired_while_forwarding(traces: Traces) -> None:
    assert traces.lab.c is not None
    item = both(traces, "IP_INHDR", daddr=traces.lab.c.ipv4, dport=7310)
    assert item["func"] == "ip_forward", item
    assert item["explanation"].startswith("Its TTL (IPv6: hop limit) ran out"), item
    assert "ICMP time exceeded" in item["hint"] and "traceroute" in item["hint"], item


# --------------------------------------------------------------------------- fates
def packets_to(tr: Traces, dport: int) -> list[dict[str, Any]]:
    return [p for p in tr.packets if p.get("tuple", {}).get("dport") == dport]


def test_delivered_and_forwarded_are_counted(traces: Traces) -> None:
    counts = traces.summary["packets"]
    assert traces.read == 2
    delivered = packets_to(traces, 7308)
    assert [p["verdict"]["fate"] for p in delivered] == ["delivered"] * 2, delivered
    # tracepoints see no UDP socket queue, and UDP reads a linear skb without
    # skb_copy_datagram_iovec: arrived, never dropped, freed or sent on = delivered
    assert all(p["verdict"].get("inferred") is True for p in delivered), delivered
    forwarded = packets_to(traces, 7309)
    assert len(forwarded) == 1 and forwarded[0]["verdict"]["fate"] == "forwarded", forwarded
    assert forwarded[0]["verdict"]["inferred"] is True
    assert counts["delivered"] >= 2 and counts["forwarded"] >= 1, counts
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total"), counts
    assert counts["total"] == len(traces.packets), counts
    dropped = sum(d["count"] for d in traces.summary["drops"])
    assert counts["dropped"] == dropped, (counts, dropped)
    text = next(ln for ln in traces.text.lines() if ln.startswith("pwru summary: "))
    assert re.fullmatch(
        r"pwru summary: \d+ packets: \d+ dropped, \d+ delivered, \d+ forwarded, "
        r"\d+ transmitted, \d+ consumed, \d+ in flight",
        text,
    ), text


# --------------------------------------------------------------------------- per packet
def test_per_packet_view_splits_a_reused_address(traces: Traces) -> None:
    """The three datagrams to 7301 may well share one skb address: still three packets,
    each ending in its own drop."""
    blocks = packets_to(traces, 7301)
    assert len(blocks) == 3, blocks
    for block in blocks:
        funcs = [h["func"] for h in block["hops"]]
        assert funcs.count("kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)") == 1, funcs
        assert funcs[-1] == "kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)", funcs
        assert block["verdict"]["fate"] == "dropped" and block["end"] == "freed", block
        assert block["verdict"]["dropped_in"] == "nft_do_chain", block
        assert block["hops"][0]["dt_ns"] == 0 and funcs[0].startswith("netif_rx"), funcs
    text = traces.story.stdout
    verdicts = re.findall(r"^  => dropped: NETFILTER_DROP in nft_do_chain, netns (\S+), "
                          r"veth-b:\d+$", text, re.M)  # fmt: skip
    assert verdicts.count(traces.lab.b.netns + ",") + verdicts.count(traces.lab.b.netns) >= 5
    assert not text.startswith("SKB"), text[:200]  # no per-event lines


def test_per_packet_view_follows_dnat(traces: Traces) -> None:
    """b DNATs b:7321 to c:7322 on the way in; pwru matches the original in b and follows
    the skb (--filter-track-skb) out to c: one block, the rewrite shown as `now ...`,
    the end in c (nothing listens there)."""
    a, b, c = traces.lab.a, traces.lab.b, traces.lab.c
    assert c is not None
    text = traces.nat.stdout
    blocks = [blk for blk in text.split("packet ")[1:] if f"->{b.ipv4}:{NAT_PORT}(udp)" in blk]
    assert len(blocks) == 1, text
    block = blocks[0]
    natted = f"now {a.ipv4}:"
    assert natted in block and f"->{c.ipv4}:{NAT_TO_PORT}(udp)" in block, block
    assert f"netns {c.netns} ({c.inode})" in block, block  # it crossed into c
    assert block.index(natted) < block.index(f"netns {c.netns}"), block
    assert re.search(r"=> dropped: NO_SOCKET in __udp4_lib_rcv, netns " + re.escape(c.netns),
                     block), block  # fmt: skip
