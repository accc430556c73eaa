"""Which firewall rule dropped the packets: rule counters read at start and at stop.

A NETFILTER_DROP says a rule dropped the packet, not which one. Every iptables rule,
and every nftables rule with a ``counter``, counts the packets it matched; a rule that
dropped N traced packets counted (at least) N more by the end of the trace. So the
rules and counters of a namespace are read when pwru starts (``snapshot``: all three of
``iptables-save -c``, ``ip6tables-save -c`` and ``nft -j list ruleset``, run inside the
namespace) and again at the end for the namespaces that dropped, and ``attribute``
names the rules whose counter grew by the number of drops (or says that several
could be it, or that none counted them).

iptables-nft keeps its rules in nftables too: when iptables-save says ``(nf_tables)``,
nft's copies of the tables it showed are left out, so a rule is named once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pwru.diagnose.places import Namespaces, Place, run

IPTABLES_TOOLS = (("iptables-save", "iptables", 4), ("ip6tables-save", "ip6tables", 6))
NFT = "nft"
NF_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")  # NF_INET_* order
NETDEV_HOOKS = ("ingress", "egress")
NFPROTO = {1: "inet", 2: "ipv4", 3: "arp", 5: "netdev", 7: "bridge", 10: "ipv6"}
# nft families a drop of each NFPROTO family may come from
_NFT_FAMILIES = {2: ("ip", "inet"), 10: ("ip6", "inet"), 7: ("bridge",), 5: ("netdev",)}
_IPT_CHAIN = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]")
_IPT_RULE = re.compile(r"^\[(\d+):(\d+)\] (-A (\S+) .*)$")
_DROP_TARGET = re.compile(r" -j (DROP|REJECT)\b")


@dataclass(frozen=True)
class Rule:
    """One rule (or a chain's DROP policy) as its tool shows it, with its counter."""

    tool: str  # "iptables", "ip6tables", "nft"
    family: str  # iptables: "ipv4"/"ipv6"; nft: its table family ("ip", "inet", ...)
    table: str
    chain: str
    text: str  # the rule in the tool's words
    key: str  # the same rule in another snapshot has the same key
    packets: int | None  # None: the rule has no counter
    drops: bool  # its verdict can drop (DROP/REJECT, drop/reject, a DROP policy)
    hook: str | None = None  # the chain's hook ("input"); None for a user chain

    def describe(self) -> str:
        where = f"table {self.family} {self.table}" if self.tool == NFT else f"table {self.table}"
        return f"`{self.text}` ({self.tool}, {where}, chain {self.chain})"


@dataclass
class Ruleset:
    """The rules of one namespace at one moment; ``problems``: tools that failed."""

    rules: dict[str, Rule] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


_SBIN = ("/usr/sbin", "/sbin")  # root's tools, also where PATH lacks them


def available_tools() -> dict[str, str]:
    """Which of iptables-save, ip6tables-save, nft this machine has: name -> path."""
    found = {}
    for name in ("iptables-save", "ip6tables-save", NFT):
        path = shutil.which(name) or next(
            (p for p in (os.path.join(d, name) for d in _SBIN) if os.access(p, os.X_OK)), None
        )
        if path:
            found[name] = path
    return found


def snapshot(place: Place, tools: Mapping[str, str]) -> Ruleset:
    """The rules and counters of the namespace, read with the given tools."""
    ruleset = Ruleset()
    managed: set[tuple[str, str]] = set()  # (nft family, table) iptables-nft showed
    for save, tool, version in IPTABLES_TOOLS:
        if save not in tools:
            continue
        text = _output(place, [tools[save], "-c"], ruleset.problems)
        for rule in parse_iptables_save(text, tool):
            ruleset.rules[rule.key] = rule
        if "(nf_tables)" in text:
            family = "ip" if version == 4 else "ip6"
            managed |= {(family, t) for t in re.findall(r"^\*(\S+)", text, re.M)}
    if NFT in tools:
        text = _output(place, [tools[NFT], "-j", "list", "ruleset"], ruleset.problems)
        for rule in parse_nft_json(text):
            if (rule.family, rule.table) not in managed:
                ruleset.rules[rule.key] = rule
    return ruleset


def _output(place: Place, argv: list[str], problems: list[str]) -> str:
    try:
        done = run(place, argv)
    except OSError as error:
        problems.append(f"{argv[0]}: {error}")
        return ""
    if done.returncode != 0:
        command = " ".join([os.path.basename(argv[0]), *argv[1:]])
        problems.append(f"{command}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


# --- iptables-save -c


def parse_iptables_save(text: str, tool: str = "iptables") -> list[Rule]:
    """Rules and chain policies of ``iptables-save -c`` output."""
    family = "ipv6" if tool == "ip6tables" else "ipv4"
    rules: list[Rule] = []
    table = ""
    seen: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif chain := _IPT_CHAIN.match(line):
            name, policy, packets = chain.group(1), chain.group(2), int(chain.group(3))
            if policy in ("DROP", "REJECT"):
                text_ = f"policy {policy} of chain {name}"
                key = f"{tool}/{table}/{name}/policy"
                hook = name.lower() if name.lower() in NF_HOOKS else None
                rules.append(Rule(tool, family, table, name, text_, key, packets, True, hook))
        elif rule := _IPT_RULE.match(line):
            body, name = rule.group(3), rule.group(4)
            ident = f"{tool}/{table}/{name}/{body}"
            seen[ident] = seen.get(ident, 0) + 1
            hook = name.lower() if name.lower() in NF_HOOKS else None
            drops = bool(_DROP_TARGET.search(body + " "))
            key = f"{ident}#{seen[ident]}"
            rules.append(
                Rule(tool, family, table, name, body, key, int(rule.group(1)), drops, hook)
            )
    return rules


# --- nft -j list ruleset


def parse_nft_json(text: str) -> list[Rule]:
    """Rules (and DROP policies of base chains) of ``nft -j list ruleset`` output."""
    try:
        items = json.loads(text or "{}").get("nftables", [])
    except (ValueError, AttributeError):
        return []
    hooks: dict[tuple[str, str, str], str] = {}
    rules: list[Rule] = []
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        if isinstance(chain, dict):
            where = (chain.get("family", ""), chain.get("table", ""), chain.get("name", ""))
            if chain.get("hook"):
                hooks[where] = str(chain["hook"])
            if chain.get("policy") == "drop":
                key = "nft/{}/{}/{}/policy".format(*where)
                rules.append(Rule(NFT, *where, "policy drop", key, None, True, hooks.get(where)))
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict):
            rules.append(_nft_rule(rule, hooks))
    return rules


def _nft_rule(rule: dict[str, Any], hooks: dict[tuple[str, str, str], str]) -> Rule:
    where = (str(rule.get("family", "")), str(rule.get("table", "")), str(rule.get("chain", "")))
    exprs = [e for e in rule.get("expr", []) if isinstance(e, dict)]
    packets = None
    for expr in exprs:
        counter = expr.get("counter")
        if isinstance(counter, dict) and "packets" in counter:
            packets = int(counter["packets"])
    drops = any(("drop" in e or "reject" in e) for e in exprs)
    text = " ".join(nft_expr_text(e) for e in exprs)
    key = "nft/{}/{}/{}/".format(*where) + str(rule.get("handle", text))
    return Rule(NFT, *where, text, key, packets, drops, hooks.get(where))


def nft_expr_text(expr: dict[str, Any]) -> str:
    """One statement of a rule in nft's own words (the common ones; others by name)."""
    (key, value), *_ = expr.items()
    if key == "match" and isinstance(value, dict):
        op = value.get("op", "==")
        op_text = "" if op in ("==", "in") else f"{op} "
        return f"{_nft_value(value.get('left'))} {op_text}{_nft_value(value.get('right'))}"
    if key == "counter":  # its values change; the summary says by how much
        return "counter" if isinstance(value, dict) else f'counter name "{value}"'
    if key in ("jump", "goto") and isinstance(value, dict):
        return f"{key} {value.get('target', '')}"
    if key == "xt" and isinstance(value, dict):
        return f"xt {value.get('type', '')} {value.get('name', '')}".strip()
    return key  # drop, accept, reject, return, log, limit, ...


def _nft_value(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), *_ = value.items()
        if key == "payload" and isinstance(inner, dict):
            return f"{inner.get('protocol', '')} {inner.get('field', '')}".strip()
        if key in ("meta", "ct") and isinstance(inner, dict):
            return f"{key} {inner.get('key', '')}"
        if key == "prefix" and isinstance(inner, dict):
            return f"{inner.get('addr')}/{inner.get('len')}"
        if key == "set" and isinstance(inner, list):
            return "{ " + ", ".join(_nft_value(v) for v in inner) + " }"
        if key == "range" and isinstance(inner, list) and len(inner) == 2:
            return f"{_nft_value(inner[0])}-{_nft_value(inner[1])}"
    if isinstance(value, list):
        return "{ " + ", ".join(_nft_value(v) for v in value) + " }"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# --- which rule


@dataclass(frozen=True)
class Attribution:
    """The rules that may have dropped a group of packets, and how sure that is."""

    rules: tuple[tuple[Rule, int], ...]  # (rule, packets it counted during the trace)
    exact: bool  # their counters grew by exactly the number of drops
    text: str  # the hint's words


def grown_rules(before: Ruleset | None, after: Ruleset) -> list[tuple[Rule, int]]:
    """Rules whose packet counter grew between the snapshots (all with counts > 0 when
    there was no snapshot before)."""
    grown = []
    for key, rule in after.rules.items():
        if rule.packets is None:
            continue
        old = before.rules.get(key) if before is not None else None
        start = old.packets if old is not None and old.packets is not None else 0
        if rule.packets > start:
            grown.append((rule, rule.packets - start))
    return grown


def fits(rule: Rule, pf: int | None, hook: int | None, ip_version: int) -> bool:
    """Whether the rule can see a packet of this family at this hook."""
    if pf is None:
        pf = 10 if ip_version == 6 else 2
    if rule.tool == NFT:
        if rule.family not in _NFT_FAMILIES.get(pf, (rule.family,)):
            return False
    elif rule.family != NFPROTO.get(pf):
        return False
    return hook is None or rule.hook is None or rule.hook == hook_name(pf, hook)


def hook_name(pf: int, hook: int) -> str:
    names = NETDEV_HOOKS if pf == 5 else NF_HOOKS
    return names[hook] if 0 <= hook < len(names) else str(hook)


def attribute(
    grown: Iterable[tuple[Rule, int]],
    all_rules: Iterable[Rule],
    counts: Sequence[int],
) -> Attribution:
    """The rule(s) behind ``counts[0]`` drops (later counts: larger groups that include
    them, e.g. every NETFILTER_DROP at that hook of that namespace). ``grown`` and
    ``all_rules`` are already limited to rules that fit the packets."""
    droppers = [(rule, n) for rule, n in grown if rule.drops]
    for count in dict.fromkeys(counts):
        exact = [(rule, n) for rule, n in droppers if n == count]
        if len(exact) == 1:
            rule, n = exact[0]
            text = (
                f"the rule is {rule.describe()}: its packet counter grew by {n} "
                "during the trace, as many as the drops"
            )
            return Attribution(tuple(exact), True, text)
        if exact:
            listed = "; ".join(r.describe() for r, _ in exact)
            text = f"several rules could be it (each counted {count} packets): {listed}"
            return Attribution(tuple(exact), True, text)
    return _inexact(droppers, all_rules, counts[0])


def _inexact(
    droppers: list[tuple[Rule, int]], all_rules: Iterable[Rule], count: int
) -> Attribution:
    if droppers:
        droppers.sort(key=lambda item: -item[1])
        listed = "; ".join(f"{r.describe()} (+{n})" for r, n in droppers[:5])
        text = (
            f"no drop rule counted exactly {count} packets; these counted packets during "
            f"the trace: {listed}"
        )
        return Attribution(tuple(droppers[:5]), False, text)
    silent = [r for r in all_rules if r.drops and r.packets is None]
    if silent:
        listed = "; ".join(r.describe() for r in silent[:5])
        text = (
            "no rule counter grew; these rules drop but count nothing (add `counter` "
            f"to see which one it is): {listed}"
        )
        return Attribution(tuple((r, 0) for r in silent[:5]), False, text)
    text = (
        "no drop rule's counter grew during the trace (was the ruleset changed, or did "
        "conntrack drop it? see `conntrack -S`)"
    )
    return Attribution((), False, text)


# --- snapshots of a run


class FirewallWatch:
    """Rule counters of the namespaces that may drop: read when pwru starts (the
    --filter-netns namespace, else every namespace, at most MAX_AT_START of them, in
    parallel) and, for a namespace that dropped, again when it stops."""

    MAX_AT_START = 64
    WORKERS = 8

    def __init__(self, namespaces: Namespaces, only: int = 0) -> None:
        self.namespaces = namespaces
        self.tools = available_tools()
        self.before: dict[int, Ruleset] = {}
        self.after: dict[int, Ruleset] = {}
        self.skipped = 0  # namespaces not read at start (over MAX_AT_START)
        started = time.monotonic()
        if self.tools:
            inodes = [only] if only else sorted(namespaces.paths())
            self.skipped = max(0, len(inodes) - self.MAX_AT_START)
            self.before = self._read(inodes[: self.MAX_AT_START])
        self.start_seconds = time.monotonic() - started

    def _read(self, inodes: Sequence[int]) -> dict[int, Ruleset]:
        places = [self.namespaces.place(inode) for inode in inodes]
        with ThreadPoolExecutor(max_workers=self.WORKERS) as pool:
            sets = list(pool.map(lambda place: snapshot(place, self.tools), places))
        return dict(zip(inodes, sets))

    def attribute(
        self, netns: int, pf: int | None, hook: int | None, version: int, counts: Sequence[int]
    ) -> Attribution | str:
        """The rule(s) behind ``counts[0]`` drops in ``netns`` (see ``attribute``), or
        why no rule can be named."""
        if not self.tools:
            return "cannot name the rule: iptables-save, ip6tables-save and nft are not installed"
        after = self.after.get(netns)
        if after is None:
            after = self.after[netns] = snapshot(self.namespaces.place(netns), self.tools)
        before = self.before.get(netns)
        grown = [(r, n) for r, n in grown_rules(before, after) if fits(r, pf, hook, version)]
        rules = [r for r in after.rules.values() if fits(r, pf, hook, version)]
        found = attribute(grown, rules, counts)
        notes = [f"{p}" for p in (after.problems or (before.problems if before else []))]
        if before is None:
            notes.append("its rules were not read at start: counts since the rules were made")
        if notes:
            return Attribution(found.rules, found.exact, f"{found.text} ({'; '.join(notes)})")
        return found
