"""Drops on kernels without drop reasons (before 5.17): what the dropping function says.

There the kfree_skb tracepoint only gives ``location``, the address that called
``kfree_skb``; kallsyms turns it into a function. Static helpers are often inlined, so
the name is the outer function the compiler kept (checked against the kallsyms of
Debian's 5.10.0-46-amd64). Each entry was checked in the 5.10.262 sources: every
``kfree_skb`` call that ends up in that function must share one cause. The main ones were
also seen in a 5.10 guest (tests/data/drop_reasons/kfree-callers-5.10.sh): netfilter
DROP -> nf_hook_slow, forwarding off -> ip_error, no ARP answer -> neigh_invalidate, tc
egress drop -> __dev_queue_xmit; and, ambiguous, UDP to a closed port -> __udp4_lib_rcv,
a full UDP socket -> udp_queue_rcv_one_skb, tc ingress drop -> __netif_receive_skb_core.

FUNCTIONS maps such a function to a drop reason (whose text and hint apply as they are)
or to its own (text, hint). AMBIGUOUS lists, for functions that drop for several
causes, the reasons they may stand for, most likely first; explain_function() gives
None for them.
"""

from __future__ import annotations

from pwru.diagnose.reason_texts import CORE

_P = "SKB_DROP_REASON_"
_DISCARD_ROUTE = (
    "The packet's route discards everything: an IPv6 blackhole route, an IPsec policy "
    "still waiting for its security association, or a route whose device went away.",
    "`{netns_exec}ip route get {daddr}` (or `ip -6 route get`) and `{netns_exec}ip xfrm state`",
)

FUNCTIONS: dict[str, str | tuple[str, str]] = {
    # NF_DROP verdict of a hook: kfree_skb in 4.x-5.16; 5.17+ passes NETFILTER_DROP.
    "nf_hook_slow": _P + "NETFILTER_DROP",
    # IPv4 input routing error (dst.input = ip_error): no route, unreachable/prohibit/
    # blackhole route, or not for us with forwarding off. 4.x-5.16 (5.18+ sets reasons).
    "ip_error": (
        "Routing refused the incoming packet: no route to its destination, an "
        "unreachable, prohibit or blackhole route, or it is not for this host and "
        "forwarding is off on the interface.",
        CORE[_P + "IP_INNOROUTES"][1],
    ),
    # IPv6 reject routes and "no route" (ip6_pkt_discard/_prohibit[_out]). 4.x-6.x.
    "ip6_pkt_drop": (
        "IPv6 routing refused the packet: no route to its destination, or an "
        "unreachable, prohibit or reject route.",
        "`{netns_exec}ip -6 route get {daddr} from {saddr} iif {iface}`; if this host "
        "should forward it, check `{netns_exec}sysctl net.ipv6.conf.{iface}.forwarding`",
    ),
    # dst->input/output of blackhole dsts: IPv6 blackhole routes, xfrm larval dsts
    # (policy waiting for an SA), dsts whose device went away. 4.x-6.x.
    "dst_discard_out": _DISCARD_ROUTE,
    "dst_discard": _DISCARD_ROUTE,
    # Backlog over netdev_max_backlog, RPS flow limit, or device not running. 4.x-5.16.
    "enqueue_to_backlog": (
        "The CPU's input backlog queue was full (or the RPS flow limit was hit, or the "
        "device was going down) when the packet was handed to the stack.",
        CORE[_P + "CPU_BACKLOG"][1],
    ),
    # neigh->ops->error_report: packets that waited for an ARP/ND answer that never
    # came; neigh_invalidate purges the rest of that queue. 4.x-5.17.
    "arp_error_report": _P + "NEIGH_FAILED",
    "ndisc_error_report": _P + "NEIGH_FAILED",
    "neigh_invalidate": _P + "NEIGH_FAILED",
    # Entry failed without probes, entry dead, or queue overflow (drops older packets).
    "__neigh_event_send": (
        "The next hop's link-layer address could not be resolved: ARP / neighbour "
        "discovery failed, the entry was being removed, or too many packets were already "
        "waiting for it.",
        CORE[_P + "NEIGH_FAILED"][1],
    ),
    "neigh_blackhole": _P + "NEIGH_DEAD",  # output of a dead neighbour entry
    # dev_hard_header() failed: the only kfree_skb in each. 4.x-5.17.
    "neigh_resolve_output": _P + "NEIGH_HH_FILLFAIL",
    "neigh_connected_output": _P + "NEIGH_HH_FILLFAIL",
    # TC_ACT_SHOT. In 5.10 sch_handle_egress is inlined into __dev_queue_xmit, whose
    # other drops go through kfree_skb_list; sch_handle_ingress is inlined into
    # __netif_receive_skb_core, which also drops for other causes (see AMBIGUOUS).
    "sch_handle_egress": _P + "TC_EGRESS",
    "__dev_queue_xmit": _P + "TC_EGRESS",
    "sch_handle_ingress": _P + "TC_INGRESS",
    # Generic (skb) XDP: XDP_DROP/XDP_ABORTED (or a failed copy for the program).
    "netif_receive_generic_xdp": _P + "XDP",
    "do_xdp_generic": (
        "A generic-mode XDP program redirected the packet, and the redirect failed.",
        "`{netns_exec}ip link show {iface}` shows the program; check its redirect target "
        "(map entry, target device up); `pwru --filter-trace-xdp` follows it",
    ),
    # GSO segmentation, software checksum or linearising failed. 4.x-5.16.
    "validate_xmit_skb": (
        "The packet could not be made ready for the device: splitting a large (GSO) "
        "packet or computing its checksum in software failed.",
        CORE[_P + "SKB_GSO_SEG"][1],
    ),
    # AF_PACKET receive buffer full (drop_n_acct): only that socket's reference goes.
    "packet_rcv": _P + "PACKET_SOCK_ERROR",
    "tpacket_rcv": _P + "PACKET_SOCK_ERROR",
    # Reassembly timer fired: the head fragment is freed here. 4.x-5.17.
    "ip_expire": _P + "FRAG_REASM_TIMEOUT",
    # IPv6 multicast to a group not joined on the device (or, with VRF, its slave
    # device gone). Seen for MLD/ND noise on 5.10 (kfree-callers-5.10.sh).
    "ip6_mc_input": (
        "An IPv6 multicast packet was discarded because nothing on the interface joined "
        "its group; usually background noise such as neighbour discovery for other hosts.",
        "harmless unless this host should receive that group: "
        "`{netns_exec}ip -6 maddr show dev {iface}`",
    ),
    # Every skb of a queue freed at once (socket close, device reset).
    "skb_queue_purge": _P + "QUEUE_PURGE",
}

AMBIGUOUS: dict[str, tuple[str, ...]] = {
    # No socket (after the ICMP port unreachable), short datagram, bad checksum.
    "__udp4_lib_rcv": (_P + "NO_SOCKET", _P + "UDP_CSUM", _P + "PKT_TOO_SMALL"),
    "__udp6_lib_rcv": (_P + "NO_SOCKET", _P + "UDP_CSUM", _P + "PKT_TOO_SMALL"),
    # Socket full or over udp_mem, socket filter, checksum, IPsec policy.
    **dict.fromkeys(
        (
            "udp_queue_rcv_one_skb",
            "udp_queue_rcv_skb",
            "udpv6_queue_rcv_one_skb",
            "udpv6_queue_rcv_skb",
        ),
        (
            _P + "SOCKET_RCVBUFF",
            _P + "PROTO_MEM",
            _P + "SOCKET_FILTER",
            _P + "UDP_CSUM",
            _P + "XFRM_POLICY",
        ),
    ),
    **dict.fromkeys(
        ("tcp_v4_rcv", "tcp_v6_rcv"),
        (
            _P + "NO_SOCKET",
            _P + "TCP_CSUM",
            _P + "PKT_TOO_SMALL",
            _P + "SOCKET_BACKLOG",
            _P + "SOCKET_FILTER",
            _P + "XFRM_POLICY",
            _P + "TCP_MINTTL",
            _P + "TCP_MD5FAILURE",
        ),
    ),
    **dict.fromkeys(
        ("tcp_v4_do_rcv", "tcp_v6_do_rcv"), (_P + "TCP_CSUM", _P + "TCP_FLAGS", _P + "TCP_RESET")
    ),
    # pkt_type OTHERHOST, then header, length and checksum checks.
    **dict.fromkeys(
        ("ip_rcv_core", "ip_rcv", "ip6_rcv_core", "ipv6_rcv"),
        (_P + "OTHERHOST", _P + "IP_INHDR", _P + "IP_CSUM", _P + "PKT_TOO_SMALL"),
    ),
    # Input route errors (rp_filter = EXDEV, martians), bad options, L2 multicast.
    **dict.fromkeys(
        ("ip_rcv_finish", "ip_rcv_finish_core", "ip_sublist_rcv_finish"),
        (
            _P + "IP_RPFILTER",
            _P + "IP_INVALID_SOURCE",
            _P + "IP_INHDR",
            _P + "UNICAST_IN_L2_MULTICAST",
        ),
    ),
    **dict.fromkeys(
        (
            "ip_protocol_deliver_rcu",
            "ip_local_deliver_finish",
            "ip6_protocol_deliver_rcu",
            "ip6_input_finish",
        ),
        (_P + "IP_NOPROTO", _P + "XFRM_POLICY"),
    ),
    **dict.fromkeys(
        ("icmp_rcv", "icmpv6_rcv"),
        (_P + "ICMP_CSUM", _P + "INVALID_PROTO", _P + "PKT_TOO_SMALL", _P + "XFRM_POLICY"),
    ),
    **dict.fromkeys(
        ("ip_forward", "ip6_forward"),
        (
            _P + "IP_INHDR",
            _P + "PKT_TOO_BIG",
            _P + "XFRM_POLICY",
            _P + "OTHERHOST",
            _P + "NOMEM",
        ),
    ),
    # tc ingress TC_ACT_SHOT (inlined in 5.10) or no protocol handler.
    "__netif_receive_skb_core": (_P + "TC_INGRESS", _P + "UNHANDLED_PROTO"),
    **dict.fromkeys(
        ("ip_finish_output2", "ip6_finish_output2"), (_P + "NEIGH_CREATEFAIL", _P + "NOMEM")
    ),
    # Lists freed at once: qdisc drops (to_free), device down, GSO segments.
    "kfree_skb_list": (_P + "QDISC_DROP", _P + "DEV_READY", _P + "SKB_GSO_SEG"),
    **dict.fromkeys(
        ("raw_rcv_skb", "rawv6_rcv_skb"), (_P + "SOCKET_RCVBUFF", _P + "SOCKET_FILTER")
    ),
}
