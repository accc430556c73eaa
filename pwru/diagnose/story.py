"""Events grouped into packets: one story per packet, its clones with it.

``PacketTracker`` is a printer Sink. It keeps the story of every packet in flight, by
skb address, and hands each finished story (``Packet``) to its listeners: the
per-packet view prints it, the drop summary counts it.

The kernel reuses a freed skb's address for the next packet at once, so a story ends
at the skb's free (kfree_skbmem; the kfree_skb / consume_skb tracepoints) and what
comes later at that address is a new packet. Where the free is not seen (tracepoints
see no free on the UDP and TCP read paths; --filter-func may leave kfree_skbmem out),
an address starts a new packet when

* it was dropped or consumed before (only its release may follow),
* a socket had taken it and it now arrives on or leaves through a device,
* it was sent on a device and now a socket or the router takes it, without arriving
  anywhere first, or it arrives on that same device (not loopback),
* its protocol changed to or from ICMP (an ICMP error is a new skb),
* it comes back to the place where the story began (same function, netns, device),
* or nothing happened to it for ``timeout_s`` seconds (event time).

An skb seen only while being freed (kfree_skbmem, skb_release_*: its path did not
match the filters) is no story and is not handed out.

Clones: with --filter-track-skb and config.diagnose the BPF side reports each clone's
birth (PWRU_EVENT_CLONE); the clone then belongs to its original's story, which ends
when every skb of it has ended. A story nobody ends is handed out after ``timeout_s``
of silence (so long traces do not buffer forever) or when pwru stops.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pwru.bpf.abi import PWRU_EVENT_FEXIT, PWRU_EVENT_HAS_REASON, PWRU_EVENT_XDP
from pwru.diagnose.verdicts import (
    XDP_DROPS,
    Hop,
    Step,
    Verdict,
    classify,
    ends_life,
    skb_fate,
)
from pwru.output.decode import Event, Extras
from pwru.output.render import NameResolver

STORY_TIMEOUT_S = 1.0
MAX_HOPS = 512  # per story; beyond, the middle is left out (counted in Packet.skipped)
MAX_OPEN = 65536  # stories in flight; beyond, the oldest is handed out early
_ENDED_MEMORY = 4096
LOOPBACK_IFINDEX = 1  # addresses whose life ended at a drop/consume, for their teardown


@dataclass
class Packet:
    """The story of one packet: every event of its skb and of its clones."""

    id: int
    hops: list[Hop] = field(default_factory=list)
    skbs: list[int] = field(default_factory=list)  # the original first, then clones
    parents: dict[int, int] = field(default_factory=dict)  # clone -> what it was cloned from
    live: set[int] = field(default_factory=set)  # skbs whose end was not seen yet
    last_ts: int = 0
    end: str = ""  # "freed", "timeout", "stop", "reused", "evicted"
    skipped: int = 0  # hops left out beyond MAX_HOPS
    first_place: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    last: dict[int, Hop] = field(default_factory=dict)  # each skb's latest hop

    @property
    def skb(self) -> int:
        return self.skbs[0]

    def hops_of(self, skb: int) -> list[Hop]:
        return [hop for hop in self.hops if hop.event.skb_addr == skb]

    def fate(self, skb: int | None = None) -> Verdict:
        """The fate of the original (or of one clone)."""
        return skb_fate(self.hops_of(self.skb if skb is None else skb))

    def clones(self) -> Iterator[int]:
        return iter(self.skbs[1:])


class Emitter(Protocol):
    """Where listeners put their lines (the printer: after the events so far)."""

    def emit(self, line: str) -> None: ...


class PacketListener(Protocol):
    """Gets every finished story, then close() once when the run ends."""

    def packet_done(self, packet: Packet) -> None: ...

    def close(self) -> None: ...


class PacketTracker:
    """A Sink that turns events into packet stories (see the module docstring)."""

    def __init__(
        self,
        names: NameResolver,
        listeners: Sequence[PacketListener],
        *,
        free_traced: bool,
        timeout_s: float = STORY_TIMEOUT_S,
        clock: Callable[[], int] = time.monotonic_ns,  # CLOCK_MONOTONIC, as the events
    ) -> None:
        self.names = names
        self.listeners = list(listeners)
        self.free_traced = free_traced  # kfree_skbmem is probed (kprobes)
        self.timeout_ns = int(timeout_s * 1e9)
        self.clock = clock
        self.by_skb: dict[int, Packet] = {}
        self.open: OrderedDict[int, Packet] = OrderedDict()  # by id, least recent first
        self.ended: OrderedDict[int, None] = OrderedDict()  # see _absorbed
        self.next_id = 1
        self.latest_ts = 0
        self.fresh = False  # events came since the last tick

    # --- Sink

    def add(self, event: Event, extras: Extras) -> None:
        name = self.names.probe_name(event)
        reason = self._reason_name(event)
        step = classify(event, name, reason)
        frames = tuple(extras.frames) if step == Step.DROP else ()
        hop = Hop(event, name, step, reason, frames)
        self.latest_ts = max(self.latest_ts, event.ts)
        self.fresh = True
        if step == Step.CLONE:
            self._clone(hop)
            return
        if self._absorbed(hop):
            return
        packet = self._packet_for(hop)
        self._record(packet, hop)
        if ends_life(hop, self.free_traced):
            self._end_skb(packet, event.skb_addr, "freed")

    def tick(self) -> None:
        """Hand out the stories that saw nothing for the timeout (called every poll)."""
        now = self.latest_ts if self.fresh else max(self.latest_ts, self.clock())
        self.fresh = False
        limit = now - self.timeout_ns
        while self.open:
            packet = next(iter(self.open.values()))
            if packet.last_ts > limit:
                break
            self._finish(packet, "timeout")

    def close(self) -> None:
        for packet in list(self.open.values()):
            self._finish(packet, "stop")
        for listener in self.listeners:
            listener.close()

    # --- stories

    def _reason_name(self, ev: Event) -> str | None:
        if ev.reason is None:
            return None
        if ev.type == PWRU_EVENT_XDP:
            return XDP_DROPS.get(ev.reason) if ev.flags & PWRU_EVENT_FEXIT else None
        if ev.flags & PWRU_EVENT_HAS_REASON:
            return self.names.drop_reason(ev.reason) or str(ev.reason)
        return None

    def _packet_for(self, hop: Hop) -> Packet:
        addr = hop.event.skb_addr
        packet = self.by_skb.get(addr)
        if packet is not None and self._new_packet_at(packet, hop):
            self._end_skb(packet, addr, "reused")
            packet = None
        if packet is None:
            packet = self._start(addr)
        return packet

    def _new_packet_at(self, packet: Packet, hop: Hop) -> bool:
        """Whether ``hop`` begins another packet at an address whose free went unseen."""
        ev, step = hop.event, hop.step
        if ev.ts - packet.last_ts > self.timeout_ns:
            return True
        last = packet.last.get(ev.skb_addr)
        if last is None:
            return False
        if last.step == Step.DELIVER and step in (Step.RECEIVE, Step.TRANSMIT):
            return True
        if last.step == Step.TRANSMIT and (
            step in (Step.DELIVER, Step.FORWARD)
            or (step == Step.RECEIVE and _looped(last.event, ev))
        ):
            return True
        if _icmp_swap(last.event, ev):
            return True
        if self.free_traced:
            return False
        return packet.first_place.get(ev.skb_addr) == (hop.name, ev.netns, ev.ifindex)

    def _absorbed(self, hop: Hop) -> bool:
        """The release of an skb whose life already ended at a drop or consume event
        (kprobes without kfree_skbmem): not a new packet."""
        addr = hop.event.skb_addr
        if addr not in self.ended or addr in self.by_skb:
            return False
        if hop.step in (Step.TEARDOWN, Step.FREE):
            return True
        del self.ended[addr]
        return False

    def _start(self, addr: int) -> Packet:
        packet = Packet(self.next_id, skbs=[addr], live={addr})
        self.next_id += 1
        self.by_skb[addr] = packet
        self.open[packet.id] = packet
        if len(self.open) > MAX_OPEN:
            self._finish(next(iter(self.open.values())), "evicted")
        return packet

    def _clone(self, hop: Hop) -> None:
        child, parent = hop.event.skb_addr, hop.event.reason or 0
        stale = self.by_skb.get(child)
        if stale is not None:
            self._end_skb(stale, child, "reused")
        packet = self.by_skb.get(parent)
        if packet is None:
            packet = self._start(child)  # its original was not seen
        else:
            packet.skbs.append(child)
            packet.parents[child] = parent
            packet.live.add(child)
            self.by_skb[child] = packet
        self._record(packet, hop)

    def _record(self, packet: Packet, hop: Hop) -> None:
        ev = hop.event
        if len(packet.hops) >= MAX_HOPS:
            del packet.hops[MAX_HOPS // 2]
            packet.skipped += 1
        packet.hops.append(hop)
        packet.last_ts = max(packet.last_ts, ev.ts)
        packet.last[ev.skb_addr] = hop
        packet.first_place.setdefault(ev.skb_addr, (hop.name, ev.netns, ev.ifindex))
        self.open.move_to_end(packet.id)

    def _end_skb(self, packet: Packet, addr: int, how: str) -> None:
        packet.live.discard(addr)
        if self.by_skb.get(addr) is packet:
            del self.by_skb[addr]
        last = packet.last.get(addr)
        if how == "freed" and last is not None and last.step != Step.FREE:
            self.ended[addr] = None  # a drop/consume: its teardown may follow
            if len(self.ended) > _ENDED_MEMORY:
                self.ended.popitem(last=False)
        if not packet.live:
            self._finish(packet, how)

    def _finish(self, packet: Packet, how: str) -> None:
        for addr in packet.live:
            if self.by_skb.get(addr) is packet:
                del self.by_skb[addr]
        packet.end = packet.end or how
        self.open.pop(packet.id, None)
        if all(hop.step in (Step.TEARDOWN, Step.FREE) for hop in packet.hops):
            return  # seen only while being freed (its path did not match): nothing to tell
        for listener in self.listeners:
            listener.packet_done(packet)


def _looped(sent: Event, now: Event) -> bool:
    """Sent on a device and now arriving on the same one, not loopback (ifindex 1 in
    every namespace): the sent packet left (its free unseen), this is another."""
    same = (sent.netns, sent.ifindex) == (now.netns, now.ifindex)
    return same and now.ifindex not in (0, LOOPBACK_IFINDEX)


_ICMP = (1, 58)


def _icmp_swap(before: Event, now: Event) -> bool:
    """The transport protocol changed to or from ICMP: no NAT or tunnel turns a packet
    into an ICMP message (those are new skbs), so this is another packet."""
    a, b = before.tuple, now.tuple
    if a is None or b is None or not a.l3_proto or not b.l3_proto:
        return False
    return a.l4_proto != b.l4_proto and (a.l4_proto in _ICMP or b.l4_proto in _ICMP)
