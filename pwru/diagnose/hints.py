"""One group of drops -> what happened, in words, and the exact thing to look at.

The explanation comes from the knowledge base (``pwru.diagnose.reasons``); the hint is
built from the drops' own facts where a reason has a specific one: the port nothing
listens on, the socket whose buffer was full (and what it holds now), the firewall rule
whose counter grew (``pwru.diagnose.netfilter``), what ``ip route get`` answers in that
namespace, the reverse-path filter settings, a TTL that ran out while forwarding.
Other reasons get the knowledge base's hint with the facts filled in.

Kernels before 5.17 give no reason: the dropping function stands for it where it is
unambiguous (``explain_function``); where it is not, the most likely reason is named
as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pwru.diagnose.checks import Checks, route_argv
from pwru.diagnose.function_texts import FUNCTIONS
from pwru.diagnose.netfilter import NFPROTO, Attribution, hook_name
from pwru.diagnose.places import Place
from pwru.diagnose.reasons import (
    PREFIX,
    Explanation,
    explain,
    explain_function,
    fill,
    function_name,
    possible_reasons,
)
from pwru.output.decode import Tuple5
from pwru.output.render import L4_NAMES, tcp_flags_text

_P = PREFIX
FORWARDERS = ("ip_forward", "ip6_forward")
TCP_SYN, TCP_ACK = 0x02, 0x10


@dataclass
class DropCase:
    """What a group of drops (one row of the summary) has in common."""

    netns: int
    flow: Tuple5 | None  # the packet's addresses and ports
    reason: str | None  # kernel name; None on kernels without drop reasons
    func: str  # the function that dropped it ("" when unknown)
    count: int = 0
    iface: str = ""  # the device it was on when dropped (name only)
    hook: tuple[int, int] | None = None  # netfilter (family, hook) where known
    hook_from: str = ""  # "nf_hook_slow" (kprobes) or "stack" (--output-stack)
    answered: str = ""  # "tcp reset" / "icmp" when the kernel answered the sender
    forwarded: bool = False  # it had passed a forwarding function


@dataclass
class Diagnosis:
    """The words for one DropCase."""

    reason: str | None  # kernel name (inferred from the function on old kernels)
    explanation: str
    hint: str
    known: bool  # False: a generic text for a reason the knowledge base lacks
    inferred: bool = False  # reason inferred from the dropping function
    possible: tuple[str, ...] = ()  # candidates when the function is ambiguous
    hook: str = ""  # "ipv4 INPUT", "" when unknown
    rules: tuple[str, ...] = ()  # firewall rules named by the hint


@dataclass
class Context:
    """What the hints may consult: the namespace, live checks, rule counters."""

    place: Place
    checks: Checks
    firewall: Callable[[DropCase], Attribution | str] | None = None
    notes: list[str] = field(default_factory=list)


def diagnose(case: DropCase, ctx: Context) -> Diagnosis:
    """Explanation and hint for a group of drops."""
    base, reason, possible = _explanation(case)
    inferred = case.reason is None and (reason is not None or bool(possible))
    diagnosis = Diagnosis(reason, base.text, "", base.known, inferred, possible)
    specific = _SPECIFIC.get(reason or (possible[0] if possible else ""))
    hint = specific(case, ctx, diagnosis) if specific else None
    diagnosis.hint = hint or fill(base.hint, **facts(case, ctx.place))
    if possible:
        diagnosis.hint = f"if it is {short(possible[0])}: {diagnosis.hint}"
    return diagnosis


def _explanation(case: DropCase) -> tuple[Explanation, str | None, tuple[str, ...]]:
    """(explanation, the reason's kernel name, candidates when the function that
    dropped it, on a kernel without reasons, stands for several)."""
    if case.reason:
        return explain(case.reason), case.reason, ()
    mapped = FUNCTIONS.get(function_name(case.func)) if case.func else None
    if isinstance(mapped, str):
        return explain(mapped), mapped, ()
    by_function = explain_function(case.func) if case.func else None
    if by_function is not None:
        return by_function, None, ()
    possible = possible_reasons(case.func) if case.func else ()
    if possible:
        likely = explain(possible[0])
        names = ", ".join(short(p) for p in possible)
        text = (
            f"This kernel names no drop reason, and {case.func} drops for several "
            f"({names}); most likely: {likely.text[0].lower()}{likely.text[1:]}"
        )
        return Explanation(likely.reason, text, likely.hint, True), None, possible
    where = f" in {case.func}" if case.func else ""
    text = f"The kernel dropped the packet{where}; this kernel names no drop reason."
    return Explanation("", text, "see the path to the drop with --output-stack", False), None, ()


def short(reason: str) -> str:
    return reason.removeprefix(_P)


def facts(case: DropCase, place: Place) -> dict[str, str | int | None]:
    """The placeholders of the knowledge base's hints (pwru.diagnose.reasons.FACTS)."""
    t = case.flow
    return {
        "netns": place.name if not place.own else None,
        "netns_exec": place.exec_prefix or None,
        "proto": L4_NAMES.get(t.l4_proto) if t else None,
        "saddr": t.saddr or None if t else None,
        "daddr": t.daddr or None if t else None,
        "sport": t.sport or None if t else None,
        "dport": t.dport or None if t else None,
        "iface": case.iface or None,
        "func": case.func or None,
    }


def _in(place: Place) -> str:
    return "" if place.own else f" in netns {place.name}"


def _cmd(place: Place, command: str) -> str:
    return f"`{place.exec_prefix + ' ' if place.exec_prefix else ''}{command}`"


# --- specific hints: (case, context, diagnosis so far) -> hint or None (use the canned one)


def _no_socket(case: DropCase, ctx: Context, _d: Diagnosis) -> str | None:
    t, place = case.flow, ctx.place
    proto = L4_NAMES.get(t.l4_proto, "") if t else ""
    if t is None or proto not in ("tcp", "udp") or not t.dport:
        return None
    port = f"{proto}/{t.dport}"
    flag = "t" if proto == "tcp" else "u"
    if proto == "tcp" and not (t.tcp_flags & TCP_SYN and not t.tcp_flags & TCP_ACK):
        flags = tcp_flags_text(t.tcp_flags) or "no flags"
        head = (
            f"no TCP connection on {port}{_in(place)} matches this segment ({flags}) from "
            f"{t.saddr}:{t.sport}: this side no longer knows the connection (closed, timed "
            "out, or the host restarted)"
        )
    else:
        head = f"nothing listens on {port}{_in(place)}"
        now = ctx.checks.sockets(place, proto, t.dport, ":" in t.daddr)
        bound = [s for s in now if s.listening] if proto == "tcp" else now
        head += (
            " (something does now: it started during the trace)"
            if bound
            else " (still nothing at the end of the trace)"
        )
    answered = _ANSWERS.get(case.answered, "")
    check = _cmd(place, f"ss -ln{flag}p 'sport = :{t.dport}'")
    return (
        f"{head}{answered}; check {check}: is the service running, bound to the right "
        "address, in the right netns?"
    )


_ANSWERS = {
    "tcp reset": "; the kernel answered with a TCP reset",
    "icmp": "; the kernel answered with ICMP port unreachable",
}


def _rcvbuff(case: DropCase, ctx: Context, _d: Diagnosis) -> str | None:
    t, place = case.flow, ctx.place
    proto = L4_NAMES.get(t.l4_proto, "") if t else ""
    if t is None or not t.dport or proto not in ("udp", "tcp"):
        return None
    port = f"{proto}/{t.dport}"
    now = ctx.checks.sockets(place, proto, t.dport, ":" in t.daddr)
    state = ""
    if now:
        state = f" (now {sum(s.rx_queue for s in now)} bytes wait in it"
        if proto == "udp":
            state += f", the socket counted {sum(s.drops for s in now)} drops"
        state += ")"
    flag = "u" if proto == "udp" else "t"
    watch = _cmd(place, f"ss -{flag}amn 'sport = :{t.dport}'")
    return (
        f"the receive buffer of the socket on {port}{_in(place)} was full{state}: the "
        f"application reads too slowly or not at all; watch {watch} (skmem r = queued "
        "bytes, rb = the limit, d = drops); read faster, or raise SO_RCVBUF (and "
        "net.core.rmem_max)"
    )


def _netfilter(case: DropCase, ctx: Context, d: Diagnosis) -> str | None:
    place = ctx.place
    where = f"netfilter dropped it{_in(place)}"
    if case.hook is not None:
        pf, hook = case.hook
        d.hook = f"{NFPROTO.get(pf, pf)} {hook_name(pf, hook).upper()}"
        where += f" at hook {d.hook}"
    if ctx.firewall is None:
        return None
    found = ctx.firewall(case)
    if isinstance(found, str):
        return f"{where}; {found}"
    d.rules = tuple(r.describe() for r, _ in found.rules)
    if case.hook is None:
        hooks = {r.hook for r, _ in found.rules if r.hook} if found.exact else set()
        if len(hooks) == 1:
            d.hook = hooks.pop().upper() + " (the rule's chain)"
            where += f" at hook {d.hook}"
        else:
            where += ", hook unknown"
    return f"{where}: {found.text}"


def _no_route(case: DropCase, ctx: Context, _d: Diagnosis) -> str | None:
    t, place = case.flow, ctx.place
    if t is None or not t.daddr:
        return None
    incoming = case.reason == _P + "IP_INNOROUTES" and case.iface
    saddr, iif = (t.saddr, case.iface) if incoming else ("", "")
    said = ctx.checks.route(place, t.daddr, saddr, iif)
    command = _cmd(place, " ".join(route_argv(t.daddr, saddr, iif)))
    return (
        f"no route to {t.daddr}{_in(place)}: {command} says: {said}; add a route for it "
        "(or a default route), or fix the sender's destination"
    )


def _rpfilter(case: DropCase, ctx: Context, _d: Diagnosis) -> str | None:
    t, place, checks = case.flow, ctx.place, ctx.checks
    if t is None or not t.saddr or not case.iface:
        return None
    back = checks.route(place, t.saddr)
    values = {
        name: checks.sysctl(place, f"net.ipv4.conf.{name}.rp_filter")
        for name in ("all", case.iface)
    }
    settings = ", ".join(f"{k}={v}" for k, v in values.items())
    return (
        f"packets from {t.saddr} came in on {case.iface}{_in(place)}, but the way back to "
        f"{t.saddr} is another: {_cmd(place, f'ip route get {t.saddr}')} says: {back}; "
        f"reverse-path filtering is on (rp_filter {settings}; the larger one applies, 1 = "
        f"strict): route {t.saddr} via {case.iface}, or use loose mode (rp_filter=2)"
    )


def _inhdr(case: DropCase, ctx: Context, d: Diagnosis) -> str | None:
    t, place = case.flow, ctx.place
    if case.func not in FORWARDERS or t is None:
        return None
    d.explanation = (
        "Its TTL (IPv6: hop limit) ran out while it was being forwarded: the router "
        "drops it and tells the sender with ICMP time exceeded."
    )
    answered = "; the kernel sent ICMP time exceeded back" if case.answered == "icmp" else ""
    return (
        f"the TTL of packets from {t.saddr} to {t.daddr} ran out while forwarding"
        f"{_in(place)}{answered}: a routing loop (`traceroute -n {t.daddr}` from the sender "
        "shows it going in circles), or the sender sets a TTL too low for the path"
    )


_SPECIFIC: dict[str, Callable[[DropCase, Context, Diagnosis], str | None]] = {
    _P + "NO_SOCKET": _no_socket,
    _P + "SOCKET_RCVBUFF": _rcvbuff,
    _P + "NETFILTER_DROP": _netfilter,
    _P + "IP_INNOROUTES": _no_route,
    _P + "IP_OUTNOROUTES": _no_route,
    _P + "IP_RPFILTER": _rpfilter,
    _P + "IP_INHDR": _inhdr,
}
