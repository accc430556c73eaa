"""pwru.diagnose.reasons: every drop reason of the matrix kernels (and of this machine's
kernel, read from its BTF) has a written explanation; unknown names get a useful generic
one; hints fill without leftovers; functions of reason-less kernels map sensibly."""

from __future__ import annotations

import itertools
import string
from pathlib import Path

import pytest

from pwru.diagnose.function_texts import AMBIGUOUS, FUNCTIONS
from pwru.diagnose.reason_texts import ALL, CORE
from pwru.diagnose.reasons import (
    FACTS,
    PLACEHOLDERS,
    canonical_name,
    explain,
    explain_function,
    fill,
    function_name,
    possible_reasons,
)
from pwru.kernel.btf import KernelBtf

DATA = Path(__file__).resolve().parents[1] / "data" / "drop_reasons"
KERNEL_LISTS = sorted(DATA.glob("*.txt"))
FULL_FACTS = {
    "netns": "b",
    "proto": "udp",
    "saddr": "192.0.2.1",
    "daddr": "192.0.2.2",
    "sport": "40000",
    "dport": "7002",
    "iface": "veth-b",
    "func": "ip_rcv_core",
    "netns_exec": "ip netns exec b",
}


def names_of(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line[:1] not in "#\n"]


def all_listed_names() -> list[str]:
    return sorted({name for path in KERNEL_LISTS for name in names_of(path)})


def fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def test_kernel_lists_are_there() -> None:
    """The saved lists of the matrix kernels and the host's kernel, plus upstream."""
    found = {path.name for path in KERNEL_LISTS}
    assert {"6.1.txt", "6.12.txt", "6.18.txt", "7.3.txt", "upstream.txt"} <= found
    for path in KERNEL_LISTS:
        names = names_of(path)
        assert len(names) > 60, path
        assert all(name.isidentifier() and name.isupper() for name in names), path
    assert "SKB_DROP_REASON_NO_SOCKET" in names_of(DATA / "6.1.txt")


@pytest.mark.parametrize("path", KERNEL_LISTS, ids=lambda p: p.name)
def test_every_listed_reason_is_known(path: Path) -> None:
    unknown = [name for name in names_of(path) if not explain(name).known]
    assert unknown == []
    for name in names_of(path):
        explanation = explain(name)
        assert explanation.reason == name
        assert explanation.text.strip() and explanation.hint.strip()


def test_host_kernel_reasons_are_known() -> None:
    """The running kernel's enum skb_drop_reason (what pwru shows) is all covered."""
    btf = KernelBtf.load("/sys/kernel/btf/vmlinux")
    by_value = btf.drop_reasons()
    assert len(by_value) > 60
    names = set(by_value.values()) | set(btf.enum_values("skb_drop_reason"))
    assert sorted(name for name in names if not explain(name).known) == []


def test_table_has_no_entry_without_a_kernel_name() -> None:
    """Every entry of the table is a name some kernel (or upstream tree) has."""
    assert sorted(set(ALL) - set(all_listed_names())) == []


@pytest.mark.parametrize("name", sorted(ALL))
def test_texts_are_short_and_hints_use_only_placeholders(name: str) -> None:
    text, hint = ALL[name]
    assert fields(text) == set(), "texts are plain: no placeholders"
    assert 20 <= len(text) <= 220 and text[0].isupper() and text.endswith(".")
    assert fields(hint) <= set(PLACEHOLDERS), fields(hint) - set(PLACEHOLDERS)
    assert hint.count("`") % 2 == 0, "unbalanced command quotes"


def fill_variants() -> list[dict[str, str]]:
    """No facts, all facts, each fact alone, and all but one."""
    variants: list[dict[str, str]] = [{}, dict(FULL_FACTS)]
    for key in FACTS:
        variants.append({key: FULL_FACTS[key]})
        variants.append({k: v for k, v in FULL_FACTS.items() if k != key})
    return variants


@pytest.mark.parametrize("name", sorted(ALL))
def test_fill_never_leaves_braces_or_none(name: str) -> None:
    hint = ALL[name][1]
    for facts in fill_variants():
        out = fill(hint, **facts)
        assert "{" not in out and "}" not in out and "None" not in out, (facts, out)
        assert "  " not in out and " :" not in out and " ," not in out, (facts, out)
    complete = fill(hint, **FULL_FACTS)
    assert "<" not in complete, complete  # every stand-in replaced by a fact


def test_fill_renders_missing_facts_sensibly() -> None:
    assert fill("{port}{in_netns}", proto="udp", dport=7002) == "udp/7002"
    assert fill("{port}", dport="53") == "port 53"
    assert fill("{port}", proto="icmp") == "icmp"
    assert fill("{port}") == "the destination port"
    assert fill("{port}", proto=17, dport=None) == "udp"
    assert fill("`ip route get {daddr}`") == "`ip route get <destination>`"
    assert fill("from {src}{on_iface}") == "from the sender"
    assert fill("from {src}{on_iface}", saddr="10.1.1.1", iface="eth0") == "from 10.1.1.1 on eth0"
    assert fill("{netns_exec}ss", netns_exec="ip netns exec a") == "ip netns exec a ss"
    assert fill("{netns_exec}ss", netns_exec="nsenter --net=/proc/1/ns/net ") == (
        "nsenter --net=/proc/1/ns/net ss"
    )
    assert fill("{netns_exec}ss") == "ss"
    assert fill("{nonsense} x") == "<nonsense> x"
    assert fill("broken {template") == "broken template"
    assert fill("{0}") == "0"


def test_no_socket_names_the_port_and_netns() -> None:
    explanation = explain("SKB_DROP_REASON_NO_SOCKET")
    assert "socket" in explanation.text and "listens" in explanation.text
    hint = fill(explanation.hint, **FULL_FACTS)
    assert "nothing listens on udp/7002 in netns b" in hint
    assert "`ip netns exec b ss -lnpu`" in hint
    tcp = fill(explanation.hint, proto="tcp", dport=443)
    assert "tcp/443" in tcp and "`ss -lnpt`" in tcp and "netns " not in tcp.split(":")[0]


def test_socket_rcvbuff_points_at_the_slow_reader() -> None:
    explanation = explain("SOCKET_RCVBUFF")
    assert "buffer was full" in explanation.text and "application" in explanation.text
    assert "`ip netns exec b ss -amnu`" in fill(explanation.hint, **FULL_FACTS)


def test_netfilter_drop_mentions_a_firewall_rule() -> None:
    explanation = explain("netfilter_drop")
    assert explanation.reason == "SKB_DROP_REASON_NETFILTER_DROP"
    assert "firewall rule" in explanation.text
    hint = fill(explanation.hint, **FULL_FACTS)
    assert "nft list ruleset" in hint and "iptables-save" in hint and "in netns b" in hint


@pytest.mark.parametrize("name", ["IP_INNOROUTES", "IP_INADDRERRORS", "IP_OUTNOROUTES"])
def test_routing_drops_ask_ip_route_get_for_the_destination(name: str) -> None:
    explanation = explain(name)
    assert "route" in explanation.text
    assert "ip route get 192.0.2.2" in fill(explanation.hint, **FULL_FACTS)


@pytest.mark.parametrize("name", ["IP_CSUM", "UDP_CSUM", "TCP_CSUM", "PKT_TOO_SMALL"])
def test_malformed_packets_name_the_device_they_came_in_on(name: str) -> None:
    explanation = explain(name)
    assert "checksum" in explanation.text or "malformed" in explanation.text
    hint = fill(explanation.hint, **FULL_FACTS)
    assert "on veth-b from 192.0.2.1" in hint  # the device it came in on
    assert fill(explanation.hint).startswith(("arrived from the sender", "malformed"))


def test_not_drops_say_so() -> None:
    for name in ("SKB_CONSUMED", "consumed", "SKB_NOT_DROPPED_YET", "not_dropped_yet"):
        explanation = explain(name)
        assert explanation.known and explanation.text.startswith("Not a drop")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("SKB_DROP_REASON_NO_SOCKET", "SKB_DROP_REASON_NO_SOCKET"),
        ("NO_SOCKET", "SKB_DROP_REASON_NO_SOCKET"),
        (" no_socket\n", "SKB_DROP_REASON_NO_SOCKET"),
        ("SKB_CONSUMED", "SKB_CONSUMED"),
        ("QDISC_DROP_OVERLIMIT", "QDISC_DROP_OVERLIMIT"),
        ("ovs_drop_meter", "OVS_DROP_METER"),
        ("FOO_BAR_BAZ", "SKB_DROP_REASON_FOO_BAR_BAZ"),
        ("RX_DROP_U_MIC_FAIL", "RX_DROP_U_MIC_FAIL"),
    ],
)
def test_canonical_name(given: str, canonical: str) -> None:
    assert canonical_name(given) == canonical


@pytest.mark.parametrize("name", ["SKB_DROP_REASON_FOO_BAR_BAZ", "FOO_BAR_BAZ", "foo_bar_baz"])
def test_unknown_name_gets_a_generic_text_from_its_words(name: str) -> None:
    explanation = explain(name)
    assert not explanation.known
    assert explanation.reason == "SKB_DROP_REASON_FOO_BAR_BAZ"
    assert "foo bar baz" in explanation.text and "FOO_BAR_BAZ" in explanation.hint
    assert fields(explanation.hint) <= set(PLACEHOLDERS)
    out = fill(explanation.hint, func="tcp_v4_rcv")
    assert "{" not in out and "in tcp_v4_rcv" in out


@pytest.mark.parametrize(
    ("name", "area"),
    [
        ("SKB_DROP_REASON_TCP_NEW_THING", " in TCP"),
        ("SKB_DROP_REASON_VXLAN_NEW_THING", " in a tunnel"),
        ("SKB_DROP_REASON_NEIGH_NEW_THING", " while resolving the next hop"),
        ("OVS_DROP_NEW_THING", " in Open vSwitch"),
        ("RX_DROP_U_NEW_THING", " in the Wi-Fi stack (mac80211)"),
        ("QDISC_DROP_NEW_THING", " in a queueing discipline"),
    ],
)
def test_unknown_names_say_where_from_their_words(name: str, area: str) -> None:
    explanation = explain(name)
    assert not explanation.known and f"packet{area} with reason" in explanation.text


def test_unnamed_numbers_and_empty_names() -> None:
    qdisc = explain(str(3 << 16 | 4))
    assert not qdisc.known and "qdisc subsystem's reason 4" in qdisc.text
    assert "reason number 7," in explain("7").text
    empty = explain("")
    assert not empty.known and empty.text and empty.hint


def test_function_table_refers_to_real_reasons() -> None:
    assert set(FUNCTIONS).isdisjoint(AMBIGUOUS)
    for func, entry in FUNCTIONS.items():
        if isinstance(entry, str):
            assert entry in CORE, func
        else:
            text, hint = entry
            assert fields(text) == set() and fields(hint) <= set(PLACEHOLDERS), func
    for func, reasons in AMBIGUOUS.items():
        assert len(reasons) >= 2 and all(reason in CORE for reason in reasons), func


def test_explain_function_where_unambiguous() -> None:
    netfilter = explain_function("nf_hook_slow")
    assert netfilter is not None and netfilter.known and netfilter.reason == "nf_hook_slow"
    assert "firewall rule" in netfilter.text
    routing = explain_function("ip_error+0x54/0x2a0")
    assert routing is not None and "forwarding" in routing.text
    assert "ip route get 192.0.2.2" in fill(routing.hint, **FULL_FACTS)
    neighbour = explain_function("arp_error_report")
    assert neighbour is not None and "ARP" in neighbour.text
    assert "multicast" in (explain_function("ip6_mc_input") or neighbour).text
    assert explain_function("ip_rcv_core.isra.0") is None
    assert explain_function("__udp4_lib_rcv") is None
    assert explain_function("no_such_function") is None


def test_possible_reasons_for_ambiguous_functions() -> None:
    assert possible_reasons("__udp4_lib_rcv+0x2f1/0xb60")[0] == "SKB_DROP_REASON_NO_SOCKET"
    assert "SKB_DROP_REASON_OTHERHOST" in possible_reasons("ip_rcv_core.isra.0")
    assert possible_reasons("nf_hook_slow") == ()
    assert possible_reasons("no_such_function") == ()


@pytest.mark.parametrize(
    ("symbol", "name"),
    [
        ("ip_rcv_core", "ip_rcv_core"),
        ("ip_rcv_core.isra.0", "ip_rcv_core"),
        ("tcp_v4_rcv+0x9e5/0xd50", "tcp_v4_rcv"),
        ("validate_xmit_skb.constprop.0+0x1a/0x300 [kernel]", "validate_xmit_skb"),
    ],
)
def test_function_name(symbol: str, name: str) -> None:
    assert function_name(symbol) == name


def test_every_fact_and_derived_placeholder_is_used_somewhere() -> None:
    """PLACEHOLDERS is the vocabulary of the table: nothing in it is dead."""
    used = set().union(*(fields(hint) for _, hint in ALL.values()))
    used |= set().union(*(fields(e[1]) for e in FUNCTIONS.values() if not isinstance(e, str)))
    assert set(PLACEHOLDERS) - used <= {"sport", "netns", "proto", "func"}


def test_all_kernel_lists_together_cover_old_and_new_reasons() -> None:
    names = set(all_listed_names())
    assert {"SKB_DROP_REASON_TCP_RFC7323_TW_PAWS", "SKB_DROP_REASON_QDISC_BURST_DROP"} <= names
    pairs = itertools.combinations(KERNEL_LISTS, 2)
    assert any(set(names_of(a)) != set(names_of(b)) for a, b in pairs)
