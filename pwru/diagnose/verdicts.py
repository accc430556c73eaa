"""What each event means for a packet's fate, and the fate of a whole skb life.

``classify`` gives every event a ``Step``: the kind of place the packet reached
(received, forwarded, sent on a device, queued to or read by a socket, dropped,
consumed, freed). ``skb_fate`` reads an skb's steps, in order, into a ``Verdict``:

* dropped: a drop event (kfree_skb tracepoint; kfree_skb_reason / sk_skb_reason_drop,
  or kfree_skb before 5.17, with kprobes; an XDP program's XDP_DROP/XDP_ABORTED) after
  which nothing but the freeing of the skb happens. A drop followed by more of the
  packet's path only released a reference (a shared skb) and is not its fate.
* delivered: the last milestone is a socket taking or reading it (UDP/TCP/raw receive
  queues with kprobes; skb_copy_datagram_iovec and tcp_probe with tracepoints). With
  tracepoints only, a UDP/TCP packet that arrived and then vanished without a drop, a
  free or a transmit is taken as delivered (inferred): a socket's receive queue, and
  UDP's read of a linear skb (copy_linear_skb, then a free without a tracepoint), have
  no tracepoint.
* forwarded: routed (ip_forward, ip6_forward) or bridged (br_forward), or, where those
  functions are not seen (tracepoints), received on one device and sent on another in
  the same network namespace; and not seen after that.
* transmitted: the last milestone is a device transmit (dev_hard_start_xmit,
  net_dev_xmit, ...): it left through a device pwru does not see beyond.
* consumed: freed normally without reaching a socket (an ICMP echo answered, a TCP
  control segment handled, a copy released).
* in flight: none of these yet when the trace ended.

The tables are function and tracepoint names of Linux 5.10 to 7.x; a name that is in
none of them is a plain step on the path.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pwru.bpf.abi import (
    PWRU_EVENT_CLONE,
    PWRU_EVENT_FEXIT,
    PWRU_EVENT_HAS_HOOK,
    PWRU_EVENT_HAS_REASON,
    PWRU_EVENT_TRACEPOINT,
    PWRU_EVENT_XDP,
)
from pwru.output.decode import Event

CONSUMED = "SKB_CONSUMED"
XDP_DROPS = {0: "XDP_ABORTED", 1: "XDP_DROP"}
XDP_PASS, XDP_TX, XDP_REDIRECT = 2, 3, 4


class Step(enum.Enum):
    """What an event says about the packet."""

    PATH = "path"  # one more function on its way
    RECEIVE = "receive"  # arrived on a device
    FORWARD = "forward"  # routed or bridged onwards
    TRANSMIT = "transmit"  # handed to a device for sending
    DELIVER = "deliver"  # a socket took it (queued or read)
    DROP = "drop"
    CONSUME = "consume"  # freed after normal use
    TEARDOWN = "teardown"  # parts of the skb released
    FREE = "free"  # kfree_skbmem: the skb's memory is gone
    CLONE = "clone"  # a clone was born (the event is the new skb's)


DELIVER_FUNCS = frozenset(
    (
        "__udp_enqueue_schedule_skb",
        "__udpv6_queue_rcv_skb",
        "sock_queue_rcv_skb_reason",
        "__sock_queue_rcv_skb",
        "sock_queue_rcv_skb",
        "tcp_queue_rcv",
        "tcp_data_queue",
        "tcp_rcv_established",
        "tcp_rcv_state_process",
        "tcp_child_process",
        "skb_copy_datagram_iter",
        "raw_rcv",
        "raw_rcv_skb",
        "rawv6_rcv",
        "ping_queue_rcv_skb",
        # tracepoints
        "skb_copy_datagram_iovec",  # a socket's reader copied it out
        "tcp_probe",  # tcp_rcv_established: a TCP socket took it
    )
)
FORWARD_FUNCS = frozenset(
    (
        "ip_forward",
        "ip_forward_finish",
        "ip6_forward",
        "ip6_forward_finish",
        "br_forward",
        "__br_forward",
        "br_forward_finish",
    )
)
TRANSMIT_FUNCS = frozenset(
    (
        "dev_hard_start_xmit",
        "xmit_one",
        "__dev_queue_xmit",
        "dev_queue_xmit",
        "veth_xmit",
        # tracepoints (not net_dev_xmit: it fires after the device took the skb, when a
        # veth has already handed it to its peer)
        "net_dev_queue",
        "net_dev_start_xmit",
    )
)
RECEIVE_PREFIXES = (
    "netif_receive_skb",
    "__netif_receive_skb",
    "netif_rx",
    "__netif_rx",
    "napi_gro_receive",
    "napi_gro_frags",
)
CONSUME_FUNCS = frozenset(
    ("consume_skb", "napi_consume_skb", "__consume_stateless_skb", "skb_consume_udp")
)
DROP_FUNCS = frozenset(("kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop"))
TEARDOWN_PREFIXES = (
    "skb_release",
    "skb_free",
    "__kfree_skb",
    "kfree_skb_list",
    "kfree_skb_partial",
    "skb_attempt_defer_free",
    "napi_skb_free",
    "sock_rfree",
    "sock_wfree",
    "__sock_wfree",
    "tcp_wfree",
    "skb_orphan",
    "skb_dst_drop",
    "__skb_ext_put",
    "skb_zcopy_clear",
)
FREE_FUNC = "kfree_skbmem"


class Hop(NamedTuple):
    """One event of a packet, with what it means."""

    event: Event
    name: str  # probe name: function or tracepoint
    step: Step
    reason: str | None  # drop reason name (or XDP verdict) of a DROP/CONSUME step
    frames: tuple[int, ...] = ()  # stack frames, kept for drops only


def classify(ev: Event, name: str, reason: str | None) -> Step:
    """The Step of one event; ``reason`` is its drop reason's name, if it has one."""
    flags = ev.flags
    if flags & PWRU_EVENT_CLONE:
        return Step.CLONE
    if ev.type == PWRU_EVENT_XDP:
        return _xdp_step(ev)
    if flags & PWRU_EVENT_HAS_REASON:
        return Step.CONSUME if reason == CONSUMED else Step.DROP
    if name in DROP_FUNCS:
        return Step.DROP  # kfree_skb without a reason: kernels before 5.17
    return _plain_step(name)


def _xdp_step(ev: Event) -> Step:
    if not ev.flags & PWRU_EVENT_FEXIT:
        return Step.RECEIVE
    if ev.reason in XDP_DROPS:
        return Step.DROP
    if ev.reason in (XDP_TX, XDP_REDIRECT):
        return Step.TRANSMIT
    return Step.PATH  # XDP_PASS: the stack takes it (as a new skb)


def _plain_step(name: str) -> Step:
    if name in DELIVER_FUNCS:
        return Step.DELIVER
    if name in FORWARD_FUNCS:
        return Step.FORWARD
    if name in TRANSMIT_FUNCS:
        return Step.TRANSMIT
    if name in CONSUME_FUNCS:
        return Step.CONSUME
    if name == FREE_FUNC:
        return Step.FREE
    if name.startswith(RECEIVE_PREFIXES):
        return Step.RECEIVE
    if name.startswith(TEARDOWN_PREFIXES):
        return Step.TEARDOWN
    return Step.PATH


def ends_life(hop: Hop, free_traced: bool) -> bool:
    """Whether nothing of this skb can follow: its memory was freed where pwru saw it
    (kfree_skbmem; the kfree_skb/consume_skb tracepoints, which fire only on the real
    free; an XDP program's exit). Drop and consume functions seen with kprobes only
    release a reference when the skb is shared, so they end a life only where
    kfree_skbmem is not traced."""
    step = hop.step
    if step == Step.FREE:
        return True
    if hop.event.type == PWRU_EVENT_XDP:
        return bool(hop.event.flags & PWRU_EVENT_FEXIT)
    if step in (Step.DROP, Step.CONSUME):
        return hop.event.type == PWRU_EVENT_TRACEPOINT or not free_traced
    return False


class Fate(enum.Enum):
    """Where a packet ended up."""

    DROPPED = "dropped"
    DELIVERED = "delivered"
    FORWARDED = "forwarded"
    TRANSMITTED = "transmitted"
    CONSUMED = "consumed"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class Verdict:
    """An skb's fate and the event that decided it (None: nothing decided it)."""

    fate: Fate
    hop: Hop | None
    inferred: bool = False  # forwarded or delivered, inferred rather than seen


_AFTER_THE_END = (Step.TEARDOWN, Step.FREE, Step.DROP, Step.CONSUME)
_MILESTONES = (Step.RECEIVE, Step.FORWARD, Step.TRANSMIT, Step.DELIVER)


def skb_fate(hops: Sequence[Hop]) -> Verdict:
    """The fate of one skb from its hops, oldest first (see the module docstring)."""
    ending = _final_outcome(hops)
    if ending is not None and ending.step == Step.DROP:
        return Verdict(Fate.DROPPED, ending)
    last = next((h for h in reversed(hops) if h.step in _MILESTONES), None)
    if last is not None and last.step == Step.DELIVER:
        return Verdict(Fate.DELIVERED, last)
    if last is not None and last.step == Step.FORWARD:
        return Verdict(Fate.FORWARDED, last)
    if last is not None and last.step == Step.TRANSMIT:
        forward = _forwarded_before(hops, last)
        if forward == "seen":
            return Verdict(Fate.FORWARDED, last)
        return Verdict(Fate.FORWARDED if forward else Fate.TRANSMITTED, last, bool(forward))
    if ending is not None or (hops and hops[-1].step == Step.FREE):
        return Verdict(Fate.CONSUMED, ending or hops[-1])
    if last is not None and last.step == Step.RECEIVE and _vanished_locally(hops, last):
        return Verdict(Fate.DELIVERED, last, True)
    return Verdict(Fate.IN_FLIGHT, hops[-1] if hops else None)


_L4_SOCKETS = (6, 17, 132)  # TCP, UDP, SCTP


def _vanished_locally(hops: Sequence[Hop], arrived: Hop) -> bool:
    """A UDP/TCP packet that arrived and was not seen again, traced with tracepoints
    only (which see no socket queue): a socket took it."""
    tup = arrived.event.tuple
    if tup is None or tup.l4_proto not in _L4_SOCKETS:
        return False
    return all(hop.event.type == PWRU_EVENT_TRACEPOINT for hop in hops)


def _final_outcome(hops: Sequence[Hop]) -> Hop | None:
    """The drop or consume event after which only the skb's release follows."""
    for hop in reversed(hops):
        if hop.step in (Step.DROP, Step.CONSUME):
            return hop
        if hop.step not in _AFTER_THE_END:
            return None
    return None


def _forwarded_before(hops: Sequence[Hop], sent: Hop) -> str:
    """"seen": a forwarding function ran in the sending netns before ``sent``;
    "inferred": the packet arrived there on another device; "": neither."""
    netns, out = sent.event.netns, sent.event.ifindex
    found = ""
    for hop in hops:
        if hop is sent:
            break
        if hop.event.netns != netns:
            found = ""  # an earlier stay in this netns does not count
        elif hop.step == Step.FORWARD:
            found = "seen"
        elif hop.step == Step.RECEIVE and hop.event.ifindex not in (0, out) and not found:
            found = "inferred"
    return found


def hook_of(hop: Hop) -> tuple[int, int] | None:
    """(family, hook) carried by an nf_hook_slow event (NFPROTO_*, NF_INET_*)."""
    ev = hop.event
    if ev.flags & PWRU_EVENT_HAS_HOOK and ev.reason is not None:
        return ev.reason >> 8, ev.reason & 0xFF
    return None


def dropped_in(hops: Sequence[Hop], drop: Hop, symbol: Callable[[int], str]) -> str:
    """The function that dropped it: the drop event's caller (the kfree_skb tracepoint's
    location, the drop function's return address), else the hop before it; the XDP
    program for an XDP drop."""
    ev = drop.event
    if ev.type == PWRU_EVENT_XDP:
        return drop.name
    if ev.caller_ip:
        name = symbol(ev.caller_ip)
        if name and not name.startswith("0x"):
            return c_name(name)
    earlier = [
        h
        for h in hops
        if h is not drop and h.event.ts <= ev.ts and h.step not in (Step.TEARDOWN, Step.FREE)
    ]
    return c_name(earlier[-1].name) if earlier else ""


def c_name(symbol: str) -> str:
    """``ip_rcv_core.isra.0`` -> ``ip_rcv_core``."""
    return symbol.split(".", 1)[0]
