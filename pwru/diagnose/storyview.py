"""--output-per-packet: each packet as one block instead of a line per event.

A listener of the packet tracker (``pwru.diagnose.story``): a block is printed when
its packet ends (or after the tracker's timeout), so long traces stream. Text:

    packet 3: 192.0.2.1:40001->192.0.2.2:7777(udp), skb 0xffff888151feef00
      first seen 2026-12-03T08:30:01.123 in netns pwru-b (4026532540) on veth-b:2
              start  netif_receive_skb
            +12.3us  ip_rcv
             +4.0us  nf_hook_slow (ipv4 INPUT)
             +9.1us  kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)
      => dropped: NETFILTER_DROP in nft_do_chain, netns pwru-b, veth-b

A hop names its namespace, device or addresses only when they change (a NAT rewrite
shows as ``now 192.0.2.1:40001->192.0.2.2:8080(udp)``); a clone's hops are tagged
``[clone 1]``. With --output-json each packet is one ``{"packet": {...}}`` line
(docs/diagnose.md has the fields).
"""

from __future__ import annotations

import json
from typing import Any

from pwru.diagnose.netfilter import NFPROTO, hook_name
from pwru.diagnose.places import Namespaces
from pwru.diagnose.story import Emitter, Packet
from pwru.diagnose.verdicts import Fate, Hop, Step, Verdict, dropped_in, hook_of
from pwru.output.render import Renderer, tuple_json, tuple_text

_FATE_WORDS = {
    Fate.DELIVERED: "delivered to a socket",
    Fate.FORWARDED: "forwarded",
    Fate.TRANSMITTED: "transmitted",
    Fate.CONSUMED: "consumed by the kernel",
}
ENDS = {
    "timeout": "no event for a while",
    "stop": "pwru stopped",
    "evicted": "too many packets in flight",
    "reused": "its address was reused",
}


class PacketView:
    """Prints every finished packet (see the module docstring)."""

    def __init__(
        self, out: Emitter, renderer: Renderer, namespaces: Namespaces, *, json_output: bool
    ) -> None:
        self.out = out
        self.renderer = renderer
        self.names = renderer.names
        self.namespaces = namespaces
        self.json_output = json_output

    def packet_done(self, packet: Packet) -> None:
        if self.json_output:
            self.out.emit(json.dumps({"packet": self._json(packet)}, separators=(",", ":")))
        else:
            for line in self._text(packet):
                self.out.emit(line)

    def close(self) -> None:
        """Nothing buffered: every packet was printed when it finished."""

    # --- text

    def _text(self, packet: Packet) -> list[str]:
        first = packet.hops[0].event
        lines = [
            f"packet {packet.id}: {self._flow(first.tuple)}, skb {packet.skb:#x}",
            f"  first seen {self.renderer.absolute_ts(first)} in netns "
            f"{self.namespaces.place(first.netns).label}{self._on(first.netns, first.ifindex)}",
        ]
        previous = packet.hops[0]
        for i, hop in enumerate(packet.hops):
            delta = "start" if i == 0 else _delta(hop.event.ts - previous.event.ts)
            lines.append(f"  {delta:>12}  {self._tag(packet, hop)}{self._hop(hop, previous)}")
            previous = hop
        if packet.skipped:
            lines.append(f"  ({packet.skipped} events in the middle left out)")
        lines.append("  => " + self._verdict_text(packet, packet.fate(), packet.skb))
        for n, clone in enumerate(packet.clones(), 1):
            verdict = self._verdict_text(packet, packet.fate(clone), clone)
            lines.append(f"  => clone {n} ({clone:#x}): {verdict}")
        return lines

    def _flow(self, flow: Any) -> str:
        return tuple_text(flow, self.renderer.options.output_tcp_flags)

    def _on(self, netns: int, ifindex: int) -> str:
        return f" on {self.names.iface(netns, ifindex)}" if ifindex else ""

    def _tag(self, packet: Packet, hop: Hop) -> str:
        skb = hop.event.skb_addr
        return "" if skb == packet.skb else f"[clone {packet.skbs.index(skb)}] "

    def _hop(self, hop: Hop, previous: Hop) -> str:
        ev, before = hop.event, previous.event
        text = self.renderer.func_name(ev)
        hook = hook_of(hop)
        if hook is not None:
            text += f" ({NFPROTO.get(hook[0], hook[0])} {hook_name(*hook).upper()})"
        if hop.step == Step.CLONE:
            text += f": a clone of {ev.reason or 0:#x}"
        if ev.netns != before.netns:
            text += f"  netns {self.namespaces.place(ev.netns).label}"
        if ev.ifindex and (ev.ifindex, ev.netns) != (before.ifindex, before.netns):
            text += f"  {self.names.iface(ev.netns, ev.ifindex)}"
        if ev.tuple != before.tuple and ev.tuple is not None and ev.tuple.l3_proto:
            text += f"  now {self._flow(ev.tuple)}"
        return text

    def _verdict_text(self, packet: Packet, verdict: Verdict, skb: int) -> str:
        hop = verdict.hop
        if hop is None:
            return "nothing seen"
        ev = hop.event
        where = f"netns {self.namespaces.place(ev.netns).name}"
        dev = self.names.iface(ev.netns, ev.ifindex) if ev.ifindex else ""
        place = f"{where}, {dev}" if dev else where
        fate = verdict.fate
        if fate == Fate.DROPPED:
            reason = (hop.reason or "no reason").removeprefix("SKB_DROP_REASON_")
            func = dropped_in(packet.hops_of(skb), hop, self.names.symbol)
            return f"dropped: {reason}{f' in {func}' if func else ''}, {place}"
        if fate == Fate.IN_FLIGHT:
            end = ENDS.get(packet.end, packet.end)
            return f"still in flight: last seen at {hop.name}, {place} ({end})"
        how = _FATE_WORDS[fate]
        if verdict.inferred:
            how += " (in on one device, out on another)"
        return f"{how}: {hop.name}, {place}"

    # --- JSON

    def _json(self, packet: Packet) -> dict[str, Any]:
        first = packet.hops[0].event
        item: dict[str, Any] = {"id": packet.id, "skb": f"{packet.skb:#x}"}
        if first.tuple is not None and first.tuple.l3_proto:
            item["tuple"] = tuple_json(first.tuple, self.renderer.options.output_tcp_flags)
        item.update(
            netns=first.netns,
            netns_name=self.namespaces.place(first.netns).name,
            first_seen=self.renderer.absolute_ts(first),
            hops=[self._hop_json(packet, hop, i) for i, hop in enumerate(packet.hops)],
            verdict=self._verdict_json(packet, packet.fate(), packet.skb),
            end=packet.end,
        )
        if packet.skipped:
            item["skipped"] = packet.skipped
        clones = list(packet.clones())
        if clones:
            item["clones"] = [
                {
                    "skb": f"{skb:#x}",
                    "parent": f"{packet.parents.get(skb, packet.skb):#x}",
                    "verdict": self._verdict_json(packet, packet.fate(skb), skb),
                }
                for skb in clones
            ]
        return item

    def _hop_json(self, packet: Packet, hop: Hop, i: int) -> dict[str, Any]:
        ev = hop.event
        previous = packet.hops[i - 1].event if i else ev
        item: dict[str, Any] = {
            "skb": f"{ev.skb_addr:#x}",
            "func": self.renderer.func_name(ev),
            "dt_ns": max(0, ev.ts - previous.ts),
            "netns": ev.netns,
        }
        if ev.ifindex:
            item["iface"] = self.names.iface(ev.netns, ev.ifindex)
        if ev.tuple is not None and ev.tuple.l3_proto:
            item["tuple"] = tuple_json(ev.tuple, self.renderer.options.output_tcp_flags)
        hook = hook_of(hop)
        if hook is not None:
            item["hook"] = f"{NFPROTO.get(hook[0], hook[0])} {hook_name(*hook).upper()}"
        return item

    def _verdict_json(self, packet: Packet, verdict: Verdict, skb: int) -> dict[str, Any]:
        item: dict[str, Any] = {"fate": verdict.fate.value}
        hop = verdict.hop
        if hop is None:
            return item
        ev = hop.event
        item.update(func=hop.name, netns=ev.netns)
        if ev.ifindex:
            item["iface"] = self.names.iface(ev.netns, ev.ifindex)
        if verdict.fate == Fate.DROPPED:
            item["reason"] = hop.reason
            item["dropped_in"] = dropped_in(packet.hops_of(skb), hop, self.names.symbol)
        if verdict.inferred:
            item["inferred"] = True
        return item


def _delta(ns: int) -> str:
    """``+12.3us``, ``+1.204ms``, ``+2.51s`` (never negative)."""
    ns = max(0, ns)
    if ns < 1_000_000:
        return f"+{ns / 1000:.1f}us"
    if ns < 1_000_000_000:
        return f"+{ns / 1e6:.3f}ms"
    return f"+{ns / 1e9:.2f}s"
