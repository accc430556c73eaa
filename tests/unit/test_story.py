"""pwru.diagnose.story and .verdicts: events become packets, packets get a fate."""

from __future__ import annotations

from pwru.bpf import abi
from pwru.diagnose.story import Packet, PacketTracker
from pwru.diagnose.verdicts import Fate, Hop, Step, classify, skb_fate
from pwru.output.decode import NO_EXTRAS, Event
from tests.unit.diagfakes import ICMP, KP, NETNS_A, SKB, TCP_SYN, Names, ev

CLONE = SKB + 0x800


class Stories:
    """Collects the finished packets of a tracker."""

    def __init__(self, free_traced: bool = False, clock: int = 0) -> None:
        self.done: list[Packet] = []
        self.closed = False
        self.now = clock
        self.tracker = PacketTracker(
            Names(), [self], free_traced=free_traced, clock=lambda: self.now * 1000
        )

    def feed(self, *events: Event) -> Stories:
        for event in events:
            self.tracker.add(event, NO_EXTRAS)
        return self

    def packet_done(self, packet: Packet) -> None:
        self.done.append(packet)

    def close(self) -> None:
        self.closed = True

    def names(self, i: int) -> list[str]:
        return [hop.name for hop in self.done[i].hops]


def arrive(ts: int, **kw: object) -> list[Event]:
    return [ev("netif_rx", ts, **kw), ev("netif_receive_skb", ts + 1, **kw)]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ends
def test_tracepoint_drop_ends_the_packet_and_the_address_starts_another() -> None:
    s = Stories().feed(
        *arrive(0), ev("kfree_skb", 3, reason=6),
        *arrive(10), ev("kfree_skb", 13, reason=6),
    )  # fmt: skip
    assert [p.end for p in s.done] == ["freed", "freed"]
    assert s.names(0) == s.names(1) == ["netif_rx", "netif_receive_skb", "kfree_skb"]
    assert [p.fate().fate for p in s.done] == [Fate.DROPPED] * 2
    assert s.done[0].fate().hop is s.done[0].hops[-1]


def test_kprobe_drop_waits_for_kfree_skbmem_when_it_is_traced() -> None:
    s = Stories(free_traced=True)
    s.feed(
        ev("ip_rcv", 0, kind=KP), ev("sk_skb_reason_drop", 1, kind=KP, reason=2),
        ev("skb_release_data", 2, kind=KP),
    )  # fmt: skip
    assert not s.done  # the drop of a shared skb only drops a reference
    s.feed(ev("kfree_skbmem", 3, kind=KP))
    assert len(s.done) == 1 and s.done[0].end == "freed"
    assert s.done[0].fate().fate == Fate.DROPPED


def test_a_drop_followed_by_more_path_was_not_the_fate() -> None:
    """kprobes see kfree_skb_reason on a shared skb that goes on (e.g. a packet socket's
    reference): not the packet's fate."""
    s = Stories(free_traced=True).feed(
        ev("ip_rcv", 0, kind=KP), ev("kfree_skb_reason", 1, kind=KP, reason=2),
        ev("__udp_enqueue_schedule_skb", 2, kind=KP), ev("skb_copy_datagram_iter", 3, kind=KP),
        ev("kfree_skbmem", 4, kind=KP),
    )  # fmt: skip
    assert s.done[0].fate().fate == Fate.DELIVERED


def test_without_kfree_skbmem_the_teardown_after_a_drop_is_not_a_packet() -> None:
    s = Stories(free_traced=False).feed(
        ev("ip_rcv", 0, kind=KP), ev("sk_skb_reason_drop", 1, kind=KP, reason=2),
        ev("skb_release_data", 2, kind=KP), ev("skb_free_head", 3, kind=KP),
        ev("ip_rcv", 10, kind=KP),
    )  # fmt: skip
    assert len(s.done) == 1 and s.names(0) == ["ip_rcv", "sk_skb_reason_drop"]
    s.tracker.close()
    assert s.names(1) == ["ip_rcv"] and s.done[1].end == "stop" and s.closed


def test_reused_address_after_an_unseen_free() -> None:
    """Tracepoints: a UDP read leaves no free event. The next packet at the address is
    recognised where it arrives again at the story's first place, where a socket had
    it, where it was sent and arrives on the same device, or turns into ICMP."""
    s = Stories().feed(*arrive(0), *arrive(10))
    assert len(s.done) == 1 and s.done[0].end == "reused"
    s = Stories().feed(ev("netif_rx", 0), ev("skb_copy_datagram_iovec", 5),
                       ev("net_dev_queue", 9))  # fmt: skip
    assert s.done[0].fate().fate == Fate.DELIVERED and s.done[0].end == "reused"
    s = Stories().feed(ev("net_dev_queue", 0), ev("net_dev_start_xmit", 1), ev("netif_rx", 9))
    assert s.names(0) == ["net_dev_queue", "net_dev_start_xmit"]
    assert s.done[0].fate().fate == Fate.TRANSMITTED
    s = Stories().feed(*arrive(0), ev("net_dev_queue", 5, ifindex=3), ev("icmp_send", 9, tup=ICMP))
    assert s.done[0].fate().fate == Fate.FORWARDED and s.done[0].fate().inferred


def test_an_skb_seen_only_at_its_free_is_no_packet() -> None:
    s = Stories(free_traced=True).feed(
        ev("skb_release_data", 0, kind=KP), ev("kfree_skbmem", 1, kind=KP), *arrive(5)
    )
    s.tracker.close()
    assert [s.names(i) for i in range(len(s.done))] == [["netif_rx", "netif_receive_skb"]]


def test_loopback_send_and_arrival_stay_one_packet() -> None:
    s = Stories().feed(
        ev("net_dev_queue", 0, ifindex=1), ev("net_dev_start_xmit", 1, ifindex=1),
        ev("netif_rx", 2, ifindex=1), ev("netif_receive_skb", 3, ifindex=1),
        ev("kfree_skb", 4, ifindex=1, reason=2),
    )  # fmt: skip
    assert len(s.done) == 1 and len(s.done[0].hops) == 5


def test_quiet_packets_are_handed_out_after_the_timeout() -> None:
    s = Stories(clock=0).feed(*arrive(0))
    s.tracker.tick()
    assert not s.done
    s.now = 999_000  # microseconds: 0.999 s of silence
    s.tracker.tick()
    assert not s.done
    s.now = 1_002_000
    s.tracker.tick()
    assert len(s.done) == 1 and s.done[0].end == "timeout"
    # arrived over UDP, then silence, tracepoints only: a socket took it
    assert s.done[0].fate().fate == Fate.DELIVERED and s.done[0].fate().inferred


def test_event_time_decides_while_events_flow() -> None:
    """A backlog of old events must not time out packets whose events are still queued:
    while events arrive, "now" is the newest event's time."""
    s = Stories(clock=50_000_000).feed(ev("netif_rx", 0))
    s.tracker.tick()
    assert not s.done
    s.feed(ev("netif_rx", 1_500_000, skb=SKB + 64))
    s.tracker.tick()
    assert [p.skb for p in s.done] == [SKB]


# --------------------------------------------------------------------------- clones
def test_a_clone_joins_its_original() -> None:
    s = Stories(free_traced=True).feed(
        ev("ip_output", 0, kind=KP, netns=NETNS_A),
        ev("skb_clone", 1, kind=KP, skb=CLONE, reason=SKB, flags=abi.PWRU_EVENT_CLONE),
        ev("ip_rcv", 2, kind=KP), ev("ip_rcv", 3, kind=KP, skb=CLONE, ifindex=3),
        ev("sk_skb_reason_drop", 4, kind=KP, skb=CLONE, reason=2),
        ev("kfree_skbmem", 5, kind=KP, skb=CLONE),
    )  # fmt: skip
    assert not s.done  # the original lives on
    s.feed(ev("__udp_enqueue_schedule_skb", 6, kind=KP), ev("kfree_skbmem", 7, kind=KP))
    (packet,) = s.done
    assert packet.skbs == [SKB, CLONE] and packet.parents == {CLONE: SKB}
    assert packet.fate().fate == Fate.DELIVERED
    assert packet.fate(CLONE).fate == Fate.DROPPED
    assert [h.step for h in packet.hops_of(CLONE)][0] == Step.CLONE


# --------------------------------------------------------------------------- fates
def hops(*events: Event) -> list[Hop]:
    names = Names()
    out = []
    for e in events:
        reason = names.drop_reason(e.reason) if e.reason is not None else None
        out.append(Hop(e, names.probe_name(e), classify(e, names.probe_name(e), reason), reason))
    return out


def test_fates() -> None:
    assert skb_fate(hops(*arrive(0), ev("consume_skb", 3, reason=None))).fate == Fate.CONSUMED
    consumed = hops(*arrive(0), ev("kfree_skb_reason", 3, kind=KP, reason=1))
    assert consumed[-1].step == Step.CONSUME and skb_fate(consumed).fate == Fate.CONSUMED
    sent = hops(ev("__ip_local_out", 0, kind=KP), ev("dev_hard_start_xmit", 1, kind=KP))
    assert skb_fate(sent).fate == Fate.TRANSMITTED
    routed = hops(ev("ip_rcv", 0, kind=KP), ev("ip_forward", 1, kind=KP),
                  ev("dev_hard_start_xmit", 2, kind=KP, ifindex=3))  # fmt: skip
    verdict = skb_fate(routed)
    assert verdict.fate == Fate.FORWARDED and not verdict.inferred
    # an ICMP packet that arrived and vanished is not taken as delivered (kernel answers
    # ICMP itself and frees with consume_skb): still in flight
    assert skb_fate(hops(*arrive(0, tup=ICMP))).fate == Fate.IN_FLIGHT
    # with kprobes a socket queue is seen: silence after arrival is not delivery
    assert skb_fate(hops(ev("ip_rcv", 0, kind=KP, tup=TCP_SYN))).fate == Fate.IN_FLIGHT
    xdp = ev("prog", 0, kind=abi.PWRU_EVENT_XDP, reason=1, flags=abi.PWRU_EVENT_FEXIT)
    assert classify(xdp, "prog", None) == Step.DROP
    assert classify(ev("kfree_skb", 0), "kfree_skb", None) == Step.DROP  # before 5.17
