"""End-to-end: tcpdump expressions restrict what pwru prints, with real traffic
between two namespaces (and a VXLAN tunnel across them)."""

from __future__ import annotations

import re
from pathlib import Path

from netlab import Lab, PwruRun

TUPLE = re.compile(r"(\S+):(\d+)->(\S+):(\d+)\((\w*)[:)]")


def tuples(lines: list[str]) -> list[tuple[str, int, str, int, str]]:
    found = []
    for line in lines[1:]:
        m = TUPLE.search(line)
        assert m, line
        found.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)))
    return found


def test_host_and_port_filter(lab: Lab, workdir: Path) -> None:
    expr = f"udp and dst host {lab.b.ipv4} and dst port 7801"
    run = PwruRun(["--filter-netns", lab.b.netns_path, expr], workdir)
    lab.a.send_udp(lab.b.ipv4, 7801, sport=41001)
    lab.a.send_udp(lab.b.ipv4, 7802, sport=41002)
    lab.a.send_udp(lab.b.ipv6, 7801, sport=41003)
    assert run.stop() == 0
    seen = tuples(run.lines())
    assert seen, run.stdout
    assert set(seen) == {(lab.a.ipv4, 41001, lab.b.ipv4, 7801, "udp")}


def test_tracepoints_filter_with_plain_loads_here(lab: Lab, workdir: Path) -> None:
    """On this kernel (6.18) the tracepoint programs run the direct-load filter bodies:
    the same packets match as through the helper path, and --debug says which path ran
    (a protochain filter keeps the helper path)."""
    expr = f"udp and dst host {lab.b.ipv4} and dst port 7811"
    run = PwruRun(["--debug", "--filter-netns", lab.b.netns_path, expr], workdir)
    lab.a.send_udp(lab.b.ipv4, 7811, sport=41011)
    lab.a.send_udp(lab.b.ipv4, 7812, sport=41012)
    assert run.stop() == 0
    assert "the pcap filter reads packets with plain loads" in run.stderr
    assert set(tuples(run.lines())) == {(lab.a.ipv4, 41011, lab.b.ipv4, 7811, "udp")}
    looping = PwruRun(["--debug", "--filter-netns", lab.b.netns_path, "ip6 protochain 17"], workdir)
    lab.a.send_udp(lab.b.ipv6, 7813, sport=41013)
    lab.a.send_udp(lab.b.ipv4, 7813, sport=41014)
    assert looping.stop() == 0
    assert "the pcap filter reads packets with bpf_probe_read_kernel" in looping.stderr
    assert {sp for _, sp, _, _, _ in tuples(looping.lines())} == {41013}, looping.stdout


def test_ipv6_net_filter(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "ip6 and src net 2001:db8:2::/64 and udp"], workdir
    )
    lab.a.send_udp(lab.b.ipv4, 7803, sport=41004)
    lab.a.send_udp(lab.b.ipv6, 7804, sport=41005)
    assert run.stop() == 0
    seen = {(s, d, dp) for s, _, d, dp, _ in tuples(run.lines())}
    assert seen == {(f"[{lab.a.ipv6}]", f"[{lab.b.ipv6}]", 7804)}, run.stdout


def test_protocol_filter(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--filter-netns", lab.b.netns_path, "icmp"], workdir)
    lab.a.send_udp(lab.b.ipv4, 7805, sport=41006)
    lab.a.python(  # an ICMP echo request through a raw socket (no ping binary needed)
        "import socket, struct\n"
        "def csum(b):\n"
        "    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff)\n"
        "    return ~(s + (s >> 16)) & 0xffff\n"
        "hdr = struct.pack('!BBHHH', 8, 0, 0, 0x77, 1) + b'pwru-test'\n"
        "pkt = hdr[:2] + struct.pack('!H', csum(hdr + b'\\0')) + hdr[4:]\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        f"s.sendto(pkt, ({lab.b.ipv4!r}, 0))\n"
    )
    assert run.stop() == 0
    seen = tuples(run.lines())
    assert seen, run.stdout
    assert {proto for *_, proto in seen} == {"icmp"}
    # the echo request arrives in b and b's reply leaves it
    assert {(s, d) for s, _, d, _, _ in seen} == {
        (lab.a.ipv4, lab.b.ipv4),
        (lab.b.ipv4, lab.a.ipv4),
    }


def test_tcp_flags_filter(lab: Lab, workdir: Path) -> None:
    expr = "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0"
    run = PwruRun(["--filter-netns", lab.b.netns_path, "--output-tcp-flags", expr], workdir)
    assert lab.a.tcp_connect(lab.b.ipv4, 7806) == "refused"  # SYN in, RST|ACK out
    assert run.stop() == 0
    lines = run.lines()[1:]
    assert lines, run.stdout
    assert all("(tcp:SYN)" in ln and f"->{lab.b.ipv4}:7806" in ln for ln in lines), run.stdout


def test_l2_only_expression_traces_arp(lab: Lab, workdir: Path) -> None:
    lab.a.run("ip", "neigh", "del", lab.b.ipv4, "dev", lab.a.ifname)  # forces an ARP exchange
    run = PwruRun(["--filter-netns", lab.b.netns_path, "--output-json", "arp"], workdir)
    lab.a.send_udp(lab.b.ipv4, 7807, sport=41007)
    assert run.stop() == 0
    events = run.json_events()
    assert events, run.stderr
    assert {e.get("proto") for e in events} == {0x0806}, events
    assert all(not isinstance(e.get("tuple"), dict) or not e["tuple"] for e in events), events


def test_legacy_flags_filter_like_the_expression(lab: Lab, workdir: Path) -> None:
    args = [
        "--filter-netns",
        lab.b.netns_path,
        "--filter-dst-port",
        "7808",
        "--filter-proto",
        "udp",
    ]
    run = PwruRun(args, workdir)
    lab.a.send_udp(lab.b.ipv4, 7808, sport=41008)
    lab.a.send_udp(lab.b.ipv4, 7809, sport=41009)
    assert run.stop() == 0
    assert {dp for *_, dp, _ in tuples(run.lines())} == {7808}
    assert "modern spelling" in run.stderr


def _vxlan(lab: Lab) -> tuple[str, str]:
    """A VXLAN tunnel (VNI 42) between a and b over the veth; returns the inner addresses."""
    inner = {lab.a.netns: "198.51.100.1", lab.b.netns: "198.51.100.2"}
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):
        here.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789",
                 "local", here.ipv4, "remote", there.ipv4)  # fmt: skip
        here.run("ip", "addr", "add", f"{inner[here.netns]}/24", "dev", "vx0")
        here.run("ip", "link", "set", "vx0", "up")
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):
        mac = there.run("cat", "/sys/class/net/vx0/address").stdout.strip()
        here.run("ip", "neigh", "replace", inner[there.netns], "lladdr", mac, "dev", "vx0",
                 "nud", "permanent")  # fmt: skip
    return inner[lab.a.netns], inner[lab.b.netns]


def test_tunnel_filter_and_inner_tuple(lab: Lab, workdir: Path) -> None:
    inner_a, inner_b = _vxlan(lab)
    args = [
        "--filter-netns", lab.b.netns_path, "--output-tunnel",
        "--filter-tunnel-pcap-l3", "udp dst port 7811",
        "udp dst port 4789",
    ]  # fmt: skip
    run = PwruRun(args, workdir)
    lab.a.send_udp(inner_b, 7811, sport=41011)
    lab.a.send_udp(inner_b, 7812, sport=41012)
    assert run.stop() == 0
    lines = run.lines()[1:]
    assert lines, run.stdout
    for line in lines:
        outer, inner = TUPLE.findall(line)
        assert outer[2:5] == (lab.b.ipv4, "4789", "udp"), line
        assert inner == (inner_a, "41011", inner_b, "7811", "udp"), line
