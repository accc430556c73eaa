"""The table behind ``pwru.diagnose.reasons``: one (text, hint) pair per drop reason.

Keys are the kernel's full enumerator names. Texts say in plain words what happened to
the packet and why; hints say what to check, as templates whose placeholders are listed
in ``reasons.PLACEHOLDERS`` (``{in_netns}``, ``{on_iface}``, ``{port}``, ``{dst}``, ...).
Meanings come from the comments of include/net/dropreason-core.h (5.17 to 7.x; before
6.2 the enum lived in include/linux/skbuff.h and include/net/dropreason.h) and, where a
comment is terse, from the code that sets the reason; the words are ours.
"""

from __future__ import annotations

# Hints shared by several reasons.
_MALFORMED = (
    "malformed on the wire: it came in{on_iface} from {src}; capture it there "
    "(`{netns_exec}tcpdump -ni {iface} -vv host {saddr}`) and check the sender or a middlebox"
)
_BAD_CSUM = (
    "arrived{on_iface} from {src} with a bad checksum: check `{netns_exec}ethtool -S {iface}` "
    "for errors, compare captures at both ends, and try without checksum offload "
    "(`{netns_exec}ethtool -K {iface} rx off`)"
)
_ROUTE_IN = (
    "ask the routing table what it does with it: `{netns_exec}ip route get {daddr} from {saddr} "
    "iif {iface}`; if this host should forward it, check "
    "`{netns_exec}sysctl net.ipv4.conf.{iface}.forwarding`"
)
_QDISC = (
    "watch the qdisc counters{in_netns}: `{netns_exec}tc -s qdisc show dev {iface}` "
    "(growing 'dropped'); raise its limit or send less"
)
_NEIGH = (
    "`{netns_exec}ip neigh show dev {iface}` shows the next hop's state; find the next hop "
    "with `{netns_exec}ip route get {daddr}` and check that it is up and on this link"
)
_TCP_CAPTURE = (
    "capture the connection (`{netns_exec}tcpdump -ni {iface} host {saddr} and port {dport}`); "
    "a few are harmless, many point at the peer or a middlebox rewriting TCP"
)
_TCP_MD5 = (
    "TCP-MD5 keys (RFC 2385, typically BGP) must match on both ends: compare the password "
    "for {src} here and at the peer; `nstat -az | grep -i md5`"
)
_TCP_AO = (
    "TCP-AO keys (RFC 5925) must match on both ends: compare the keys for {src} here and at "
    "the peer; `nstat -az | grep -i TCPAO`"
)
_TC = (
    "list the tc filters and BPF programs{in_netns}: `{netns_exec}tc filter show dev {iface} "
    "{direction}` and `{netns_exec}bpftool net`; `pwru --filter-trace-tc` shows which one"
)
_NOT_A_DROP = "nothing to fix: this is not a loss"
_MALFORMED_NDISC = (
    "a malformed IPv6 neighbour discovery message from {src}{on_iface}: capture it "
    "(`{netns_exec}tcpdump -ni {iface} icmp6`) and check the sender"
)
_CAN = (
    "check the CAN device and bus{on_iface}: "
    "`{netns_exec}ip -details -statistics link show {iface}`"
)

# Core reasons: enum skb_drop_reason.
CORE: dict[str, tuple[str, str]] = {
    "SKB_NOT_DROPPED_YET": (
        "Not a drop: the kernel's 'no reason yet' value; a packet freed with it was not lost.",
        _NOT_A_DROP + "; if it is reported as a drop{in_func}, please report it to pwru",
    ),
    "SKB_CONSUMED": (
        "Not a drop: the packet was used up normally (delivered, or a copy released).",
        _NOT_A_DROP + ": it is the normal end of a packet's life",
    ),
    "SKB_DROP_REASON_NOT_SPECIFIED": (
        "The kernel dropped the packet without naming a reason: the code that freed it sets none.",
        "look at where it died{in_func}: rerun with --output-stack to see the path, and "
        "compare `{netns_exec}nstat -az` before and after to see which counter grows",
    ),
    "SKB_DROP_REASON_NO_SOCKET": (
        "No socket wanted the packet: nothing listens on its destination port, or for TCP "
        "no connection or handshake in progress matches it.",
        "nothing listens on {port}{in_netns}: check `{netns_exec}ss -lnp{proto_flag}`; is "
        "the service running, bound to the right address, in the right netns?",
    ),
    "SKB_DROP_REASON_SOCKET_CLOSE": (
        "The socket holding the packet was closed before the application read it, so "
        "the unread data was thrown away.",
        "the application closed its socket with data still queued: check how it shuts "
        "down (`{netns_exec}ss -xp` for unix sockets, `{netns_exec}ss -tanp` for TCP/MPTCP)",
    ),
    "SKB_DROP_REASON_SOCKET_FILTER": (
        "A filter on the receiving socket rejected the packet: a socket filter "
        "(SO_ATTACH_FILTER, classic or eBPF) or a cgroup eBPF ingress program.",
        "list cgroup programs with `bpftool cgroup tree` and all with `bpftool prog show`; "
        "socket filters are set by the application itself (capture tools, DHCP clients)",
    ),
    "SKB_DROP_REASON_SOCKET_RCVBUFF": (
        "The receiving socket's buffer was full: the application does not read as fast as "
        "packets arrive.",
        "the socket on {port}{in_netns} is full: `{netns_exec}ss -amn{proto_flag}` shows its "
        "Recv-Q and drops (d); read faster, or raise SO_RCVBUF / "
        "`{netns_exec}sysctl net.core.rmem_max`",
    ),
    "SKB_DROP_REASON_UNIX_DISCONNECT": (
        "A unix datagram or seqpacket socket discarded its queued messages because it "
        "connected to another peer or found its peer closed.",
        "look at the processes on both ends of the unix socket: `{netns_exec}ss -xp`",
    ),
    "SKB_DROP_REASON_UNIX_SKIP_OOB": (
        "Out-of-band data on a unix stream socket was skipped: the application read past "
        "it without MSG_OOB.",
        "application behaviour, not the network: it reads without MSG_OOB and without SO_OOBINLINE",
    ),
    "SKB_DROP_REASON_PKT_TOO_SMALL": (
        "The packet was shorter than its headers claim: it was truncated or malformed.",
        _MALFORMED,
    ),
    "SKB_DROP_REASON_TCP_CSUM": (
        "The TCP checksum was wrong: the segment was corrupted on the way or by a faulty "
        "checksum offload.",
        _BAD_CSUM,
    ),
    "SKB_DROP_REASON_UDP_CSUM": (
        "The UDP checksum was wrong: the datagram was corrupted on the way or by a faulty "
        "checksum offload.",
        _BAD_CSUM,
    ),
    "SKB_DROP_REASON_NETFILTER_DROP": (
        "A firewall rule dropped the packet: an iptables or nftables rule (or conntrack) "
        "said DROP.",
        "find the firewall rule{in_netns}: `{netns_exec}nft list ruleset` or "
        "`{netns_exec}iptables-save -c`, and look for the counter that grows with the drops",
    ),
    "SKB_DROP_REASON_OTHERHOST": (
        "The frame was addressed to another host's MAC address: it reached this interface "
        "only through promiscuous mode or flooding, and is not for us.",
        "usually harmless (promiscuous mode, bridge flooding); if it should be for this host, "
        "compare the destination MAC with `{netns_exec}ip link show {iface}`",
    ),
    "SKB_DROP_REASON_IP_CSUM": (
        "The IP header checksum was wrong: the packet was corrupted on the way.",
        _BAD_CSUM,
    ),
    "SKB_DROP_REASON_IP_INHDR": (
        "The IP header was invalid (wrong version, header or total length), or its TTL / hop "
        "limit ran out while being forwarded.",
        "a TTL running out points at a routing loop (`{netns_exec}traceroute {daddr}`); "
        "otherwise it is " + _MALFORMED,
    ),
    "SKB_DROP_REASON_IP_RPFILTER": (
        "Reverse-path filtering dropped it: a reply to its source address would not leave "
        "through the interface it came in on.",
        "`{netns_exec}ip route get {saddr}` should leave via {device}; check "
        "`{netns_exec}sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.{iface}.rp_filter` "
        "(2 = loose) and the routes back to {src}",
    ),
    "SKB_DROP_REASON_UNICAST_IN_L2_MULTICAST": (
        "An IP unicast packet came in a link-layer multicast or broadcast frame, and the "
        "interface is set to drop those.",
        "see `{netns_exec}sysctl net.ipv4.conf.{iface}.drop_unicast_in_l2_multicast` (or the "
        "ipv6 one); the sender {src} may have a wrong neighbour entry for this host",
    ),
    "SKB_DROP_REASON_XFRM_POLICY": (
        "An IPsec (xfrm) policy check failed: the packet lacked the protection a policy "
        "requires, or a policy blocks it.",
        "`{netns_exec}ip xfrm policy` and `{netns_exec}ip xfrm state`; "
        "`{netns_exec}cat /proc/net/xfrm_stat` shows which check fails",
    ),
    "SKB_DROP_REASON_IP_NOPROTO": (
        "Nothing here handles the packet's IP protocol number (for example a GRE, SCTP or "
        "tunnel module is not loaded).",
        "load the module for that protocol (a capture shows which: "
        "`{netns_exec}tcpdump -ni {iface} -v host {saddr}`), or ask why {src} sends it",
    ),
    "SKB_DROP_REASON_PROTO_MEM": (
        "The protocol's global memory limit was reached: all sockets of the protocol "
        "together hold too much unread data (e.g. net.ipv4.udp_mem).",
        "compare `{netns_exec}cat /proc/net/sockstat` with `{netns_exec}sysctl net.ipv4.udp_mem "
        "net.ipv4.tcp_mem`; some application is not reading its sockets",
    ),
    "SKB_DROP_REASON_TCP_AUTH_HDR": (
        "The TCP-MD5 or TCP-AO signature option was malformed or appeared more than once.",
        _TCP_MD5,
    ),
    "SKB_DROP_REASON_TCP_MD5NOTFOUND": (
        "The connection requires a TCP-MD5 signature and the segment carried none.",
        _TCP_MD5,
    ),
    "SKB_DROP_REASON_TCP_MD5UNEXPECTED": (
        "The segment carried a TCP-MD5 signature, but no key is set for that peer here.",
        _TCP_MD5,
    ),
    "SKB_DROP_REASON_TCP_MD5FAILURE": (
        "The segment's TCP-MD5 signature did not verify: the keys on both ends differ.",
        _TCP_MD5,
    ),
    "SKB_DROP_REASON_TCP_AONOTFOUND": (
        "The connection requires a TCP-AO signature and the segment carried none.",
        _TCP_AO,
    ),
    "SKB_DROP_REASON_TCP_AOUNEXPECTED": (
        "The segment carried a TCP-AO signature, but none was expected for that peer.",
        _TCP_AO,
    ),
    "SKB_DROP_REASON_TCP_AOKEYNOTFOUND": (
        "The segment's TCP-AO signature names a key that is not configured here.",
        _TCP_AO,
    ),
    "SKB_DROP_REASON_TCP_AOFAILURE": (
        "The segment's TCP-AO signature did not verify.",
        _TCP_AO,
    ),
    "SKB_DROP_REASON_SOCKET_BACKLOG": (
        "The socket was busy (held by the application) and its backlog queue was full, so "
        "the segment was dropped.",
        "the receiver on {port} is overloaded: `{netns_exec}ss -tmn` and "
        "`{netns_exec}nstat -az TcpExtTCPBacklogDrop`",
    ),
    "SKB_DROP_REASON_TCP_FLAGS": (
        "The segment's TCP flags make no sense for the connection's state.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_ABORT_ON_DATA": (
        "Data arrived for a TCP connection the application had already closed, so the "
        "kernel reset the connection and dropped the data.",
        "the application closed {port} while {src} still sent: check its shutdown logic; "
        "`{netns_exec}nstat -az TcpExtTCPAbortOnData`",
    ),
    "SKB_DROP_REASON_TCP_ZEROWINDOW": (
        "The segment carried data while our receive window was zero: the application is "
        "not reading.",
        "`{netns_exec}ss -tmn` for the connection on {port}: a full Recv-Q means the "
        "application reads too slowly",
    ),
    "SKB_DROP_REASON_TCP_OLD_DATA": (
        "The segment carried data we had already received: a retransmission, often because "
        "our ACK was lost or late.",
        "a few are normal; many mean ACKs get lost on the way back to {src}: "
        "`{netns_exec}nstat -az TcpExtDelayedACKLost`",
    ),
    "SKB_DROP_REASON_TCP_OVERWINDOW": (
        "The segment's data starts beyond the receive window we advertised.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_OFOMERGE": (
        "Out-of-order data that was already waiting in the out-of-order queue (a duplicate).",
        "harmless duplicates from retransmission; many point at loss or reordering on the "
        "path from {src}",
    ),
    "SKB_DROP_REASON_TCP_RFC7323_PAWS": (
        "The segment's TCP timestamp was older than the last one seen on the connection "
        "(PAWS, RFC 7323), so it was taken for an old duplicate.",
        "often several clients behind one NAT address, or a peer with broken timestamps: "
        "`{netns_exec}nstat -az TcpExtPAWSEstab TcpExtPAWSActive`",
    ),
    "SKB_DROP_REASON_TCP_RFC7323_PAWS_ACK": (
        "An ACK with an old TCP timestamp failed the PAWS check (RFC 7323) and was dropped.",
        "usually harmless reordering; many point at NAT or broken timestamps: "
        "`{netns_exec}nstat -az TcpExtPAWSOldAck`",
    ),
    "SKB_DROP_REASON_TCP_RFC7323_TW_PAWS": (
        "A segment for a connection in TIME_WAIT had an old TCP timestamp (PAWS) and was dropped.",
        "typically a new connection from {src} reusing the ports of a recent one (NAT?): "
        "`{netns_exec}nstat -az TcpExtPAWSTimewait`",
    ),
    "SKB_DROP_REASON_TCP_RFC7323_TSECR": (
        "During the handshake, the peer echoed a TCP timestamp we never sent (bad TSecr).",
        "a middlebox may rewrite TCP timestamps: `{netns_exec}nstat -az TcpExtTSECRRejected`",
    ),
    "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW": (
        "The listening socket's accept queue was full, so a finished handshake was dropped.",
        "the application on {port} does not accept() fast enough: `{netns_exec}ss -ltn` "
        "(Recv-Q against Send-Q, the backlog) and `{netns_exec}nstat -az "
        "TcpExtListenOverflows`; raise its listen backlog and net.core.somaxconn",
    ),
    "SKB_DROP_REASON_TCP_OLD_SEQUENCE": (
        "The segment lies wholly before the data already received: an old duplicate.",
        "a few are normal retransmissions; " + _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_INVALID_SEQUENCE": (
        "The segment's sequence number is outside the receive window.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_INVALID_END_SEQUENCE": (
        "The segment ends beyond the right edge of our receive window.",
        "the sender {src} overruns our window: `{netns_exec}nstat -az TcpExtBeyondWindow`; "
        + _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_INVALID_ACK_SEQUENCE": (
        "The segment acknowledges data outside what we have sent and not yet had acknowledged.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_RESET": (
        "A reset (RST) whose sequence number does not fit the connection was ignored.",
        "stale or forged resets: " + _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_INVALID_SYN": (
        "A SYN arrived on a connection that is already established.",
        "the peer {src} restarted with the same ports, or a NAT mapped two connections "
        "together: `{netns_exec}nstat -az TcpExtTCPChallengeACK`",
    ),
    "SKB_DROP_REASON_TCP_CLOSE": (
        "The segment reached a TCP socket that is already closed.",
        "the connection on {port} is closed here while {src} still sends: check the "
        "applications' shutdown on both ends",
    ),
    "SKB_DROP_REASON_TCP_FASTOPEN": (
        "A segment was dropped by a TCP Fast Open request socket before its handshake completed.",
        "compare with Fast Open off: `{netns_exec}sysctl net.ipv4.tcp_fastopen`",
    ),
    "SKB_DROP_REASON_TCP_OLD_ACK": (
        "The ACK acknowledges data that was already acknowledged (old, but in the window).",
        "harmless: duplicate or reordered ACKs on the path from {src}",
    ),
    "SKB_DROP_REASON_TCP_TOO_OLD_ACK": (
        "The ACK is far older than anything the connection still expects.",
        "stale or forged segments: " + _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_ACK_UNSENT_DATA": (
        "The ACK acknowledges data we have not sent yet.",
        "the peer {src} is out of sync, or a middlebox rewrites sequence numbers: " + _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_OFO_QUEUE_PRUNE": (
        "Out-of-order data was thrown away to free memory: the socket's receive buffer "
        "was under pressure.",
        "the application on {port} reads too slowly or tcp_rmem is small: "
        "`{netns_exec}nstat -az TcpExtOfoPruned TcpExtPruneCalled`",
    ),
    "SKB_DROP_REASON_TCP_OFO_DROP": (
        "Out-of-order data turned out to be already received once the gap before it was "
        "filled (a duplicate).",
        "harmless duplicates from retransmission; many point at loss or reordering on the "
        "path from {src}",
    ),
    "SKB_DROP_REASON_IP_OUTNOROUTES": (
        "No route to the destination while sending or forwarding the packet.",
        "`{netns_exec}ip route get {daddr}`: add a route (or a default route){in_netns}",
    ),
    "SKB_DROP_REASON_BPF_CGROUP_EGRESS": (
        "A cgroup eBPF program on the sending side refused the packet.",
        "`bpftool cgroup tree` lists egress programs; check the sender's cgroup (container "
        "network policy, systemd IPAddressDeny=)",
    ),
    "SKB_DROP_REASON_IPV6DISABLED": (
        "IPv6 is disabled on the interface, so the IPv6 packet was discarded.",
        "`{netns_exec}sysctl net.ipv6.conf.{iface}.disable_ipv6 net.ipv6.conf.all.disable_ipv6`",
    ),
    "SKB_DROP_REASON_NEIGH_CREATEFAIL": (
        "No neighbour (ARP/NDP) entry could be created for the next hop.",
        "the neighbour table may be full: `{netns_exec}ip -s neigh | wc -l` against "
        "`{netns_exec}sysctl net.ipv4.neigh.default.gc_thresh3`",
    ),
    "SKB_DROP_REASON_NEIGH_FAILED": (
        "The next hop did not answer ARP / neighbour discovery, so the packets waiting for "
        "its address were dropped.",
        _NEIGH,
    ),
    "SKB_DROP_REASON_NEIGH_QUEUEFULL": (
        "Too many packets were waiting for the next hop's ARP/NDP answer; older ones were dropped.",
        "the next hop answers slowly or not at all: " + _NEIGH,
    ),
    "SKB_DROP_REASON_NEIGH_DEAD": (
        "The neighbour entry for the next hop was being removed (e.g. the interface went "
        "down) when the packet used it.",
        "look for link or route changes at that moment: `{netns_exec}ip monitor`",
    ),
    "SKB_DROP_REASON_NEIGH_HH_FILLFAIL": (
        "The link-layer header for the next hop could not be built.",
        "rare: check the device type of {device} and the next hop's entry: " + _NEIGH,
    ),
    "SKB_DROP_REASON_TC_EGRESS": (
        "A tc filter or eBPF program on the egress hook dropped the packet (TC_ACT_SHOT).",
        _TC.replace("{direction}", "egress"),
    ),
    "SKB_DROP_REASON_SECURITY_HOOK": (
        "A security module (SELinux, AppArmor, Smack or a BPF LSM) refused the packet for "
        "the receiving socket.",
        "look for denials in the audit log: `journalctl -k | grep -i -e avc -e apparmor`",
    ),
    "SKB_DROP_REASON_QDISC_DROP": (
        "The queueing discipline (qdisc) of the interface dropped the packet: its queue "
        "was full or its policy said so.",
        _QDISC,
    ),
    "SKB_DROP_REASON_QDISC_OVERLIMIT": (
        "The qdisc's queue was over its total size limit.",
        _QDISC,
    ),
    "SKB_DROP_REASON_QDISC_CONGESTED": (
        "An active queue management qdisc (CoDel, PIE, RED, ...) dropped it to signal congestion.",
        "expected while the link is congested; " + _QDISC,
    ),
    "SKB_DROP_REASON_QDISC_BURST_DROP": (
        "Too many packets were handed to the qdisc at once from several CPUs "
        "(net.core.qdisc_max_burst).",
        "bursty senders on {device}: `{netns_exec}sysctl net.core.qdisc_max_burst`; " + _QDISC,
    ),
    "SKB_DROP_REASON_CAKE_FLOOD": (
        "The CAKE qdisc's flood protection (BLUE) dropped packets of a flow that does not "
        "slow down.",
        _QDISC,
    ),
    "SKB_DROP_REASON_FQ_BAND_LIMIT": (
        "The fq qdisc's limit for the packet's priority band was reached.",
        _QDISC,
    ),
    "SKB_DROP_REASON_FQ_HORIZON_LIMIT": (
        "The fq qdisc dropped a packet whose send time is too far in the future (beyond its "
        "horizon).",
        "the sender sets departure times (SO_TXTIME/EDT) too far ahead; " + _QDISC,
    ),
    "SKB_DROP_REASON_FQ_FLOW_LIMIT": (
        "One flow had more packets queued in the fq qdisc than its per-flow limit.",
        "raise flow_limit of the fq qdisc on {device}; " + _QDISC,
    ),
    "SKB_DROP_REASON_DUALPI2_STEP_DROP": (
        "The DualPI2 qdisc dropped a packet of its L4S queue whose delay passed the step "
        "threshold.",
        _QDISC,
    ),
    "SKB_DROP_REASON_CPU_BACKLOG": (
        "The CPU's input backlog queue was full (or the RPS flow limit was hit) when the "
        "packet was handed to the stack.",
        "the second column of `/proc/net/softnet_stat` grows: raise "
        "`{netns_exec}sysctl net.core.netdev_max_backlog`, or spread the load (RSS/RPS)",
    ),
    "SKB_DROP_REASON_MACVLAN_BROADCAST_BACKLOG": (
        "The macvlan broadcast/multicast queue was full.",
        "raise it: `{netns_exec}ip link set {iface} type macvlan bcqueuelen N`",
    ),
    "SKB_DROP_REASON_IPVLAN_MULTICAST_BACKLOG": (
        "The ipvlan multicast queue was full.",
        "too much multicast/broadcast for the ipvlan devices on {device}: reduce it or spread "
        "it over more CPUs",
    ),
    "SKB_DROP_REASON_XDP": (
        "An XDP program on the receiving interface dropped the packet (XDP_DROP or an XDP error).",
        "`{netns_exec}ip link show {iface}` shows the XDP program, `{netns_exec}bpftool net` "
        "lists all; `pwru --filter-trace-xdp` shows which one",
    ),
    "SKB_DROP_REASON_TC_INGRESS": (
        "A tc filter or eBPF program on the ingress hook dropped the packet (TC_ACT_SHOT).",
        _TC.replace("{direction}", "ingress"),
    ),
    "SKB_DROP_REASON_UNHANDLED_PROTO": (
        "Nothing here handles the packet's protocol (an unknown EtherType, or an unsupported "
        "IPv6 option or ICMP type).",
        "capture it on {device} to see the protocol; a module may be missing, or {src} sends "
        "something unexpected",
    ),
    "SKB_DROP_REASON_SKB_CSUM": (
        "Computing the packet's checksum in software failed.",
        "check checksum offloads on {device}: `{netns_exec}ethtool -k {iface}`",
    ),
    "SKB_DROP_REASON_SKB_GSO_SEG": (
        "Splitting a large (GSO) packet into MTU-sized segments failed.",
        "try without segmentation offloads (`{netns_exec}ethtool -K {iface} gso off tso off`); "
        "check for tunnel or MTU mismatches",
    ),
    "SKB_DROP_REASON_SKB_BAD_GSO": (
        "A large (GSO) packet with inconsistent headers, possibly malicious, was refused "
        "before transmission.",
        "check what feeds {device} (a VM, a tun/tap or packet socket user) with such packets",
    ),
    "SKB_DROP_REASON_SKB_UCOPY_FAULT": (
        "Copying the data from the sending application failed (bad user memory or a "
        "zerocopy fault).",
        "a problem of the sending application (it sees EFAULT), not of the network",
    ),
    "SKB_DROP_REASON_DEV_HDR": (
        "The device found the packet's driver-specific header or metadata invalid (e.g. "
        "the virtio-net header from a tun/tap user).",
        "the program or VM writing into {device} builds bad headers",
    ),
    "SKB_DROP_REASON_DEV_READY": (
        "The device was not ready: down, not running, or not fully set up (e.g. a tun/tap "
        "queue nobody has open).",
        "`{netns_exec}ip link show {iface}`: is it UP with carrier? For tun/tap: is the "
        "process attached?",
    ),
    "SKB_DROP_REASON_FULL_RING": (
        "The device's ring or queue was full: its consumer (driver, tun/tap reader, veth "
        "peer) did not keep up.",
        "`{netns_exec}ip -s link show {iface}` and `{netns_exec}ethtool -S {iface}`; the "
        "consumer is too slow",
    ),
    "SKB_DROP_REASON_NOMEM": (
        "Memory could not be allocated while handling the packet.",
        "check `free -m`, `{netns_exec}cat /proc/net/sockstat` and `dmesg` for allocation failures",
    ),
    "SKB_DROP_REASON_HDR_TRUNC": (
        "A header the kernel had to read was missing or cut short.",
        _MALFORMED,
    ),
    "SKB_DROP_REASON_TAP_FILTER": (
        "An eBPF filter attached to the tun/tap device (TUNSETFILTEREBPF) dropped it.",
        "the program that owns {device} installed the filter; `bpftool prog show` lists it",
    ),
    "SKB_DROP_REASON_TAP_TXFILTER": (
        "The tun/tap device's address filter (TUNSETTXFILTER) dropped it.",
        "the program that owns {device} set a MAC filter that does not include this frame",
    ),
    "SKB_DROP_REASON_ICMP_CSUM": (
        "The ICMP checksum was wrong.",
        _BAD_CSUM,
    ),
    "SKB_DROP_REASON_INVALID_PROTO": (
        "The packet breaks protocol rules: e.g. an ICMP echo or timestamp to a broadcast "
        "address, or a non-IP frame where IP was required.",
        "see `{netns_exec}sysctl net.ipv4.icmp_echo_ignore_broadcasts`; otherwise ask why "
        "{src} sends it",
    ),
    "SKB_DROP_REASON_IP_INADDRERRORS": (
        "The destination address is not valid here: the packet is not for this host and "
        "forwarding is off, its route is unreachable, or (IPv6) it is the unspecified "
        "address.",
        _ROUTE_IN,
    ),
    "SKB_DROP_REASON_IP_INNOROUTES": (
        "No route matches the destination of the incoming packet (network unreachable).",
        _ROUTE_IN,
    ),
    "SKB_DROP_REASON_IP_LOCAL_SOURCE": (
        "The source address belongs to this host, yet the packet came in from outside (a "
        "loop, a duplicate address, or spoofing).",
        "`{netns_exec}ip route get {saddr}` says local: look for loops or duplicate addresses; "
        "`{netns_exec}sysctl net.ipv4.conf.{iface}.accept_local` allows such packets",
    ),
    "SKB_DROP_REASON_IP_INVALID_SOURCE": (
        "The source address cannot be a sender's (multicast, broadcast, or 0.0.0.0 outside "
        "IGMP): a 'martian' source.",
        "find the sender on {device}; `{netns_exec}sysctl -w net.ipv4.conf.all.log_martians=1` "
        "logs them",
    ),
    "SKB_DROP_REASON_IP_LOCALNET": (
        "A loopback address (127.0.0.0/8) appeared as source or destination on a "
        "non-loopback interface, and route_localnet is off.",
        "typical of DNAT to 127.0.0.1: `{netns_exec}sysctl net.ipv4.conf.{iface}.route_localnet`",
    ),
    "SKB_DROP_REASON_IP_INVALID_DEST": (
        "The destination address is 0.0.0.0.",
        "the sender {src} is misconfigured",
    ),
    "SKB_DROP_REASON_IP_TTL_EXCEEDED": (
        "The TTL (IPv4) or hop limit (IPv6) ran out while the packet was being forwarded.",
        "a routing loop or a too small initial TTL: `{netns_exec}traceroute {daddr}`",
    ),
    "SKB_DROP_REASON_PKT_TOO_BIG": (
        "The packet is larger than the MTU of its path and could not be fragmented (DF set, "
        "or IPv6).",
        "`{netns_exec}ip route get {daddr}` and `{netns_exec}ip link show {iface}` show the MTU; "
        "check that ICMP 'fragmentation needed' / 'packet too big' reaches the sender",
    ),
    "SKB_DROP_REASON_DUP_FRAG": (
        "A duplicate IP fragment arrived while the packet was being reassembled.",
        "harmless in small numbers: duplication on the path from {src}",
    ),
    "SKB_DROP_REASON_FRAG_REASM_TIMEOUT": (
        "Not all fragments of the packet arrived in time, so the partial packet was thrown away.",
        "fragments from {src} get lost (firewalls often drop non-first fragments): "
        "`{netns_exec}nstat -az IpReasmTimeout`; avoid fragmentation (MTU/MSS)",
    ),
    "SKB_DROP_REASON_FRAG_TOO_FAR": (
        "An IPv4 fragment arrived too far out of order relative to others from the same "
        "source (ipfrag_max_dist).",
        "heavy reordering from {src}: `{netns_exec}sysctl net.ipv4.ipfrag_max_dist`",
    ),
    "SKB_DROP_REASON_TCP_MINTTL": (
        "The TTL / hop limit was below the minimum the socket demands (IP_MINTTL, GTSM as "
        "in BGP ttl-security).",
        "the peer {src} is more hops away than the socket allows: check its TTL and the path",
    ),
    "SKB_DROP_REASON_IPV6_BAD_EXTHDR": (
        "An IPv6 extension header was malformed or not allowed.",
        _MALFORMED,
    ),
    "SKB_DROP_REASON_IPV6_TOO_MANY_EXTHDRS": (
        "The IPv6 packet carried more extension headers than the kernel accepts.",
        "the sender {src} stacks too many extension headers; " + _MALFORMED,
    ),
    "SKB_DROP_REASON_IPV6_NDISC_FRAG": (
        "A fragmented neighbour discovery message was ignored (NDP must not be fragmented).",
        _MALFORMED_NDISC,
    ),
    "SKB_DROP_REASON_IPV6_NDISC_HOP_LIMIT": (
        "A neighbour discovery message did not have hop limit 255, so it may come from off "
        "the link, and was ignored.",
        "something routed an NDP message from {src}; " + _MALFORMED_NDISC,
    ),
    "SKB_DROP_REASON_IPV6_NDISC_BAD_CODE": (
        "A neighbour discovery message had a non-zero ICMPv6 code.",
        _MALFORMED_NDISC,
    ),
    "SKB_DROP_REASON_IPV6_NDISC_BAD_OPTIONS": (
        "A neighbour discovery message had malformed options.",
        _MALFORMED_NDISC,
    ),
    "SKB_DROP_REASON_IPV6_NDISC_NS_OTHERHOST": (
        "A neighbour solicitation asked for an address this host does not own.",
        "normal on a shared link; if the address should be here: "
        "`{netns_exec}ip -6 addr show dev {iface}`",
    ),
    "SKB_DROP_REASON_QUEUE_PURGE": (
        "A whole queue of packets was freed at once: a socket, device or qdisc was closed "
        "or reset.",
        "rerun with --output-stack to see whose queue; it usually follows a close or a link change",
    ),
    "SKB_DROP_REASON_TC_COOKIE_ERROR": (
        "The tc subsystem failed while handling an action's extension (cookie) for the packet.",
        "a tc internal error: `{netns_exec}tc -s filter show dev {iface}`",
    ),
    "SKB_DROP_REASON_PACKET_SOCK_ERROR": (
        "A packet socket (AF_PACKET, e.g. a capture tool) matched the packet but could not "
        "take its copy; only that copy is lost.",
        "a capture or raw-socket program is too slow; `{netns_exec}ss -0p` lists packet "
        "sockets; the packet itself went on",
    ),
    "SKB_DROP_REASON_TC_CHAIN_NOTFOUND": (
        "A tc filter jumped to a chain that does not exist.",
        "`{netns_exec}tc chain show dev {iface}` and `{netns_exec}tc filter show dev {iface}`",
    ),
    "SKB_DROP_REASON_TC_RECLASSIFY_LOOP": (
        "The tc subsystem reclassified the packet too many times: its filters loop.",
        "look for 'reclassify' actions: `{netns_exec}tc filter show dev {iface}`",
    ),
    "SKB_DROP_REASON_VXLAN_INVALID_HDR": (
        "The VXLAN header was invalid (reserved bits set, or the VNI flag missing).",
        "the VTEP {src} may use a VXLAN extension (GBP, GPE) that {device} is not set up for: "
        "`{netns_exec}ip -d link show {iface}`",
    ),
    "SKB_DROP_REASON_VXLAN_VNI_NOT_FOUND": (
        "No VXLAN device here has the VNI the packet carries.",
        "`{netns_exec}ip -d link show type vxlan`: VNI and port must match the sender {src}",
    ),
    "SKB_DROP_REASON_MAC_INVALID_SOURCE": (
        "The source MAC address is invalid (all zeros, multicast or broadcast).",
        "find the sender on {device}: `{netns_exec}tcpdump -eni {iface}`",
    ),
    "SKB_DROP_REASON_VXLAN_ENTRY_EXISTS": (
        "VXLAN would not move a static (or nexthop) forwarding entry to the VTEP the packet "
        "came from.",
        "`{netns_exec}bridge fdb show dev {iface}`: a static entry points at another VTEP",
    ),
    "SKB_DROP_REASON_NO_TX_TARGET": (
        "There was nowhere to send the packet: no VXLAN remote or bridge port for its destination.",
        "`{netns_exec}bridge fdb show` and `{netns_exec}bridge link show`: no entry or no "
        "usable port for the destination MAC",
    ),
    "SKB_DROP_REASON_IP_TUNNEL_ECN": (
        "Decapsulation dropped it: the outer header carries a congestion mark (CE) that the "
        "non-ECN inner packet cannot carry (RFC 6040).",
        "the tunnel path marks congestion while the inner traffic is not ECN-capable; see "
        "the tunnel's log_ecn_error sysctl",
    ),
    "SKB_DROP_REASON_TUNNEL_TXINFO": (
        "A packet without tunnel metadata was sent to a tunnel device in external "
        "(collect_md) mode.",
        "whatever sends into {device} must set the tunnel key (a tc/eBPF program, OVS, or a "
        "route with encap)",
    ),
    "SKB_DROP_REASON_LOCAL_MAC": (
        "The packet's source MAC address is this device's own: a loop.",
        "look for a loop in the VXLAN/bridge topology around {device}",
    ),
    "SKB_DROP_REASON_ARP_PVLAN_DISABLE": (
        "Proxy ARP declined a request because the answer would go out the interface it came "
        "in on, and proxy_arp_pvlan is off.",
        "`{netns_exec}sysctl net.ipv4.conf.{iface}.proxy_arp_pvlan` (private VLAN setups need 1)",
    ),
    "SKB_DROP_REASON_MAC_IEEE_MAC_CONTROL": (
        "The frame was sent to an IEEE MAC Control address (e.g. pause frames), which a bridge "
        "never forwards.",
        "normal for flow-control frames; check the sender on {device}",
    ),
    "SKB_DROP_REASON_BRIDGE_INGRESS_STP_STATE": (
        "The bridge port's spanning tree state (disabled, blocking, listening) does not let "
        "frames through.",
        "`{netns_exec}bridge link show` shows the port state; STP may still be converging",
    ),
    "SKB_DROP_REASON_CAN_RX_INVALID_FRAME": (
        "A malformed CAN frame was received (or the device cannot receive CAN frames).",
        _CAN,
    ),
    "SKB_DROP_REASON_CANFD_RX_INVALID_FRAME": (
        "A malformed CAN FD frame was received (or the device cannot receive CAN FD frames).",
        _CAN,
    ),
    "SKB_DROP_REASON_CANXL_RX_INVALID_FRAME": (
        "A malformed CAN XL frame was received (or the device cannot receive CAN XL frames).",
        _CAN,
    ),
    "SKB_DROP_REASON_PFMEMALLOC": (
        "The packet was built from emergency memory reserves and reached a socket or path "
        "that may not use them: the system is short of memory.",
        "check memory pressure: `free -m`, `dmesg`, `{netns_exec}sysctl vm.min_free_kbytes`",
    ),
    "SKB_DROP_REASON_PSP_INPUT": (
        "PSP (transport encryption) checks failed on receive: the packet lacked required "
        "PSP protection or did not verify.",
        "compare the PSP associations of both ends of the connection on {port}",
    ),
    "SKB_DROP_REASON_PSP_OUTPUT": (
        "PSP (transport encryption) checks failed on transmit.",
        "check the PSP association of the socket and the device's PSP support on {device}",
    ),
    "SKB_DROP_REASON_RECURSION_LIMIT": (
        "The packet looped through virtual devices (a tunnel routed into itself, devices "
        "stacked too deep) beyond the nesting limit.",
        "check that the route to the tunnel's remote does not point back into the tunnel: "
        "`{netns_exec}ip route get {daddr}`",
    ),
    "SKB_DROP_REASON_SKB_RX_HEADROOM": (
        "The packet had too little free room in front of its data for the receive path to "
        "add headers it needs.",
        "a driver or virtual device on {device} delivers packets without the headroom the "
        "stack needs; compare with another driver or kernel",
    ),
    "SKB_DROP_REASON_TNL_OPT_MISMATCH": (
        "The tunnel options the packet carries (checksum, sequence number) do not match the "
        "tunnel's configuration.",
        "compare the tunnel settings of both ends (e.g. GRE icsum/iseq/ocsum/oseq): "
        "`{netns_exec}ip -d link show {iface}`",
    ),
    "SKB_DROP_REASON_TNL_OLD_SEQ": (
        "The tunnel packet's sequence number is older than expected (e.g. the remote end "
        "restarted its numbering).",
        "recreate the tunnel or drop sequence checking (iseq) on {device}",
    ),
    "SKB_DROP_REASON_GRE_INVALID_HDR": (
        "The GRE header was invalid (unsupported version, routing bit set).",
        "the GRE peer {src} uses a GRE variant this host does not accept",
    ),
    "SKB_DROP_REASON_GRE_CSUM": (
        "The GRE checksum was wrong.",
        _BAD_CSUM,
    ),
    "SKB_DROP_REASON_GRE_TUNNEL_NOT_FOUND": (
        "No GRE tunnel here matches the packet's endpoints and key.",
        "`{netns_exec}ip -d tunnel show`: local/remote address and key must match {src} -> {dst}",
    ),
    "SKB_DROP_REASON_BLACKHOLE": (
        "The packet matched a blackhole route, which discards silently.",
        "`{netns_exec}ip route get {daddr}` shows the blackhole route",
    ),
    "SKB_DROP_REASON_VXLAN_INVALID_SMAC": (
        "The source MAC address of the VXLAN inner frame is invalid (zero, multicast or "
        "broadcast).",
        "find the sender behind the VTEP {src}",
    ),
    "SKB_DROP_REASON_VXLAN_NO_REMOTE": (
        "VXLAN had no remote VTEP to send the frame to.",
        "`{netns_exec}bridge fdb show dev {iface}`: no entry (or default remote) for the "
        "destination MAC",
    ),
    "SKB_DROP_REASON_TCP_EDO_EXT_HDR": (
        "The TCP extended data offset (EDO) option gave an invalid header length.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_EDO_EXT_SEG": (
        "The TCP extended data offset (EDO) option gave an invalid segment length.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_TCP_EDO_EXT_DUP": (
        "The TCP extended data offset (EDO) option appeared twice.",
        _TCP_CAPTURE,
    ),
    "SKB_DROP_REASON_MAX": (
        "Not a reason: the end marker of the kernel's list of core reasons.",
        "it should never be reported{in_func}; please report it to pwru",
    ),
    "SKB_DROP_REASON_SUBSYS_MASK": (
        "Not a reason: the mask that selects the subsystem part of a reason value.",
        "it should never be reported{in_func}; please report it to pwru",
    ),
}

# Qdisc reasons (enum qdisc_drop_reason, include/net/dropreason-qdisc.h, 7.x): reported
# by the qdisc:qdisc_drop tracepoint, the kfree_skb one says QDISC_DROP.
QDISC: dict[str, tuple[str, str]] = {
    "QDISC_DROP_UNSPEC": (
        "A qdisc drop without a reason set.",
        _QDISC,
    ),
    "QDISC_DROP_GENERIC": (
        "The qdisc dropped the packet without a more specific reason.",
        _QDISC,
    ),
    "QDISC_DROP_OVERLIMIT": (
        "The qdisc's queue was over its configured limit.",
        _QDISC,
    ),
    "QDISC_DROP_CONGESTED": (
        "An active queue management qdisc (CoDel, PIE, RED, ...) dropped it to signal congestion.",
        "expected while the link is congested; " + _QDISC,
    ),
    "QDISC_DROP_MAXFLOWS": (
        "The qdisc's flow table was full, so no new flow could be queued (e.g. sfq).",
        "too many concurrent flows for the qdisc on {device}; " + _QDISC,
    ),
    "QDISC_DROP_FLOOD_PROTECTION": (
        "The qdisc's flood protection dropped packets of a flow that does not slow down "
        "(e.g. CAKE's BLUE).",
        _QDISC,
    ),
    "QDISC_DROP_BAND_LIMIT": (
        "The qdisc's limit for the packet's priority band was reached (e.g. fq).",
        _QDISC,
    ),
    "QDISC_DROP_HORIZON_LIMIT": (
        "The qdisc dropped a packet whose send time is too far in the future (e.g. fq horizon).",
        "the sender sets departure times (SO_TXTIME/EDT) too far ahead; " + _QDISC,
    ),
    "QDISC_DROP_FLOW_LIMIT": (
        "One flow had more packets queued than the qdisc allows per flow (fq, sfq).",
        _QDISC,
    ),
    "QDISC_DROP_L4S_STEP_NON_ECN": (
        "The DualPI2 qdisc dropped a non-ECN packet of its L4S queue whose delay passed the "
        "step threshold.",
        _QDISC,
    ),
    "QDISC_DROP_MAX": (
        "Not a reason: the end marker of the qdisc reasons.",
        "it should never be reported; please report it to pwru",
    ),
}

_OVS = (
    "check the datapath flows{in_netns}: `{netns_exec}ovs-dpctl dump-flows` (or "
    "`{netns_exec}ovs-appctl dpctl/dump-flows`) and the OpenFlow rules for this packet"
)

# Open vSwitch reasons (enum ovs_drop_reason, net/openvswitch/drop.h, 6.8 and later).
OVS: dict[str, tuple[str, str]] = {
    "OVS_DROP_LAST_ACTION": (
        "Open vSwitch dropped it: the matching flow's actions ended without sending it anywhere.",
        _OVS,
    ),
    "OVS_DROP_ACTION_ERROR": (
        "Open vSwitch dropped it because one of the flow's actions failed.",
        _OVS,
    ),
    "OVS_DROP_EXPLICIT": (
        "Open vSwitch dropped it on purpose: the matching flow says drop.",
        _OVS,
    ),
    "OVS_DROP_EXPLICIT_WITH_ERROR": (
        "Open vSwitch dropped it on purpose, with an error code set by userspace.",
        _OVS,
    ),
    "OVS_DROP_METER": (
        "An Open vSwitch meter dropped it: the flow exceeded its rate.",
        "`ovs-ofctl -O OpenFlow13 meter-stats BRIDGE`; " + _OVS,
    ),
    "OVS_DROP_RECURSION_LIMIT": (
        "Open vSwitch hit its recursion limit while running the flow's actions (a loop).",
        _OVS,
    ),
    "OVS_DROP_DEFERRED_LIMIT": (
        "Open vSwitch had too many deferred actions queued.",
        _OVS,
    ),
    "OVS_DROP_FRAG_L2_TOO_LONG": (
        "Open vSwitch could not fragment the packet: its link-layer header is too long.",
        _OVS,
    ),
    "OVS_DROP_FRAG_INVALID_PROTO": (
        "Open vSwitch could not fragment the packet: it is neither IPv4 nor IPv6.",
        _OVS,
    ),
    "OVS_DROP_CONNTRACK": (
        "The Open vSwitch conntrack action failed for the packet.",
        "`{netns_exec}conntrack -S` and the ct() actions of the flow; " + _OVS,
    ),
    "OVS_DROP_IP_TTL": (
        "Open vSwitch dropped it because its TTL ran out (dec_ttl action).",
        "a loop in the OpenFlow pipeline or a too small TTL; " + _OVS,
    ),
    "OVS_DROP_MAX": (
        "Not a reason: the end marker of the Open vSwitch reasons.",
        "it should never be reported; please report it to pwru",
    ),
}

ALL: dict[str, tuple[str, str]] = {**CORE, **QDISC, **OVS}
