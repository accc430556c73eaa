"""--summary: when pwru stops, a report of what became of the matched packets.

A listener of the packet tracker (``pwru.diagnose.story``): every finished packet
counts once by its fate (``pwru.diagnose.verdicts``), and every skb that was dropped
adds to a group of drops with the same namespace, flow, reason and dropping function.
At the end each group gets its explanation and hint (``pwru.diagnose.hints``), and the
report is printed after the events: a table and a paragraph per group in text, one
``{"summary": {...}}`` line with --output-json (schema: docs/output.md).

What one run cannot know is said in the report ("unknown"): with the tracepoint
backend the netfilter hook (no nf_hook_slow event), a socket's receive queue (delivery
is inferred), and forwarding (inferred too).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pwru.bpf.abi import PWRU_EVENT_TRACEPOINT
from pwru.diagnose.checks import Checks
from pwru.diagnose.hints import Context, Diagnosis, DropCase, diagnose, short
from pwru.diagnose.netfilter import Attribution, FirewallWatch
from pwru.diagnose.places import Namespaces
from pwru.diagnose.reasons import function_name
from pwru.diagnose.story import Emitter, Packet
from pwru.diagnose.verdicts import FORWARD_FUNCS, Fate, Hop, dropped_in, hook_of
from pwru.output.decode import ETH_P_IPV6, Tuple5
from pwru.output.render import NameResolver, tuple_json, tuple_text

NETFILTER_DROP = "SKB_DROP_REASON_NETFILTER_DROP"
MAX_GROUPS = 50  # groups described; the rest are counted
ANSWERS = {
    "tcp_send_reset": "tcp reset",  # tracepoint
    "tcp_v4_send_reset": "tcp reset",
    "tcp_v6_send_reset": "tcp reset",
    "icmp_send": "icmp",  # tracepoint
    "__icmp_send": "icmp",
    "icmp6_send": "icmp",
    "icmpv6_send": "icmp",
}
# nf_hook_slow's caller in a drop's stack -> (NFPROTO_*, NF_INET_*)
HOOK_CALLERS = {
    "ip_rcv": (2, 0),
    "ip_rcv_core": (2, 0),
    "ip_list_rcv": (2, 0),
    "ip_sublist_rcv": (2, 0),
    "ip_local_deliver": (2, 1),
    "ip_forward": (2, 2),
    "__ip_local_out": (2, 3),
    "ip_output": (2, 4),
    "ipv6_rcv": (10, 0),
    "ipv6_list_rcv": (10, 0),
    "ip6_input": (10, 1),
    "ip6_forward": (10, 2),
    "__ip6_local_out": (10, 3),
    "ip6_output": (10, 4),
}
FATE_ORDER = (
    Fate.DROPPED,
    Fate.DELIVERED,
    Fate.FORWARDED,
    Fate.TRANSMITTED,
    Fate.CONSUMED,
    Fate.IN_FLIGHT,
)


@dataclass
class Group:
    """Drops with the same namespace, flow, reason and function."""

    case: DropCase
    hooks: Counter[tuple[int, int]] = field(default_factory=Counter)


class DropSummary:
    """Counts fates and groups drops while packets finish; reports at close()."""

    def __init__(
        self,
        out: Emitter,
        names: NameResolver,
        *,
        json_output: bool,
        namespaces: Namespaces,
        firewall: FirewallWatch | None,
        checks: Checks | None = None,
        track_clones: bool = False,
    ) -> None:
        self.out = out
        self.names = names
        self.json_output = json_output
        self.namespaces = namespaces
        self.firewall = firewall
        self.checks = checks or Checks()
        self.track_clones = track_clones
        self.fates: Counter[Fate] = Counter()
        self.clone_fates: Counter[Fate] = Counter()
        self.groups: dict[tuple[int, str, str | None, str], Group] = {}
        self.event_types: set[int] = set()

    # --- while tracing

    def packet_done(self, packet: Packet) -> None:
        self.event_types.update({hop.event.type for hop in packet.hops})
        for skb in packet.skbs:
            verdict = packet.fate(skb)
            (self.fates if skb == packet.skb else self.clone_fates)[verdict.fate] += 1
            if verdict.fate == Fate.DROPPED and verdict.hop is not None:
                self._add_drop(packet.hops_of(skb), verdict.hop)

    def _add_drop(self, hops: list[Hop], drop: Hop) -> None:
        ev = drop.event
        func = dropped_in(hops, drop, self.names.symbol)
        key = (ev.netns, tuple_text(ev.tuple, False), drop.reason, func)
        group = self.groups.get(key)
        if group is None:
            iface = self.names.iface(ev.netns, ev.ifindex) if ev.ifindex else ""
            case = DropCase(ev.netns, ev.tuple, drop.reason, func)
            case.iface = iface.rsplit(":", 1)[0] if ":" in iface else ""
            group = self.groups[key] = Group(case)
        case = group.case
        case.count += 1
        hook = self._hook(hops, drop)
        if hook is not None:
            group.hooks[hook[0]] += 1
            case.hook_from = case.hook_from or hook[1]
        names = {hop.name for hop in hops}
        answered = [ANSWERS[n] for n in names if n in ANSWERS]
        case.answered = case.answered or (answered[0] if answered else "")
        case.forwarded = case.forwarded or bool(names & FORWARD_FUNCS)

    def _hook(self, hops: list[Hop], drop: Hop) -> tuple[tuple[int, int], str] | None:
        """(family, hook) of a netfilter drop: the last nf_hook_slow event before it in
        the namespace (kprobes), else nf_hook_slow's caller in its stack."""
        if drop.reason != NETFILTER_DROP and drop.reason is not None:
            return None
        for hop in reversed(hops[: hops.index(drop)]):
            found = hook_of(hop)
            if found is not None and hop.event.netns == drop.event.netns:
                return found, "nf_hook_slow"
        frames = [function_name(self.names.symbol(ip)) for ip in drop.frames]
        if "nf_hook_slow" in frames[:-1]:
            caller = frames[frames.index("nf_hook_slow") + 1]
            if caller in HOOK_CALLERS:
                return HOOK_CALLERS[caller], "stack"
        return None

    # --- the report

    def close(self) -> None:
        groups = sorted(self.groups.values(), key=lambda g: -g.case.count)
        described = groups[:MAX_GROUPS]
        diagnoses = [self._diagnose(g, groups) for g in described]
        rest = sum(g.case.count for g in groups[MAX_GROUPS:])
        if self.json_output:
            self.out.emit(self._json(described, diagnoses, rest))
        else:
            for line in self._text(described, diagnoses, rest):
                self.out.emit(line)

    def _diagnose(self, group: Group, groups: Sequence[Group]) -> Diagnosis:
        case = group.case
        if group.hooks:
            case.hook = group.hooks.most_common(1)[0][0]
        ctx = Context(self.namespaces.place(case.netns), self.checks)
        if self.firewall is not None:
            ctx.firewall = self._firewall_for(groups)
        return diagnose(case, ctx)

    def _firewall_for(self, groups: Sequence[Group]) -> Callable[[DropCase], Attribution | str]:
        watch = self.firewall
        assert watch is not None

        def attribution(case: DropCase) -> Attribution | str:
            same = [
                g.case.count
                for g in groups
                if g.case.netns == case.netns
                and g.case.reason == case.reason
                and g.case.hook == case.hook
            ]
            pf, hook = case.hook if case.hook is not None else (None, None)
            version = 6 if case.flow is not None and case.flow.l3_proto == ETH_P_IPV6 else 4
            return watch.attribute(case.netns, pf, hook, version, [case.count, sum(same)])

        return attribution

    def unknowns(self) -> list[str]:
        """What this run could not know, in words."""
        notes = []
        tracepoints_only = self.event_types and self.event_types <= {PWRU_EVENT_TRACEPOINT}
        if tracepoints_only:
            notes += [
                "the netfilter hook: the tracepoint backend has no nf_hook_slow event "
                "(named from the rule's chain where one rule matched)",
                "a socket's receive queue: tracepoints do not see it; a UDP/TCP packet "
                "that arrived and then vanished (no drop, free or transmit) counts as "
                "delivered, inferred",
                "forwarding is inferred: received on one device and sent on another in "
                "the same namespace",
            ]
        if any(g.case.reason is None for g in self.groups.values()):
            notes.append("drop reasons: this kernel has none; the dropping function stands in")
        if self.firewall is not None and self.firewall.skipped:
            notes.append(
                f"firewall rules of {self.firewall.skipped} namespaces were not read at start"
            )
        if self.clone_fates and not self.track_clones:
            notes.append("clones without --filter-track-skb count as packets of their own")
        return notes

    def _text(self, groups: list[Group], diagnoses: list[Diagnosis], rest: int) -> list[str]:
        lines = ["", "pwru summary: " + _fates_text(self.fates)]
        if self.clone_fates:
            lines.append("clones: " + _fates_text(self.clone_fates))
        if groups:
            lines += _table(groups, diagnoses, self.namespaces)
        for i, (group, d) in enumerate(zip(groups, diagnoses), 1):
            lines += _paragraph(i, group.case, d, self.namespaces)
        if rest:
            lines.append(f"(and {rest} more drops in {len(self.groups) - len(groups)} groups)")
        lines += [f"not known: {note}" for note in self.unknowns()]
        return lines

    def _json(self, groups: list[Group], diagnoses: list[Diagnosis], rest: int) -> str:
        summary: dict[str, Any] = {"packets": _fates_json(self.fates)}
        if self.clone_fates:
            summary["clones"] = _fates_json(self.clone_fates)
        summary["drops"] = [
            _drop_json(g.case, d, self.namespaces) for g, d in zip(groups, diagnoses)
        ]
        if rest:
            summary["more_drops"] = rest
        summary["unknown"] = self.unknowns()
        return json.dumps({"summary": summary}, ensure_ascii=False, separators=(",", ":"))


def _fates_text(fates: Counter[Fate]) -> str:
    total = sum(fates.values())
    parts = ", ".join(f"{fates[f]} {f.value.replace('_', ' ')}" for f in FATE_ORDER)
    return f"{total} packets: {parts}"


def _fates_json(fates: Counter[Fate]) -> dict[str, int]:
    return {"total": sum(fates.values()), **{f.value: fates[f] for f in FATE_ORDER}}


def _flow(flow: Tuple5 | None) -> str:
    return tuple_text(flow, False) if flow is not None and flow.l3_proto else "-"


def _table(groups: list[Group], diagnoses: list[Diagnosis], ns: Namespaces) -> list[str]:
    rows = [("NETNS", "FLOW", "REASON", "FUNCTION", "COUNT")]
    for group, d in zip(groups, diagnoses):
        case = group.case
        reason = short(d.reason) if d.reason else "-"
        if d.inferred and d.reason:
            reason += "?"
        rows.append(
            (ns.place(case.netns).name, _flow(case.flow), reason, case.func or "?", str(case.count))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [" ".join(f"{c:<{w}}" for c, w in zip(row, widths)) + " " + row[4] for row in rows]


def _paragraph(n: int, case: DropCase, d: Diagnosis, ns: Namespaces) -> list[str]:
    what = short(d.reason) if d.reason else "a drop"
    if d.inferred:
        what += " (inferred from the function)"
    where = f" in {case.func}" if case.func else ""
    dev = f" on {case.iface}" if case.iface else ""
    flow = _flow(case.flow)
    head = f"#{n} {what}{where}, netns {ns.place(case.netns).label}{dev}"
    head += f", {flow}" if flow != "-" else ""
    packets = "packet" if case.count == 1 else "packets"
    return [f"{head}: {case.count} {packets}", f"   why:   {d.explanation}", f"   check: {d.hint}"]


def _drop_json(case: DropCase, d: Diagnosis, ns: Namespaces) -> dict[str, Any]:
    place = ns.place(case.netns)
    item: dict[str, Any] = {"netns": case.netns, "netns_name": place.name}
    if case.flow is not None and case.flow.l3_proto:
        item["tuple"] = tuple_json(case.flow, False)
    item.update(reason=d.reason, func=case.func or None, count=case.count)
    if case.iface:
        item["iface"] = case.iface
    if d.hook:
        item["hook"] = d.hook
    item.update(explanation=d.explanation, hint=d.hint, known=d.known)
    if d.inferred:
        item["reason_inferred"] = True
    if d.possible:
        item["possible_reasons"] = list(d.possible)
    if d.rules:
        item["rules"] = list(d.rules)
    return item
