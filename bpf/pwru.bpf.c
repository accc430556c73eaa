// SPDX-License-Identifier: GPL-2.0
/*
 * pwru probe programs.
 *
 * One compiled program per attach flavour and skb argument position. The
 * control plane loads each as often as it has attach points: the probe id in
 * every event is an immediate patched in before load (see probe_id()).
 *
 * Filtering happens before a ring-buffer slot is reserved, in this order:
 * meta filters (netns, mark, ifindex; constants from .rodata, so disabled ones
 * cost nothing after the verifier prunes them), then the pcap filter, which the
 * control plane splices into the __noinline stubs below before load.
 *
 * Kernel compatibility: everything is CO-RE; tp_btf needs 5.5+, bpf ring
 * buffers 5.8+. Header offsets use the 64-bit layout (sk_buff_data_t is an
 * offset), which holds on x86_64 and arm64.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "pwru.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_HLEN 14
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MAC_HEADER_UNSET 0xffff
#define UDP_HLEN 8
#define VXLAN_PORT 4789
#define VXLAN_HLEN 8
#define GENEVE_PORT 6081
#define GENEVE_HLEN 8

volatile const struct pwru_config CFG = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the control plane */
} events SEC(".maps");

/* Events that found the ring buffer full; summed over CPUs at exit. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

/* Addresses of skbs followed by --filter-track-skb. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} tracked_skbs SEC(".maps");

/* Index of this probe in the control plane's table (see PWRU_PROBE_ID_MARKER). */
static __always_inline __u32 probe_id(void)
{
	__u64 id;

	asm volatile("%0 = 0x7077727500000000 ll" : "=r"(id));
	return (__u32)id;
}

/*
 * pcap filter stubs. The control plane replaces each body with the
 * translated tcpdump expression before load (pwru/splice.py). Contract:
 * r1 = address of the first packet byte (kernel memory, read with
 * bpf_probe_read_kernel), r2 = address one past the last linear byte;
 * r0 != 0 means "match". Both arguments are used so that clang keeps them.
 */
static __noinline __u32 filter_pcap_l2(void *data, void *data_end)
{
	return data < data_end;
}

static __noinline __u32 filter_pcap_l3(void *data, void *data_end)
{
	return data < data_end;
}

static __noinline __u32 filter_pcap_tunnel_l2(void *data, void *data_end)
{
	return data < data_end;
}

static __noinline __u32 filter_pcap_tunnel_l3(void *data, void *data_end)
{
	return data < data_end;
}

static __always_inline __u32 skb_netns(struct sk_buff *skb)
{
	__u32 netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);

	/* Locally generated skbs may have no device yet: use the socket's. */
	if (netns == 0) {
		struct sock *sk = BPF_CORE_READ(skb, sk);

		if (sk)
			netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	return netns;
}

static __always_inline bool filter_meta(struct sk_buff *skb)
{
	if (CFG.netns && skb_netns(skb) != CFG.netns)
		return false;
	if (CFG.mark_mask && (BPF_CORE_READ(skb, mark) & CFG.mark_mask) != CFG.mark)
		return false;
	if (CFG.ifindex && BPF_CORE_READ(skb, dev, ifindex) != CFG.ifindex)
		return false;
	return true;
}

static __always_inline bool mac_header_set(struct sk_buff *skb)
{
	__u16 mac = BPF_CORE_READ(skb, mac_header);

	return mac != MAC_HEADER_UNSET && mac != BPF_CORE_READ(skb, network_header);
}

/* Offset of the network header from skb->head, guessing it when unset. */
static __always_inline __u16 network_offset(struct sk_buff *skb)
{
	__u16 net = BPF_CORE_READ(skb, network_header);

	if (net == 0 && mac_header_set(skb))
		net = BPF_CORE_READ(skb, mac_header) + ETH_HLEN;
	return net;
}

static __always_inline void set_meta(struct pwru_event *ev, struct sk_buff *skb)
{
	ev->netns = skb_netns(skb);
	ev->mark = BPF_CORE_READ(skb, mark);
	ev->ifindex = BPF_CORE_READ(skb, dev, ifindex);
	ev->len = BPF_CORE_READ(skb, len);
	ev->mtu = BPF_CORE_READ(skb, dev, mtu);
	ev->protocol = BPF_CORE_READ(skb, protocol);
}

/*
 * Where the IP header starts, if this skb carries IP: skb->protocol says so
 * (or is still 0 on locally built packets that already have a network header).
 * Netlink and other non-IP skbs have neither and get no tuple.
 */
static __always_inline bool ip_header(struct sk_buff *skb, __u16 *l3)
{
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	__u16 net = network_offset(skb);
	void *head = BPF_CORE_READ(skb, head);
	__u8 version;

	if (net == 0 || (proto && proto != ETH_P_IP && proto != ETH_P_IPV6))
		return false;
	if (bpf_probe_read_kernel(&version, 1, head + net))
		return false;
	version >>= 4;
	if ((proto == ETH_P_IP && version != 4) || (proto == ETH_P_IPV6 && version != 6))
		return false;
	*l3 = net;
	return version == 4 || version == 6;
}

/*
 * Parse the IPv4/IPv6 header at head + l3 and the TCP/UDP ports after it into
 * a tuple; *l4 gets the transport header's offset. Used for the packet itself
 * and for the inner packet of a tunnel.
 */
static __always_inline bool parse_tuple(struct pwru_tuple *t, void *head, __u16 l3, __u16 *l4)
{
	struct iphdr ip4;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + l3))
		return false;
	version >>= 4;
	if (version == 4) {
		if (bpf_probe_read_kernel(&ip4, sizeof(ip4), head + l3))
			return false;
		__builtin_memcpy(t->saddr, &ip4.saddr, 4);
		__builtin_memcpy(t->daddr, &ip4.daddr, 4);
		t->l3_proto = ETH_P_IP;
		t->l4_proto = ip4.protocol;
		*l4 = l3 + ip4.ihl * 4;
	} else if (version == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + l3))
			return false;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		t->l3_proto = ETH_P_IPV6;
		t->l4_proto = ip6.nexthdr;
		*l4 = l3 + sizeof(ip6);
	} else {
		return false;
	}

	if (t->l4_proto == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + *l4) == 0) {
			t->sport = tcp.source;
			t->dport = tcp.dest;
			t->tcp_flags = ((__u8 *)&tcp)[13];
		}
	} else if (t->l4_proto == IPPROTO_UDP) {
		struct udphdr udp;

		if (bpf_probe_read_kernel(&udp, sizeof(udp), head + *l4) == 0) {
			t->sport = udp.source;
			t->dport = udp.dest;
		}
	}
	return true;
}

/*
 * Offset (from skb->head) of the inner Ethernet header when this skb is a
 * VXLAN (UDP 4789) or Geneve (UDP 6081) packet, else 0.
 */
static __always_inline __u16 tunnel_inner_offset(struct sk_buff *skb)
{
	struct pwru_tuple outer = {};
	void *head = BPF_CORE_READ(skb, head);
	__u16 l3, l4;
	__u8 geneve0;

	if (!ip_header(skb, &l3) || !parse_tuple(&outer, head, l3, &l4) ||
	    outer.l4_proto != IPPROTO_UDP)
		return 0;
	if (outer.dport == bpf_htons(VXLAN_PORT))
		return l4 + UDP_HLEN + VXLAN_HLEN;
	if (outer.dport == bpf_htons(GENEVE_PORT) &&
	    bpf_probe_read_kernel(&geneve0, 1, head + l4 + UDP_HLEN) == 0)
		return l4 + UDP_HLEN + GENEVE_HLEN + (geneve0 & 0x3f) * 4;
	return 0;
}

static __always_inline bool filter_pcap(struct sk_buff *skb)
{
	void *head = BPF_CORE_READ(skb, head);
	void *end = head + BPF_CORE_READ(skb, tail);

	if (mac_header_set(skb))
		return filter_pcap_l2(head + BPF_CORE_READ(skb, mac_header), end);
	return filter_pcap_l3(head + network_offset(skb), end);
}

/* --filter-tunnel-pcap-l2/l3: the inner packet must match (both, when both are given). */
static __always_inline bool filter_tunnel(struct sk_buff *skb)
{
	void *head = BPF_CORE_READ(skb, head);
	void *end = head + BPF_CORE_READ(skb, tail);
	__u16 inner = tunnel_inner_offset(skb);

	if (!inner)
		return false;
	return filter_pcap_tunnel_l2(head + inner, end) &&
	       filter_pcap_tunnel_l3(head + inner + ETH_HLEN, end);
}

static __always_inline bool filter_skb(struct sk_buff *skb)
{
	__u64 addr = (__u64)skb;

	if (CFG.track_skb && bpf_map_lookup_elem(&tracked_skbs, &addr))
		return true;
	if (!filter_meta(skb))
		return false;
	if (CFG.have_pcap_filter && !filter_pcap(skb))
		return false;
	if (CFG.have_tunnel_filter && !filter_tunnel(skb))
		return false;
	if (CFG.track_skb) {
		__u8 one = 1;

		bpf_map_update_elem(&tracked_skbs, &addr, &one, BPF_ANY);
	}
	return true;
}

static __always_inline bool set_tuple(struct pwru_tuple *t, struct sk_buff *skb)
{
	__u16 l3, l4;

	return ip_header(skb, &l3) && parse_tuple(t, BPF_CORE_READ(skb, head), l3, &l4);
}

/* The inner packet's tuple, for --output-tunnel (inner Ethernet + IPv4/IPv6). */
static __always_inline bool set_tunnel_tuple(struct pwru_tuple *t, struct sk_buff *skb)
{
	void *head = BPF_CORE_READ(skb, head);
	__u16 inner = tunnel_inner_offset(skb), l4;
	__be16 ethertype;

	if (!inner || bpf_probe_read_kernel(&ethertype, 2, head + inner + 12))
		return false;
	if (ethertype != bpf_htons(ETH_P_IP) && ethertype != bpf_htons(ETH_P_IPV6))
		return false;
	return parse_tuple(t, head, inner + ETH_HLEN, &l4);
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

static __always_inline int handle_skb(struct sk_buff *skb, __u32 type, __u32 probe,
				      __u64 func_ip, bool has_reason, __u64 reason)
{
	struct pwru_event *ev;

	if (!skb || !filter_skb(skb))
		return 0;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost();
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts = bpf_ktime_get_ns();
	ev->skb_addr = (__u64)skb;
	ev->func_ip = func_ip;
	ev->probe_id = probe;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->cpu = bpf_get_smp_processor_id();
	ev->type = type;
	ev->stack_id = -1;
	if (has_reason) {
		ev->reason = reason;
		ev->flags |= PWRU_EVENT_HAS_REASON;
	}
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	if (CFG.output_meta)
		set_meta(ev, skb);
	if (CFG.output_tuple && set_tuple(&ev->tuple, skb))
		ev->flags |= PWRU_EVENT_HAS_TUPLE;
	if (CFG.output_tunnel && set_tunnel_tuple(&ev->tunnel_tuple, skb))
		ev->flags |= PWRU_EVENT_HAS_TUNNEL;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * Tracepoint (tp_btf) programs, one per position of the sk_buff argument.
 * The control plane sets each copy's attach target (btf_trace_<name>) at load.
 * Section names are pwru's own so that libbpf hands them to our prepare-load
 * hook, which splices filters and patches the probe id.
 */
#define TP_SKB_PROG(pos)                                                   \
SEC("pwru_tp/skb" #pos)                                                    \
int pwru_tp_skb##pos(__u64 *ctx)                                           \
{                                                                          \
	return handle_skb((struct sk_buff *)ctx[pos], PWRU_EVENT_TRACEPOINT, \
			  probe_id(), 0, false, 0);                        \
}

TP_SKB_PROG(0)
TP_SKB_PROG(1)
TP_SKB_PROG(2)
TP_SKB_PROG(3)
TP_SKB_PROG(4)

/* kfree_skb(skb, location, reason, ...): the drop reason is argument 2. */
SEC("pwru_tp/kfree_skb")
int pwru_tp_kfree_skb(__u64 *ctx)
{
	return handle_skb((struct sk_buff *)ctx[0], PWRU_EVENT_TRACEPOINT, probe_id(), 0, true,
			  ctx[2]);
}

/*
 * kprobe programs, one per position of the sk_buff parameter. One loaded
 * program serves every function with the skb at that position: the BPF cookie
 * given at attach time is the probe id (kernel 5.15+), and bpf_get_func_ip()
 * the probed address. kprobe-multi (CONFIG_FPROBE, 5.18+) takes one cookie per
 * address, so the same body serves both.
 */
#define KPROBE_SKB_PROG(sec, name, type, pos, parm)                         \
SEC(sec "/skb" #pos)                                                        \
int name##pos(struct pt_regs *ctx)                                          \
{                                                                           \
	return handle_skb((struct sk_buff *)PT_REGS_##parm(ctx), type,      \
			  bpf_get_attach_cookie(ctx), bpf_get_func_ip(ctx), \
			  false, 0);                                        \
}

KPROBE_SKB_PROG("pwru_kprobe", pwru_kp_skb, PWRU_EVENT_KPROBE, 0, PARM1)
KPROBE_SKB_PROG("pwru_kprobe", pwru_kp_skb, PWRU_EVENT_KPROBE, 1, PARM2)
KPROBE_SKB_PROG("pwru_kprobe", pwru_kp_skb, PWRU_EVENT_KPROBE, 2, PARM3)
KPROBE_SKB_PROG("pwru_kprobe", pwru_kp_skb, PWRU_EVENT_KPROBE, 3, PARM4)
KPROBE_SKB_PROG("pwru_kprobe", pwru_kp_skb, PWRU_EVENT_KPROBE, 4, PARM5)
KPROBE_SKB_PROG("pwru_kprobe_multi", pwru_km_skb, PWRU_EVENT_KPROBE_MULTI, 0, PARM1)
KPROBE_SKB_PROG("pwru_kprobe_multi", pwru_km_skb, PWRU_EVENT_KPROBE_MULTI, 1, PARM2)
KPROBE_SKB_PROG("pwru_kprobe_multi", pwru_km_skb, PWRU_EVENT_KPROBE_MULTI, 2, PARM3)
KPROBE_SKB_PROG("pwru_kprobe_multi", pwru_km_skb, PWRU_EVENT_KPROBE_MULTI, 3, PARM4)
KPROBE_SKB_PROG("pwru_kprobe_multi", pwru_km_skb, PWRU_EVENT_KPROBE_MULTI, 4, PARM5)

/*
 * Functions whose drop reason pwru prints:
 *   kfree_skb_reason(skb, reason)          until 6.10
 *   sk_skb_reason_drop(sk, skb, reason)    6.11+
 */
#define KPROBE_REASON_PROG(sec, name, type, skb_parm, reason_parm)           \
SEC(sec "/reason")                                                           \
int name(struct pt_regs *ctx)                                                \
{                                                                            \
	return handle_skb((struct sk_buff *)PT_REGS_##skb_parm(ctx), type,   \
			  bpf_get_attach_cookie(ctx), bpf_get_func_ip(ctx),  \
			  true, PT_REGS_##reason_parm(ctx));                 \
}

KPROBE_REASON_PROG("pwru_kprobe", pwru_kp_kfree_reason, PWRU_EVENT_KPROBE, PARM1, PARM2)
KPROBE_REASON_PROG("pwru_kprobe", pwru_kp_skdrop_reason, PWRU_EVENT_KPROBE, PARM2, PARM3)
KPROBE_REASON_PROG("pwru_kprobe_multi", pwru_km_kfree_reason, PWRU_EVENT_KPROBE_MULTI, PARM1, PARM2)
KPROBE_REASON_PROG("pwru_kprobe_multi", pwru_km_skdrop_reason, PWRU_EVENT_KPROBE_MULTI, PARM2, PARM3)

/*
 * Self-test entry points, never attached: BPF_PROG_TEST_RUN hands them a packet
 * in a real skb, and they run the spliced pcap filters over it exactly as the
 * probes do (same stubs, same load path, bpf_probe_read_kernel on skb data).
 * The L3 variant skips the 14-byte Ethernet header the test run requires.
 */
static __always_inline int selftest(struct __sk_buff *ctx, bool l2)
{
	__u64 pointers[2] = { ctx->data, ctx->data_end };
	__u64 bounds[2];

	/* copy through the helper: the stubs take plain addresses, not packet pointers */
	if (bpf_probe_read_kernel(bounds, sizeof(bounds), pointers))
		return 0;
	if (l2)
		return filter_pcap_l2((void *)bounds[0], (void *)bounds[1]);
	return filter_pcap_l3((void *)(bounds[0] + ETH_HLEN), (void *)bounds[1]);
}

SEC("pwru_selftest/l2")
int pwru_selftest_l2(struct __sk_buff *ctx)
{
	return selftest(ctx, true);
}

SEC("pwru_selftest/l3")
int pwru_selftest_l3(struct __sk_buff *ctx)
{
	return selftest(ctx, false);
}
