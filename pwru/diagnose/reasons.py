"""Why did the kernel drop the packet? Plain-word explanations of drop reasons.

``explain(name)`` turns a kernel drop reason (``SKB_DROP_REASON_NO_SOCKET``, with or
without the prefix, and the qdisc/Open vSwitch subsystem reasons) into an
``Explanation``: what happened and a hint of what to check. It never returns an empty
text: a name the table does not know gets a generic text built from its words.

Kernels without drop reasons (before 5.17, e.g. 5.10) only say which function called
``kfree_skb``; ``explain_function(func)`` explains the drop where that function alone
makes the cause clear, and ``possible_reasons(func)`` lists the few candidates where it
does not.

Hints are templates filled by ``fill(hint, proto="udp", dport="7002", ...)`` from the
event's facts. Prose placeholders (``{port}``, ``{in_netns}``, ``{src}``, ...) stay
grammatical when a fact is unknown; command placeholders (``{daddr}``, ``{iface}``, ...)
show ``<destination>``-style stand-ins for the reader to replace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from pwru.diagnose.function_texts import AMBIGUOUS, FUNCTIONS
from pwru.diagnose.reason_texts import ALL

PREFIX = "SKB_DROP_REASON_"

# Facts the caller supplies, used as they are in commands; missing ones render as the
# stand-ins of _COMMAND_STANDIN.
FACTS = ("netns", "proto", "saddr", "daddr", "sport", "dport", "iface", "func", "netns_exec")
# Derived from the facts by fill(), for prose; each reads well when its fact is missing.
DERIVED = ("in_netns", "on_iface", "in_func", "port", "src", "dst", "device", "proto_flag")
PLACEHOLDERS = FACTS + DERIVED

_COMMAND_STANDIN = {
    "netns": "<netns>",
    "proto": "<protocol>",
    "saddr": "<source>",
    "daddr": "<destination>",
    "sport": "<sport>",
    "dport": "<dport>",
    "iface": "<device>",
    "func": "<function>",
    "netns_exec": "",
}
_PROTO_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "icmpv6", "132": "sctp"}
_SS_FLAG = {"tcp": "t", "udp": "u", "sctp": "S", "raw": "w", "icmp": "w", "icmpv6": "w"}
_SUBSYSTEM_PREFIXES = ("SKB_", "QDISC_DROP_", "OVS_DROP_", "RX_DROP_", "TX_DROP_")
_SUBSYSTEMS = {1: "mac80211 (Wi-Fi)", 2: "Open vSwitch", 3: "qdisc"}

Fact = Union[str, int, None]


@dataclass(frozen=True)
class Explanation:
    """What happened to a packet, in words, and what to check."""

    reason: str  # kernel name ("SKB_DROP_REASON_NO_SOCKET") or, when inferred, the function
    text: str  # one or two sentences: what happened and why
    hint: str  # what to check or run: a template for fill()
    known: bool  # False for a generic text built from an unknown name


def explain(reason_name: str) -> Explanation:
    """The explanation of a drop reason; a generic one if the name is not in the table."""
    name = canonical_name(reason_name)
    entry = ALL.get(name)
    if entry is not None:
        return Explanation(name, entry[0], entry[1], True)
    return _generic(name)


def canonical_name(reason_name: str) -> str:
    """The full kernel name: ``no_socket`` -> ``SKB_DROP_REASON_NO_SOCKET``."""
    name = re.sub(r"[^A-Za-z0-9_]", "", reason_name.strip()).upper()
    if not name or name.isdigit() or name in ALL:
        return name
    for candidate in (PREFIX + name, "SKB_" + name):
        if candidate in ALL:
            return candidate
    return name if name.startswith(_SUBSYSTEM_PREFIXES) else PREFIX + name


def explain_function(func: str) -> Explanation | None:
    """On kernels without drop reasons: the explanation implied by the function that
    called kfree_skb, or None where that function drops for several unrelated causes."""
    name = function_name(func)
    entry = FUNCTIONS.get(name)
    if entry is None:
        return None
    if isinstance(entry, str):
        text, hint = ALL[entry]
    else:
        text, hint = entry
    return Explanation(name, text, hint, True)


def possible_reasons(func: str) -> tuple[str, ...]:
    """Drop reasons a function without a single cause may stand for (most likely first);
    () when explain_function() knows the cause or the function is not in the table."""
    return AMBIGUOUS.get(function_name(func), ())


def function_name(func: str) -> str:
    """``ip_rcv_core.isra.0+0x1a5/0x2c0`` -> ``ip_rcv_core`` (kallsyms spelling to C name)."""
    name = func.strip().split("+", 1)[0].split(" ", 1)[0]
    return name.split(".", 1)[0]


def fill(template: str, **facts: Fact) -> str:
    """``template`` with the event's facts filled in; unknown facts read sensibly (never
    a bare ``{dport}``, never ``None``). Derived placeholders may also be given."""
    given = _normalise({key: str(value) for key, value in facts.items() if value not in (None, "")})
    values = _StandIns({**_derive(given), **given})
    try:
        return template.format_map(values)
    except (ValueError, IndexError, AttributeError, KeyError):
        return template.replace("{", "").replace("}", "")


class _StandIns(dict[str, str]):
    """Facts by name; a missing one renders as its stand-in."""

    def __missing__(self, key: str) -> str:
        return _COMMAND_STANDIN.get(key, f"<{key}>")


def _normalise(given: dict[str, str]) -> dict[str, str]:
    """Protocol numbers to names, lower case; a trailing space after ``netns_exec``."""
    if "proto" in given:
        proto = given["proto"].lower()
        given["proto"] = _PROTO_NUMBERS.get(proto, proto)
    if "netns_exec" in given and not given["netns_exec"].endswith(" "):
        given["netns_exec"] += " "
    return given


def _derive(given: Mapping[str, str]) -> dict[str, str]:
    """The prose placeholders, each readable when its fact is missing."""
    proto = given.get("proto", "")
    return {
        "in_netns": f" in netns {given['netns']}" if "netns" in given else "",
        "on_iface": f" on {given['iface']}" if "iface" in given else "",
        "in_func": f" in {given['func']}" if "func" in given else "",
        "port": _port(proto, given.get("dport", "")),
        "src": given.get("saddr", "the sender"),
        "dst": given.get("daddr", "the destination"),
        "device": given.get("iface", "the device"),
        "proto_flag": _SS_FLAG.get(proto, "tu"),
    }


def _port(proto: str, dport: str) -> str:
    if proto and dport:
        return f"{proto}/{dport}"
    if dport:
        return f"port {dport}"
    return proto or "the destination port"


def _generic(name: str) -> Explanation:
    """An explanation built from the words of a name the table does not know."""
    if not name:
        return Explanation(
            name,
            "The kernel dropped the packet with a reason pwru cannot name.",
            "see where it died{in_func}: rerun with --output-stack",
            False,
        )
    if name.isdigit():
        return _generic_number(int(name))
    short = name.removeprefix(PREFIX) if name.startswith(PREFIX) else name
    words = short.lower().replace("_", " ").strip()
    area, check = _area(short)
    text = (
        f"The kernel dropped the packet{area} with reason {short} ({words}), "
        "which this pwru does not describe yet."
    )
    hint = (
        f"look up {short} in the kernel's include/net/dropreason-core.h (or the "
        "subsystem's drop.h) and see where it died{in_func} with --output-stack" + check
    )
    return Explanation(name, text, hint, False)


def _generic_number(value: int) -> Explanation:
    """A reason known only by its number: name the subsystem it belongs to."""
    subsystem = _SUBSYSTEMS.get(value >> 16, "")
    owner = f"the {subsystem} subsystem's reason {value & 0xFFFF}" if subsystem else ""
    text = (
        f"The kernel dropped the packet with reason number {value}"
        + (f" ({owner})" if owner else "")
        + ", which has no name in this kernel's BTF."
    )
    hint = "see where it died{in_func} with --output-stack; the module defining it may " + (
        "not be loaded"
    )
    return Explanation(str(value), text, hint, False)


# (keywords in the name, " in <area>", extra check) - first match wins.
_AREAS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("OVS_",), " in Open vSwitch", "; `{netns_exec}ovs-dpctl dump-flows`"),
    (("RX_DROP", "TX_DROP", "MAC80211"), " in the Wi-Fi stack (mac80211)", ""),
    (
        ("QDISC", "FQ_", "CAKE", "CODEL", "RED_", "PIE"),
        " in a queueing discipline",
        "; `{netns_exec}tc -s qdisc show dev {iface}`",
    ),
    (("TC_",), " in tc", "; `{netns_exec}tc filter show dev {iface}`"),
    (("XDP",), " in XDP", "; `{netns_exec}bpftool net`"),
    (("NETFILTER", "NF_"), " in netfilter", "; `{netns_exec}nft list ruleset`"),
    (("XFRM", "IPSEC", "ESP"), " in IPsec", "; `{netns_exec}ip xfrm policy`"),
    (("VXLAN", "GRE", "GENEVE", "TNL", "TUNNEL"), " in a tunnel", ""),
    (("BRIDGE", "STP", "FDB"), " in the bridge", "; `{netns_exec}bridge link show`"),
    (("NEIGH", "ARP", "NDISC"), " while resolving the next hop", "; `{netns_exec}ip neigh show`"),
    (("TCP",), " in TCP", "; `{netns_exec}nstat -az | grep -i tcp`"),
    (("UDP",), " in UDP", "; `{netns_exec}nstat -az | grep -i udp`"),
    (("ICMP",), " in ICMP", ""),
    (("IPV6", "IP6"), " in IPv6", "; `{netns_exec}ip -6 route get {daddr}`"),
    (("IP_", "FRAG", "ROUTE"), " in IP", "; `{netns_exec}ip route get {daddr}`"),
    (("SOCK", "UNIX", "PACKET"), " at a socket", "; `{netns_exec}ss -anp`"),
    (("CSUM",), " because of a bad checksum", ""),
    (("MEM", "NOMEM", "OOM"), " for lack of memory", ""),
)


def _area(short: str) -> tuple[str, str]:
    """Where a drop with this name happened, and what to look at there."""
    padded = f"_{short}_"
    for keywords, area, check in _AREAS:
        if any(f"_{word}" in padded for word in keywords):
            return area, check
    return "", ""
