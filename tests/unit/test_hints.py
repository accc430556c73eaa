"""pwru.diagnose.hints: hints built from the drops' own facts; kernels without reasons."""

from __future__ import annotations

from pwru.diagnose.checks import Checks, SocketLine, parse_proc_net, route_argv
from pwru.diagnose.hints import Context, DropCase, diagnose
from pwru.diagnose.netfilter import Attribution, parse_iptables_save
from pwru.diagnose.places import Place
from pwru.output.decode import Tuple5
from tests.unit.diagfakes import TCP_SYN, UDP

B = Place(4026532002, "/run/netns/b", "b", "ip netns exec b", False)
HOST = Place(4026531840, "/proc/self/ns/net", "host", "", True)
P = "SKB_DROP_REASON_"


class FakeChecks(Checks):
    def __init__(self, sockets: list[SocketLine] | None = None) -> None:
        self.asked: list[tuple[str, ...]] = []
        self.socket_lines = sockets or []

    def route(self, place: Place, daddr: str, saddr: str = "", iif: str = "") -> str:
        self.asked.append(("route", daddr, saddr, iif))
        return "RTNETLINK answers: Network is unreachable" if daddr.startswith("203.") else (
            f"{daddr} dev veth-bc src 198.51.100.1 uid 0")  # fmt: skip

    def sysctl(self, place: Place, name: str) -> str:
        return "1"

    def sockets(self, place: Place, proto: str, port: int, ipv6: bool) -> list[SocketLine]:
        return self.socket_lines


def case(reason: str | None, flow: Tuple5 | None = UDP, func: str = "", **kw: object) -> DropCase:
    c = DropCase(B.inode, flow, reason, func, count=3, iface="veth-b")
    for key, value in kw.items():
        setattr(c, key, value)
    return c


def test_no_socket_udp_and_tcp() -> None:
    d = diagnose(case(P + "NO_SOCKET", answered="icmp"), Context(B, FakeChecks()))
    assert d.reason == P + "NO_SOCKET" and d.known and not d.inferred
    assert d.hint.startswith(
        "nothing listens on udp/7002 in netns b (still nothing at the end of the trace); the "
        "kernel answered with ICMP port unreachable; check `ip netns exec b ss -lnup "
        "'sport = :7002'`"
    ), d.hint
    listening = FakeChecks([SocketLine(7003, "0A", 0, 0)])
    d = diagnose(case(P + "NO_SOCKET", TCP_SYN, answered="tcp reset"), Context(HOST, listening))
    assert d.hint.startswith(
        "nothing listens on tcp/7003 (something does now: it started during the trace); the "
        "kernel answered with a TCP reset; check `ss -lntp 'sport = :7003'`"
    ), d.hint
    ack = TCP_SYN._replace(tcp_flags=0x10)
    d = diagnose(case(P + "NO_SOCKET", ack), Context(B, FakeChecks()))
    assert d.hint.startswith("no TCP connection on tcp/7003 in netns b matches this segment (ACK)")


def test_receive_buffer_full_quotes_the_socket_now() -> None:
    sockets = FakeChecks([SocketLine(7002, "07", 2304, 41)])
    d = diagnose(case(P + "SOCKET_RCVBUFF"), Context(B, sockets))
    assert d.hint.startswith(
        "the receive buffer of the socket on udp/7002 in netns b was full (now 2304 bytes wait "
        "in it, the socket counted 41 drops): the application reads too slowly"
    ), d.hint


def test_netfilter_names_the_hook_and_the_rule() -> None:
    rule = parse_iptables_save("*filter\n[3:0] -A INPUT -p udp -j DROP\n")[0]
    found = Attribution(((rule, 3),), True, "the rule is X")
    ctx = Context(B, FakeChecks(), firewall=lambda c: found)
    d = diagnose(case(P + "NETFILTER_DROP", hook=(2, 1)), ctx)
    assert d.hint == "netfilter dropped it in netns b at hook ipv4 INPUT: the rule is X"
    assert d.hook == "ipv4 INPUT"
    assert d.rules == ("`-A INPUT -p udp -j DROP` (iptables, table filter, chain INPUT)",)
    d = diagnose(case(P + "NETFILTER_DROP"), ctx)  # tracepoints: the rule's chain tells
    assert d.hook == "INPUT (the rule's chain)", d
    missing = Context(B, FakeChecks(), firewall=lambda c: "cannot name the rule: none installed")
    d = diagnose(case(P + "NETFILTER_DROP"), missing)
    assert d.hint == "netfilter dropped it in netns b; cannot name the rule: none installed"


def test_routing_drops_quote_ip_route_get() -> None:
    checks = FakeChecks()
    flow = UDP._replace(daddr="203.0.113.9")
    d = diagnose(case(P + "IP_INNOROUTES", flow), Context(B, checks))
    assert checks.asked == [("route", "203.0.113.9", "192.0.2.1", "veth-b")]
    assert d.hint.startswith(
        "no route to 203.0.113.9 in netns b: `ip netns exec b ip -4 route get 203.0.113.9 from "
        "192.0.2.1 iif veth-b` says: RTNETLINK answers: Network is unreachable"
    ), d.hint
    d = diagnose(case(P + "IP_RPFILTER", UDP._replace(saddr="198.51.100.77")), Context(B, checks))
    assert "says: 198.51.100.77 dev veth-bc src" in d.hint and "rp_filter all=1, veth-b=1" in d.hint
    assert route_argv("2001:db8::1") == ["ip", "-6", "route", "get", "2001:db8::1"]


def test_ttl_expired_in_ip_forward() -> None:
    d = diagnose(case(P + "IP_INHDR", func="ip_forward", answered="icmp"), Context(B, FakeChecks()))
    assert d.explanation.startswith("Its TTL (IPv6: hop limit) ran out while it was being")
    assert "the kernel sent ICMP time exceeded back" in d.hint
    d = diagnose(case(P + "IP_INHDR", func="ip_rcv_core"), Context(B, FakeChecks()))
    assert "malformed" in d.hint and "TTL" not in d.explanation[:10]


def test_kernels_without_reasons_use_the_function() -> None:
    ctx = Context(B, FakeChecks(), firewall=lambda c: "cannot name the rule: x")
    d = diagnose(case(None, func="nf_hook_slow"), ctx)
    assert d.reason == P + "NETFILTER_DROP" and d.inferred and d.known
    assert d.hint.startswith("netfilter dropped it in netns b")
    d = diagnose(case(None, func="ip_error"), ctx)  # its own text: no single reason
    assert d.reason is None and d.known and "Routing refused" in d.explanation
    d = diagnose(case(None, func="__udp4_lib_rcv"), ctx)
    assert d.possible and d.possible[0] == P + "NO_SOCKET" and d.inferred
    assert d.hint.startswith("if it is NO_SOCKET: nothing listens on udp/7002"), d.hint
    d = diagnose(case(None, func="some_function"), ctx)
    assert not d.known and d.reason is None and "some_function" in d.explanation


def test_unknown_reasons_get_a_generic_text_with_facts() -> None:
    d = diagnose(case(P + "SOMETHING_NEW", func="ip_rcv"), Context(B, FakeChecks()))
    assert not d.known and "SOMETHING_NEW" in d.explanation and "{" not in d.hint


def test_proc_net_lines() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n"
        "  747: 020200C0:1C8A 00000000:0000 07 00000000:00000900 00:00000000 00000000     0  "
        "      0 51211 2 0000000000000000 37\n"
    )
    (line,) = parse_proc_net(text, drops=True)
    assert (line.port, line.rx_queue, line.drops, line.listening) == (7306, 0x900, 37, False)
