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
 * Kernel compatibility: everything is CO-RE; tp_btf and fentry need 5.5+, bpf
 * ring buffers 5.8+, bpf_snprintf_btf 5.10+. Helpers newer than that sit behind
 * .rodata switches the control plane sets from feature probes (the verifier
 * drops the branch not taken, and with it the unknown helper call):
 * bpf_get_attach_cookie and bpf_get_func_ip in kprobes (5.15+, see kprobe_id()).
 * Header offsets use the 64-bit layout (sk_buff_data_t is an offset), which holds
 * on x86_64 and arm64.
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

/*
 * Addresses of skbs followed by --filter-track-skb: added when an skb first
 * matches, removed when the kernel frees it (kfree_skbmem, or the
 * kfree_skb/consume_skb tracepoints), so a reused address is not followed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} tracked_skbs SEC(".maps");

/* tracked_skbs values: how the skb came to be followed */
#define TRACKED_BY_MATCH 1 /* it matched the filters, or is a clone of such an skb */
#define TRACKED_BY_STACK 2 /* met on the stack of a matched skb (by-stackid) */

/*
 * --filter-track-skb-by-stackid: the kernel stack on which each matched skb was
 * last seen, both ways. While the skb lives, other skbs and non-skb functions
 * (--filter-non-skb-funcs) met on the same stack are attributed to it. A stack
 * is named by the task running on it (for a softirq: the task it interrupted),
 * so the whole run that handles the packet shares one name, e.g. a sendmsg()
 * with the receive softirq it triggers. Entries go when the skb is freed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);   /* stack */
	__type(value, __u64); /* skb */
} stack_skb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);   /* skb */
	__type(value, __u64); /* stack */
} skb_stack SEC(".maps");

/* skb_clone/skb_copy in progress, per task: the skb being cloned. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} clone_parents SEC(".maps");

/*
 * Records with packet bytes (config.capture_bytes) are built here, one buffer per
 * CPU and nesting level (a program may be interrupted by another one, e.g. a
 * tracepoint in a hard interrupt): entry cpu * PWRU_SCRATCH_LEVELS + level. Then
 * they are copied to the ring at their real length (see PWRU_SCRATCH_SIZE). The
 * control plane sizes it for the possible CPUs, or shrinks it to nothing when
 * nothing is captured (declared by size, without BTF types, for that).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PWRU_SCRATCH_LEVELS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PWRU_SCRATCH_SIZE);
} scratch SEC(".maps");

/* Scratch buffers in use on this CPU (the next free level). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} scratch_depth SEC(".maps");

/* Whether the current XDP packet matched at fentry, for its fexit (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} xdp_matched SEC(".maps");

/*
 * --filter-track-bpf-helpers: the packets the traced tc/XDP programs are handling on
 * this CPU. Each program's fentry pushes its packet (0 when it did not match the
 * filters) and its fexit pops it; a helper called in between reports the innermost.
 * A stack, as one program can run inside another (bpf_clone_redirect to a device
 * with a tc program of its own); BPF programs do not change CPUs while they run.
 */
#define RUNNING_MAX 4

struct running {
	__u64 packet[RUNNING_MAX]; /* struct sk_buff * or struct xdp_buff *; 0: no match */
	__u32 type[RUNNING_MAX];   /* PWRU_EVENT_TC or PWRU_EVENT_XDP */
	__u32 depth;               /* pushes minus pops (may exceed RUNNING_MAX) */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct running);
} running_progs SEC(".maps");

/* A map lookup seen at entry, completed by its kretprobe (value = the return value). */
struct lookup_stash {
	__u64 packet;
	__u64 func_ip;
	__u64 value_offset; /* from the returned pointer to the value */
	__u32 probe;
	__u32 type;         /* event type of the packet; 0: nothing stashed */
	struct pwru_bpfmap map;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lookup_stash);
} lookup_stashes SEC(".maps");

/* Index of this probe in the control plane's table (see PWRU_PROBE_ID_MARKER). */
static __always_inline __u32 probe_id(void)
{
	__u64 id;

	asm volatile("%0 = 0x7077727500000000 ll" : "=r"(id));
	return (__u32)id;
}

/*
 * A kprobe's probe id is its BPF cookie (5.15+). Without cookies (5.10) one program
 * cannot tell its functions apart: the event says PWRU_PROBE_BY_ADDR and the control
 * plane names it by the probed address (kprobe_ip).
 */
static __always_inline __u32 kprobe_id(struct pt_regs *ctx)
{
	return CFG.kprobe_cookie ? (__u32)bpf_get_attach_cookie(ctx) : PWRU_PROBE_BY_ADDR;
}

/* The probed function's address: bpf_get_func_ip (5.15+), else from the registers. */
static __always_inline __u64 kprobe_ip(struct pt_regs *ctx)
{
	if (CFG.kprobe_func_ip)
		return bpf_get_func_ip(ctx);
#if defined(__TARGET_ARCH_x86)
	/* past the int3 (ftrace-based and optimized kprobes report the same) */
	return PT_REGS_IP(ctx) - 1;
#else
	return PT_REGS_IP(ctx);
#endif
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

/*
 * The same filters for tp_btf programs on kernels that type skb->head as memory
 * plain loads may read (6.18+, see filter_pcap): the control plane splices in
 * bodies that load packet bytes directly, no helper call.
 */
static __noinline __u32 filter_pcap_l2_direct(void *data, void *data_end)
{
	return data < data_end;
}

static __noinline __u32 filter_pcap_l3_direct(void *data, void *data_end)
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

/*
 * --filter-skb-expr 'skb->dev->ifindex == 2' and --output-skb-metadata
 * 'skb->hash': code generated from the running kernel's BTF (pwru/skbexpr.py)
 * replaces these bodies. r1 = the sk_buff (read with bpf_probe_read_kernel);
 * filter_skb_expr returns non-zero to keep the skb, read_skb_metadata writes
 * up to PWRU_MAX_SKB_METADATA values to r2[].
 */
static __noinline __u32 filter_skb_expr(struct sk_buff *skb)
{
	return skb != 0;
}

static __noinline __u32 read_skb_metadata(struct sk_buff *skb, __u64 *out)
{
	out[0] = (__u64)skb;
	return 0;
}

/* The same for XDP packets: --filter-xdp-expr 'xdp->rxq->dev->ifindex == 9' and
 * --output-xdp-metadata 'xdp->rxq->queue_index'; r1 = the xdp_buff. */
static __noinline __u32 filter_xdp_expr(struct xdp_buff *xdp)
{
	return xdp != 0;
}

static __noinline __u32 read_xdp_metadata(struct xdp_buff *xdp, __u64 *out)
{
	out[0] = (__u64)xdp;
	return 0;
}

/*
 * Reading sk_buff fields. tp_btf programs get the skb as a BTF-typed pointer and
 * load its fields directly (``btf``: a plain load with a fault fixup); kprobes (a
 * bare address) and the tc fentry (whose BTF says __sk_buff) must go through
 * bpf_probe_read_kernel. When nothing matches, these helper calls were most of
 * what a probe hit cost, so the hot path (the filters) takes ``btf`` from its
 * caller, a constant the compiler folds, and the rest reads through helpers.
 */
#define SKB_FIELD(btf, skb, field) ((btf) ? (skb)->field : BPF_CORE_READ(skb, field))

static __always_inline __u32 skb_netns(struct sk_buff *skb, bool btf)
{
	__u32 netns = btf ? skb->dev->nd_net.net->ns.inum
			  : BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);

	/* Locally generated skbs may have no device yet: use the socket's. */
	if (netns == 0) {
		struct sock *sk = SKB_FIELD(btf, skb, sk);

		if (sk)
			netns = btf ? sk->__sk_common.skc_net.net->ns.inum
				    : BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	return netns;
}

static __always_inline bool filter_meta(struct sk_buff *skb, bool btf)
{
	if (CFG.netns && skb_netns(skb, btf) != CFG.netns)
		return false;
	if (CFG.mark_mask && (SKB_FIELD(btf, skb, mark) & CFG.mark_mask) != CFG.mark)
		return false;
	if (CFG.ifindex && (btf ? skb->dev->ifindex : BPF_CORE_READ(skb, dev, ifindex)) != CFG.ifindex)
		return false;
	return true;
}

/* Where an skb's headers are: what every filter and record starts from. */
struct skb_view {
	void *head;
	__u32 tail;
	__u16 mac;
	__u16 net;
};

#define SKB_SPAN 64 /* bytes: network_header .. head, one read (see read_span) */

/*
 * The view through a helper: network_header, mac_header, tail and head sit close
 * together in every sk_buff layout, so one read copies them all. The offsets are
 * CO-RE constants; the verifier drops the fallback of the layout it does not see.
 */
static __always_inline void read_span(struct sk_buff *skb, struct skb_view *v)
{
	__u32 lo = bpf_core_field_offset(skb->network_header) & ~7, net, mac, tail, head;
	__u64 span[SKB_SPAN / 8];

	/* lo keeps the fields' alignment (the verifier wants aligned stack loads); the
	 * barrier stops clang from turning span + (x - lo) into a bitwise or */
	barrier_var(lo);
	net = bpf_core_field_offset(skb->network_header) - lo;
	mac = bpf_core_field_offset(skb->mac_header) - lo;
	tail = bpf_core_field_offset(skb->tail) - lo;
	head = bpf_core_field_offset(skb->head) - lo;

	if (head + 8 <= SKB_SPAN && mac + 2 <= SKB_SPAN && tail + 4 <= SKB_SPAN &&
	    bpf_probe_read_kernel(span, head + 8, (void *)skb + lo) == 0) {
		v->net = *(__u16 *)((void *)span + net);
		v->mac = *(__u16 *)((void *)span + mac);
		v->tail = *(__u32 *)((void *)span + tail);
		v->head = *(void **)((void *)span + head);
		return;
	}
	v->net = BPF_CORE_READ(skb, network_header);
	v->mac = BPF_CORE_READ(skb, mac_header);
	v->tail = BPF_CORE_READ(skb, tail);
	v->head = BPF_CORE_READ(skb, head);
}

static __always_inline void read_view(struct sk_buff *skb, struct skb_view *v, bool btf)
{
	if (btf) {
		v->net = skb->network_header;
		v->mac = skb->mac_header;
		v->tail = skb->tail;
		/* A filter's packet address derives from head. Loaded directly, the
		 * verifier types it as a pointer, which defeats its pruning in
		 * protochain's loops (seconds to verify, or E2BIG); those get a copy. */
		v->head = CFG.filter_loops ? BPF_CORE_READ(skb, head) : skb->head;
	} else {
		read_span(skb, v);
	}
}

static __always_inline bool mac_header_set(struct skb_view *v)
{
	return v->mac != MAC_HEADER_UNSET && v->mac != v->net;
}

/* Offset of the network header from skb->head, guessing it when unset. */
static __always_inline __u16 network_offset(struct skb_view *v)
{
	if (v->net == 0 && mac_header_set(v))
		return v->mac + ETH_HLEN;
	return v->net;
}

static __always_inline void set_meta(struct pwru_event *ev, struct sk_buff *skb)
{
	ev->netns = skb_netns(skb, false);
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
static __always_inline bool ip_header(struct sk_buff *skb, struct skb_view *v, __u16 *l3)
{
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	__u16 net = network_offset(v);
	__u8 version;

	if (net == 0 || (proto && proto != ETH_P_IP && proto != ETH_P_IPV6))
		return false;
	if (bpf_probe_read_kernel(&version, 1, v->head + net))
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
static __always_inline __u16 tunnel_inner_offset(struct sk_buff *skb, struct skb_view *v)
{
	struct pwru_tuple outer = {};
	void *head = v->head;
	__u16 l3, l4;
	__u8 geneve0;

	if (!ip_header(skb, v, &l3) || !parse_tuple(&outer, head, l3, &l4) ||
	    outer.l4_proto != IPPROTO_UDP)
		return 0;
	if (outer.dport == bpf_htons(VXLAN_PORT))
		return l4 + UDP_HLEN + VXLAN_HLEN;
	if (outer.dport == bpf_htons(GENEVE_PORT) &&
	    bpf_probe_read_kernel(&geneve0, 1, head + l4 + UDP_HLEN) == 0)
		return l4 + UDP_HLEN + GENEVE_HLEN + (geneve0 & 0x3f) * 4;
	return 0;
}

/*
 * ``btf`` programs whose head was loaded directly (read_view) may run the direct
 * bodies; CFG.filter_direct says the kernel allows it (a feature probe), and as a
 * .rodata constant it keeps the verifier from looking at the other branch.
 */
static __always_inline bool filter_pcap(struct skb_view *v, bool btf)
{
	void *end = v->head + v->tail;

	if (btf && CFG.filter_direct) {
		if (mac_header_set(v))
			return filter_pcap_l2_direct(v->head + v->mac, end);
		return filter_pcap_l3_direct(v->head + network_offset(v), end);
	}
	if (mac_header_set(v))
		return filter_pcap_l2(v->head + v->mac, end);
	return filter_pcap_l3(v->head + network_offset(v), end);
}

/* --filter-tunnel-pcap-l2/l3: the inner packet must match (both, when both are given). */
static __always_inline bool filter_tunnel(struct sk_buff *skb, struct skb_view *v)
{
	void *head = v->head;
	void *end = head + v->tail;
	__u16 inner = tunnel_inner_offset(skb, v);

	if (!inner)
		return false;
	return filter_pcap_tunnel_l2(head + inner, end) &&
	       filter_pcap_tunnel_l3(head + inner + ETH_HLEN, end);
}

/* The kernel stack this program runs on (see stack_skb). */
static __always_inline __u64 current_stack(void)
{
	return bpf_get_current_task();
}

/* Unlink the stack entry that still names ``addr``. */
static __always_inline void unlink_stack(__u64 stack, __u64 addr)
{
	__u64 *owner = bpf_map_lookup_elem(&stack_skb, &stack);

	if (owner && *owner == addr)
		bpf_map_delete_elem(&stack_skb, &stack);
}

/* A matched skb was seen on this stack: it owns the stack now. */
static __always_inline void remember_stack(__u64 addr)
{
	__u64 stack = current_stack(), *owner = bpf_map_lookup_elem(&stack_skb, &stack), *old;

	if (owner && *owner == addr)
		return; /* the usual case, every event of a followed skb: one lookup */
	old = bpf_map_lookup_elem(&skb_stack, &addr);
	if (old)
		unlink_stack(*old, addr);
	bpf_map_update_elem(&stack_skb, &stack, &addr, BPF_ANY);
	bpf_map_update_elem(&skb_stack, &addr, &stack, BPF_ANY);
}

/* ``btf``: the skb is a BTF-typed pointer (tp_btf), see SKB_FIELD. */
static __always_inline bool filter_skb(struct sk_buff *skb, bool btf)
{
	__u64 addr = (__u64)skb;
	__u8 *tracked, how = TRACKED_BY_MATCH;

	if (CFG.track_skb) {
		tracked = bpf_map_lookup_elem(&tracked_skbs, &addr);
		if (tracked) {
			/* skbs followed by stack never own one: no chain reaction */
			if (CFG.track_skb_by_stackid && *tracked == TRACKED_BY_MATCH)
				remember_stack(addr);
			return true;
		}
	}
	if (CFG.track_skb_by_stackid) {
		__u64 stack = current_stack();

		if (bpf_map_lookup_elem(&stack_skb, &stack)) {
			how = TRACKED_BY_STACK;
			bpf_map_update_elem(&tracked_skbs, &addr, &how, BPF_ANY);
			return true;
		}
	}
	struct skb_view v;

	if (!filter_meta(skb, btf))
		return false;
	if (CFG.have_pcap_filter || CFG.have_tunnel_filter)
		read_view(skb, &v, btf);
	if (CFG.have_pcap_filter && !filter_pcap(&v, btf))
		return false;
	if (CFG.have_tunnel_filter && !filter_tunnel(skb, &v))
		return false;
	if (CFG.have_skb_expr && !filter_skb_expr(skb))
		return false;
	if (CFG.track_skb)
		bpf_map_update_elem(&tracked_skbs, &addr, &how, BPF_ANY);
	if (CFG.track_skb_by_stackid)
		remember_stack(addr);
	return true;
}

static __always_inline bool set_tuple(struct pwru_tuple *t, struct sk_buff *skb,
				      struct skb_view *v)
{
	__u16 l3, l4;

	return ip_header(skb, v, &l3) && parse_tuple(t, v->head, l3, &l4);
}

/* The inner packet's tuple, for --output-tunnel (inner Ethernet + IPv4/IPv6). */
static __always_inline bool set_tunnel_tuple(struct pwru_tuple *t, struct sk_buff *skb,
					     struct skb_view *v)
{
	__u16 inner = tunnel_inner_offset(skb, v), l4;
	void *head = v->head;
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

/*
 * --output-pcap: the packet's bytes as the kernel holds them at this event.
 *
 * They start at the MAC header when one is set, else at an IPv4/IPv6 network
 * header (raw IP), else nothing is captured. The linear area (head .. tail) is
 * copied first; the rest of the packet is in page fragments, copied through
 * the direct map where the control plane found it (x86_64), else left out
 * with PWRU_PACKET_TRUNCATED set. frag_list skbs are never walked.
 */
struct pwru_frag {     /* skb_frag_t: struct bio_vec (5.4+) or struct skb_frag (netmem, 6.8+) */
	__u64 page;    /* struct page *, or netmem_ref (bit 0 set: no page behind it) */
	__u32 len;
	__u32 offset;
};

/*
 * At most config.capture_bytes of n bytes (the barrier stops clang from folding the
 * bound into a min() the verifier cannot see through). Copy lengths and offsets
 * are bounded for the verifier by PWRU_CAPTURE_MASK, never by comparing them with
 * a bound they are already known to keep: older verifiers (6.1) follow such an
 * impossible branch with impossible bounds and reject the program.
 */
static __always_inline __u64 capture_len(__u64 n)
{
	barrier_var(n);
	if (n > CFG.capture_bytes)
		n = CFG.capture_bytes;
	barrier_var(n);
	return n;
}

/* The direct-map address of a struct page's memory, or NULL when unknown. */
static __always_inline void *page_address(__u64 page, __u64 direct_map, __u64 vmemmap)
{
	if (page & 1 || page < vmemmap)
		return NULL; /* a net_iov (device memory) or not a struct page */
	return (void *)(direct_map +
			(((page - vmemmap) / bpf_core_type_size(struct page)) << CFG.page_shift));
}

/* Copy page fragments after the linear bytes: returns the bytes captured in all. */
static __always_inline __u64 copy_frags(struct sk_buff *skb, __u8 *out, __u64 copied, __u64 want)
{
	void *shinfo = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end);
	void *frags = shinfo + bpf_core_field_offset(struct skb_shared_info, frags);
	__u64 direct_map, vmemmap, n;
	struct pwru_frag frag;
	__u32 nr_frags, i;
	void *src;

	if (!CFG.page_offset_base || !CFG.vmemmap_base ||
	    bpf_core_type_size(skb_frag_t) != sizeof(frag))
		return copied;
	if (bpf_probe_read_kernel(&direct_map, 8, (void *)CFG.page_offset_base) ||
	    bpf_probe_read_kernel(&vmemmap, 8, (void *)CFG.vmemmap_base))
		return copied;
	nr_frags = BPF_CORE_READ((struct skb_shared_info *)shinfo, nr_frags);
	for (i = 0; i < PWRU_CAPTURE_FRAGS && i < nr_frags && copied < want; i++) {
		if (bpf_probe_read_kernel(&frag, sizeof(frag), frags + i * sizeof(frag)))
			break;
		src = page_address(frag.page, direct_map, vmemmap);
		if (!src)
			break;
		n = (want - copied < frag.len ? want - copied : frag.len) & PWRU_CAPTURE_MASK;
		if (bpf_probe_read_kernel(out + (copied & PWRU_CAPTURE_MASK), n, src + frag.offset))
			break;
		copied += n;
	}
	return copied;
}

static __always_inline void set_packet(struct pwru_packet *pkt, struct sk_buff *skb,
				       struct skb_view *v)
{
	__u64 start, end, tail, want, copied;
	void *head = v->head;
	__u16 l3;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (mac_header_set(v)) {
		start = v->mac;
		pkt->link = PWRU_LINK_ETHERNET;
	} else if (ip_header(skb, v, &l3)) {
		start = l3;
		pkt->link = PWRU_LINK_RAW_IP;
	} else {
		return;
	}
	/* the packet ends skb->len bytes after skb->data */
	end = (__u64)((void *)BPF_CORE_READ(skb, data) - head) + BPF_CORE_READ(skb, len);
	tail = v->tail;
	if (start >= end || start > tail) {
		pkt->flags = PWRU_PACKET_TRUNCATED;
		return;
	}
	pkt->len = end - start;
	want = capture_len(end - start);
	copied = (tail - start < want ? tail - start : want) & PWRU_CAPTURE_MASK;
	if (bpf_probe_read_kernel(pkt + 1, copied, head + start))
		copied = 0;
	if (copied < want)
		copied = copy_frags(skb, (__u8 *)(pkt + 1), copied, want);
	pkt->captured = copied;
	if (copied < want)
		pkt->flags = PWRU_PACKET_TRUNCATED;
}

/* XDP: the frame from xdp->data; bytes in fragments (multi-buffer XDP) are left out. */
static __always_inline void set_xdp_packet(struct pwru_packet *pkt, struct xdp_buff *xdp)
{
	void *data = BPF_CORE_READ(xdp, data);
	__u64 len = BPF_CORE_READ(xdp, data_end) - data, copied = capture_len(len) & PWRU_CAPTURE_MASK;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->link = PWRU_LINK_ETHERNET;
	pkt->len = len;
	if (bpf_probe_read_kernel(pkt + 1, copied, data))
		copied = 0;
	pkt->captured = copied;
	if (copied < len ||
	    (bpf_core_field_exists(xdp->flags) && BPF_CORE_READ(xdp, flags) & 1 /* HAS_FRAGS */))
		pkt->flags = PWRU_PACKET_TRUNCATED;
}

/* Size of a record before its packet part: the event plus what the config appends.
 * With --output-pcap the packet part (struct pwru_packet + captured bytes) follows;
 * a map helper's record ends with a struct pwru_bpfmap (see bpfmap_part()). */
#define RECORD_SIZE                                                               \
	(sizeof(struct pwru_event) + CFG.stack_frames * 8 + CFG.skb_text_len +    \
	 CFG.shinfo_text_len + (CFG.output_cb ? PWRU_SKB_CB_LEN : 0))

/* Append the stack, the BTF-printed skb / shared info and skb->cb the config asks
 * for (empty texts and a zeroed cb without an skb: XDP events). */
static __always_inline void set_extras(struct pwru_event *ev, void *ctx, struct sk_buff *skb)
{
	char *extra = (char *)(ev + 1);

	if (CFG.stack_frames && CFG.stack_frames <= PWRU_MAX_STACK_FRAMES) {
		if (bpf_get_stack(ctx, extra, CFG.stack_frames * 8, 0) > 0)
			ev->flags |= PWRU_EVENT_HAS_STACK;
		extra += CFG.stack_frames * 8;
	}
	if (CFG.skb_text_len && CFG.skb_text_len <= PWRU_MAX_SKB_TEXT) {
		struct btf_ptr p = { .ptr = skb, .type_id = bpf_core_type_id_kernel(struct sk_buff) };

		extra[0] = 0;
		if (skb)
			bpf_snprintf_btf(extra, CFG.skb_text_len, &p, sizeof(p), 0);
		extra += CFG.skb_text_len;
	}
	if (CFG.shinfo_text_len && CFG.shinfo_text_len <= PWRU_MAX_SKB_TEXT) {
		extra[0] = 0;
		if (skb) {
			struct btf_ptr p = {
				.ptr = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end),
				.type_id = bpf_core_type_id_kernel(struct skb_shared_info),
			};

			bpf_snprintf_btf(extra, CFG.shinfo_text_len, &p, sizeof(p), 0);
		}
		extra += CFG.shinfo_text_len;
	}
	if (CFG.output_cb) {
		if (!skb || bpf_core_read(extra, PWRU_SKB_CB_LEN, &skb->cb))
			__builtin_memset(extra, 0, PWRU_SKB_CB_LEN);
		extra += PWRU_SKB_CB_LEN;
	}
	if (CFG.capture_bytes) /* nothing captured yet: an empty packet part */
		__builtin_memset(extra, 0, sizeof(struct pwru_packet));
}

/*
 * Where a record is built: reserved in the ring when its size is fixed; with
 * packet bytes, a scratch buffer of this nesting level (see scratch).
 */
static __always_inline struct pwru_event *new_record(__u32 tail)
{
	__u32 zero = 0, level, key, *depth;
	void *slot;

	if (!CFG.capture_bytes)
		return bpf_ringbuf_reserve(&events, RECORD_SIZE + tail, 0);
	depth = bpf_map_lookup_elem(&scratch_depth, &zero);
	if (!depth || *depth >= PWRU_SCRATCH_LEVELS)
		return NULL;
	level = *depth;
	key = bpf_get_smp_processor_id() * PWRU_SCRATCH_LEVELS + level;
	slot = bpf_map_lookup_elem(&scratch, &key);
	if (slot)
		*depth = level + 1;
	return slot;
}

/* Hand a finished record to the ring (at its real length, with packet bytes);
 * ``tail``: the bytes after the packet part (a struct pwru_bpfmap, or 0). */
static __always_inline void send_record(struct pwru_event *ev, __u32 tail)
{
	struct pwru_packet *pkt;
	__u32 zero = 0, *depth;

	if (!CFG.capture_bytes) {
		bpf_ringbuf_submit(ev, 0);
		return;
	}
	pkt = (void *)((char *)ev + RECORD_SIZE);
	if (bpf_ringbuf_output(&events, ev,
			       RECORD_SIZE + sizeof(*pkt) + (pkt->captured & PWRU_CAPTURE_MASK) + tail,
			       0))
		count_lost();
	depth = bpf_map_lookup_elem(&scratch_depth, &zero);
	if (depth && *depth)
		*depth -= 1;
}

/* A zeroed record with the common header, or NULL (counted as lost);
 * ``bpfmap``: with room for a struct pwru_bpfmap at its end. */
static __always_inline struct pwru_event *new_event(__u64 addr, __u32 type, __u32 probe,
						    bool bpfmap)
{
	struct pwru_event *ev = new_record(bpfmap ? sizeof(struct pwru_bpfmap) : 0);

	if (!ev) {
		count_lost();
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts = bpf_ktime_get_ns();
	ev->skb_addr = addr;
	ev->probe_id = probe;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->cpu = bpf_get_smp_processor_id();
	ev->type = type;
	ev->stack_id = -1;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	return ev;
}

/* Where an event happened: the probe, the probed function (kprobes), and the return
 * address into the caller when the probe is told it (a tracepoint's location). */
struct site {
	__u32 type;
	__u32 probe;
	bool btf; /* the skb pointer is BTF-typed: tp_btf programs (see SKB_FIELD) */
	__u64 func_ip;
	__u64 caller_ip;
};

/* The view a record's tuples and packet bytes start from: read once, and only when
 * one of them is output. */
static __always_inline void record_view(struct sk_buff *skb, struct skb_view *v)
{
	__builtin_memset(v, 0, sizeof(*v));
	if (CFG.output_tuple || CFG.output_tunnel || CFG.capture_bytes)
		read_span(skb, v);
}

/* What an skb's event carries besides the header: meta, tuples, metadata, extras. */
static __always_inline void fill_skb(struct pwru_event *ev, void *ctx, struct sk_buff *skb,
				     struct skb_view *v)
{
	if (CFG.output_meta)
		set_meta(ev, skb);
	if (CFG.output_tuple && set_tuple(&ev->tuple, skb, v))
		ev->flags |= PWRU_EVENT_HAS_TUPLE;
	if (CFG.output_tunnel && set_tunnel_tuple(&ev->tunnel_tuple, skb, v))
		ev->flags |= PWRU_EVENT_HAS_TUNNEL;
	if (CFG.output_skb_metadata)
		read_skb_metadata(skb, ev->skb_metadata);
	set_extras(ev, ctx, skb);
}

/*
 * One event for an skb that passed the filters. ``flags`` says what ``reason`` holds
 * (PWRU_EVENT_HAS_REASON, _HAS_HOOK, _CLONE; 0: nothing).
 */
static __always_inline int report_skb(void *ctx, struct sk_buff *skb, struct site at,
				      __u32 flags, __u64 reason)
{
	struct pwru_event *ev = new_event((__u64)skb, at.type, at.probe, false);
	struct skb_view v;

	if (!ev)
		return 0;
	ev->func_ip = at.func_ip;
	ev->caller_ip = at.caller_ip;
	if (flags) {
		ev->reason = reason;
		ev->flags |= flags;
	}
	record_view(skb, &v);
	fill_skb(ev, ctx, skb, &v);
	if (CFG.capture_bytes)
		set_packet((struct pwru_packet *)((char *)ev + RECORD_SIZE), skb, &v);
	send_record(ev, 0);
	return 0;
}

static __always_inline int handle_skb_at(void *ctx, struct sk_buff *skb, struct site at,
					 __u32 flags, __u64 reason)
{
	if (!skb || !filter_skb(skb, at.btf))
		return 0;
	return report_skb(ctx, skb, at, flags, reason);
}

static __always_inline int handle_skb(void *ctx, struct sk_buff *skb, __u32 type, __u32 probe,
				      __u64 func_ip, __u32 flags, __u64 reason, __u64 caller)
{
	struct site at = { .type = type, .probe = probe, .func_ip = func_ip, .caller_ip = caller,
			   .btf = type == PWRU_EVENT_TRACEPOINT };

	return handle_skb_at(ctx, skb, at, flags, reason);
}

/* A kprobe's return address: where the probed function was called from. */
static __always_inline __u64 kprobe_caller(struct pt_regs *ctx)
{
	__u64 ip = 0;

	BPF_KPROBE_READ_RET_IP(ip, ctx);
	return ip;
}

/*
 * A kprobe's skb is a bare address. Where the kernel allows it (bpf_rdonly_cast,
 * 6.2+, callable from kprobes), the control plane splices in a body that turns it
 * into a BTF-typed pointer, whose fields the filters then load directly, as
 * tp_btf programs do; config.kprobe_btf says so. The default body is never called.
 */
static __noinline struct sk_buff *skb_btf_cast(struct sk_buff *skb)
{
	barrier_var(skb); /* else clang sees the identity and drops the call */
	return skb;
}

/*
 * A kprobe hit: the probe id (bpf_get_attach_cookie), the function's address
 * (bpf_get_func_ip) and the caller are asked only once the skb matched, since
 * helper calls are what a non-matching hit would otherwise spend most on.
 */
static __always_inline int handle_kprobe(struct pt_regs *ctx, struct sk_buff *skb, __u32 type,
					 __u32 flags, __u64 reason, bool caller)
{
	if (!skb)
		return 0;
	if (CFG.kprobe_btf ? !filter_skb(skb_btf_cast(skb), true) : !filter_skb(skb, false))
		return 0;
	struct site at = { .type = type, .probe = kprobe_id(ctx), .func_ip = kprobe_ip(ctx),
			   .caller_ip = caller ? kprobe_caller(ctx) : 0 };

	return report_skb(ctx, skb, at, flags, reason);
}

/* The kernel frees this skb: stop following its address (--filter-track-skb). */
static __always_inline void forget_skb(struct sk_buff *skb)
{
	__u64 addr = (__u64)skb, *stack;

	if (CFG.track_skb)
		bpf_map_delete_elem(&tracked_skbs, &addr);
	if (CFG.track_skb_by_stackid) {
		stack = bpf_map_lookup_elem(&skb_stack, &addr);
		if (stack) {
			unlink_stack(*stack, addr);
			bpf_map_delete_elem(&skb_stack, &addr);
		}
	}
}

/*
 * Tracepoint (tp_btf) programs, one per position of the sk_buff argument.
 * The control plane sets each copy's attach target (btf_trace_<name>) at load.
 * Section names are pwru's own so that libbpf hands them to our prepare-load
 * hook, which splices filters and patches the probe id.
 */
#define TP_SKB_PROG(pos)                                                     \
SEC("pwru_tp/skb" #pos)                                                      \
int pwru_tp_skb##pos(__u64 *ctx)                                             \
{                                                                            \
	return handle_skb(ctx, (struct sk_buff *)ctx[pos], PWRU_EVENT_TRACEPOINT, \
			  probe_id(), 0, 0, 0, 0);                           \
}

TP_SKB_PROG(0)
TP_SKB_PROG(1)
TP_SKB_PROG(2)
TP_SKB_PROG(3)
TP_SKB_PROG(4)

/*
 * kfree_skb(skb, location, reason, ...): the drop reason is argument 2; location is the
 * return address into the function that freed the skb, the CALLER pwru shows.
 */
SEC("pwru_tp/kfree_skb")
int pwru_tp_kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct site at = { .type = PWRU_EVENT_TRACEPOINT, .probe = probe_id(), .caller_ip = ctx[1],
			   .btf = true };

	handle_skb_at(ctx, skb, at, PWRU_EVENT_HAS_REASON, ctx[2]);
	forget_skb(skb);
	return 0;
}

/* consume_skb(skb): the skb's last event, so tracking forgets it. */
SEC("pwru_tp/consume_skb")
int pwru_tp_consume_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];

	handle_skb(ctx, skb, PWRU_EVENT_TRACEPOINT, probe_id(), 0, 0, 0, 0);
	forget_skb(skb);
	return 0;
}

/* consume_skb(skb, location) (Linux 6.3+): as above, with the caller from location. */
SEC("pwru_tp/consume_skb_location")
int pwru_tp_consume_skb_loc(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct site at = { .type = PWRU_EVENT_TRACEPOINT, .probe = probe_id(), .caller_ip = ctx[1],
			   .btf = true };

	handle_skb_at(ctx, skb, at, 0, 0);
	forget_skb(skb);
	return 0;
}

/* kfree_skb(skb, location) before 5.17: no drop reason, but still the skb's last event. */
SEC("pwru_tp/kfree_skb_noreason")
int pwru_tp_kfree_skb_noreason(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct site at = { .type = PWRU_EVENT_TRACEPOINT, .probe = probe_id(), .caller_ip = ctx[1],
			   .btf = true };

	handle_skb_at(ctx, skb, at, 0, 0);
	forget_skb(skb);
	return 0;
}

/*
 * kprobe programs, one per position of the sk_buff parameter. One loaded
 * program serves every function with the skb at that position: the BPF cookie
 * given at attach time is the probe id (kernel 5.15+; before, the probed address
 * names the function, see kprobe_id()). kprobe-multi (CONFIG_FPROBE, 5.18+) takes
 * one cookie per address, so the same body serves both.
 */
#define KPROBE_SKB_PROG(sec, name, type, pos, parm)                          \
SEC(sec "/skb" #pos)                                                         \
int name##pos(struct pt_regs *ctx)                                           \
{                                                                            \
	return handle_kprobe(ctx, (struct sk_buff *)PT_REGS_##parm(ctx), type, 0, 0, false); \
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
 * Functions whose drop reason pwru prints (and the caller, where it was dropped):
 *   kfree_skb_reason(skb, reason)          until 6.10
 *   sk_skb_reason_drop(sk, skb, reason)    6.11+
 */
#define KPROBE_REASON_PROG(sec, name, type, skb_parm, reason_parm)            \
SEC(sec "/reason")                                                            \
int name(struct pt_regs *ctx)                                                 \
{                                                                             \
	return handle_kprobe(ctx, (struct sk_buff *)PT_REGS_##skb_parm(ctx), type, \
			     PWRU_EVENT_HAS_REASON, PT_REGS_##reason_parm(ctx), true); \
}

KPROBE_REASON_PROG("pwru_kprobe", pwru_kp_kfree_reason, PWRU_EVENT_KPROBE, PARM1, PARM2)
KPROBE_REASON_PROG("pwru_kprobe", pwru_kp_skdrop_reason, PWRU_EVENT_KPROBE, PARM2, PARM3)
KPROBE_REASON_PROG("pwru_kprobe_multi", pwru_km_kfree_reason, PWRU_EVENT_KPROBE_MULTI, PARM1, PARM2)
KPROBE_REASON_PROG("pwru_kprobe_multi", pwru_km_skdrop_reason, PWRU_EVENT_KPROBE_MULTI, PARM2, PARM3)

/* kfree_skb(skb) before drop reasons (5.10-5.16): the caller is where it was dropped. */
#define KPROBE_KFREE_PROG(sec, name, type)                                    \
SEC(sec "/kfree")                                                             \
int name(struct pt_regs *ctx)                                                 \
{                                                                             \
	return handle_kprobe(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), type, 0, 0, true); \
}

KPROBE_KFREE_PROG("pwru_kprobe", pwru_kp_kfree, PWRU_EVENT_KPROBE)
KPROBE_KFREE_PROG("pwru_kprobe_multi", pwru_km_kfree, PWRU_EVENT_KPROBE_MULTI)

/*
 * nf_hook_slow(skb, state, ...): with config.diagnose the event carries the hook
 * (NF_INET_LOCAL_IN, ...) and family (NFPROTO_IPV4, ...), read once the skb matched.
 */
#define KPROBE_NFHOOK_PROG(sec, name, ev_type)                                   \
SEC(sec "/nfhook")                                                            \
int name(struct pt_regs *ctx)                                                 \
{                                                                             \
	struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM1(ctx);           \
	struct nf_hook_state *state = (struct nf_hook_state *)PT_REGS_PARM2(ctx); \
	__u64 hook = 0;                                                       \
                                                                              \
	if (!skb || !filter_skb(skb, false))                                  \
		return 0;                                                     \
	if (CFG.diagnose && state)                                            \
		hook = (__u64)BPF_CORE_READ(state, pf) << 8 | BPF_CORE_READ(state, hook); \
	struct site at = { .type = ev_type, .probe = kprobe_id(ctx), .func_ip = kprobe_ip(ctx) }; \
                                                                              \
	return report_skb(ctx, skb, at, hook ? PWRU_EVENT_HAS_HOOK : 0, hook);  \
}

KPROBE_NFHOOK_PROG("pwru_kprobe", pwru_kp_nfhook, PWRU_EVENT_KPROBE)
KPROBE_NFHOOK_PROG("pwru_kprobe_multi", pwru_km_nfhook, PWRU_EVENT_KPROBE_MULTI)

/*
 * --filter-track-skb: kfree_skbmem(skb) is where every skb's memory goes back.
 * When kfree_skbmem is also traced, one program reports the event and then
 * forgets the skb: with two probes on the function, the event's (running after
 * the forget) would track the dying skb again, as its bytes still match.
 */
#define KPROBE_FREE_PROG(sec, name, type)                                     \
SEC(sec "/free")                                                              \
int name(struct pt_regs *ctx)                                                 \
{                                                                             \
	struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM1(ctx);           \
                                                                              \
	handle_kprobe(ctx, skb, type, 0, 0, false);                           \
	forget_skb(skb);                                                      \
	return 0;                                                             \
}

KPROBE_FREE_PROG("pwru_kprobe", pwru_kp_free, PWRU_EVENT_KPROBE)
KPROBE_FREE_PROG("pwru_kprobe_multi", pwru_km_free, PWRU_EVENT_KPROBE_MULTI)

/* ... and when it is not traced, a kprobe that only forgets. */
SEC("pwru_kprobe/track_free")
int pwru_kp_skbmem(struct pt_regs *ctx)
{
	forget_skb((struct sk_buff *)PT_REGS_PARM1(ctx));
	return 0;
}

/*
 * --filter-non-skb-funcs: functions without an sk_buff report the matched skb
 * that owns the stack they run on (--filter-track-skb-by-stackid).
 */
SEC("pwru_kprobe/nonskb")
int pwru_kp_nonskb(struct pt_regs *ctx)
{
	__u64 stack = current_stack(), *skb;

	skb = bpf_map_lookup_elem(&stack_skb, &stack);
	if (!skb)
		return 0; /* the owner passed the filters when it took the stack */
	struct site at = {
		.type = PWRU_EVENT_KPROBE,
		.probe = kprobe_id(ctx),
		.func_ip = kprobe_ip(ctx),
	};

	return report_skb(ctx, (struct sk_buff *)*skb, at, 0, 0);
}

/*
 * --filter-track-skb follows clones and copies: at skb_clone/skb_copy entry
 * remember the original (per task), at return track the new skb when the
 * original is tracked. kretprobe, so it works wherever kprobes do.
 * With config.diagnose the new skb's birth is an event (PWRU_EVENT_CLONE, .reason =
 * the original), so the per-packet view can put the clone with its original.
 */
SEC("pwru_kprobe/clone_enter")
int pwru_kp_clone(struct pt_regs *ctx)
{
	__u64 task = bpf_get_current_pid_tgid();
	__u64 parent = PT_REGS_PARM1(ctx);

	if (CFG.track_skb && bpf_map_lookup_elem(&tracked_skbs, &parent))
		bpf_map_update_elem(&clone_parents, &task, &parent, BPF_ANY);
	return 0;
}

static __always_inline void clone_born(void *ctx, __u64 parent, __u64 child, __u32 type,
				       __u32 probe)
{
	__u8 how = TRACKED_BY_MATCH;
	struct site at = { .type = type, .probe = probe };

	bpf_map_update_elem(&tracked_skbs, &child, &how, BPF_ANY);
	if (CFG.diagnose)
		report_skb(ctx, (struct sk_buff *)child, at, PWRU_EVENT_CLONE, parent);
}

SEC("pwru_kretprobe/clone_exit")
int pwru_krp_clone(struct pt_regs *ctx)
{
	__u64 task = bpf_get_current_pid_tgid();
	__u64 child = PT_REGS_RC(ctx), parent, *found;

	found = bpf_map_lookup_elem(&clone_parents, &task);
	if (!found)
		return 0; /* no tracked original */
	parent = *found;
	bpf_map_delete_elem(&clone_parents, &task);
	if (child)
		clone_born(ctx, parent, child, PWRU_EVENT_KPROBE, kprobe_id(ctx));
	return 0;
}

/*
 * The same with fexit, where the kernel allows it: one program sees both the
 * original (argument 1) and the new skb (the return value after the two
 * arguments of skb_clone(skb, gfp) and skb_copy(skb, gfp)), with no per-task
 * map and no kretprobe instance limit.
 */
SEC("pwru_fexit/clone")
int pwru_fexit_clone(__u64 *ctx)
{
	__u64 parent = ctx[0], child = ctx[2];

	if (CFG.track_skb && child && bpf_map_lookup_elem(&tracked_skbs, &parent))
		clone_born(ctx, parent, child, PWRU_EVENT_KPROBE, probe_id());
	return 0;
}

/* --filter-track-bpf-helpers: a traced program starts handling ``packet``. */
static __always_inline void push_running(__u64 packet, __u32 type)
{
	__u32 zero = 0, slot;
	struct running *r = bpf_map_lookup_elem(&running_progs, &zero);

	if (!r)
		return;
	slot = r->depth < RUNNING_MAX ? r->depth : RUNNING_MAX - 1;
	slot &= RUNNING_MAX - 1; /* for the verifier */
	r->packet[slot] = packet;
	r->type[slot] = type;
	r->depth++;
}

/* ... and is done with it. */
static __always_inline void pop_running(void)
{
	__u32 zero = 0;
	struct running *r = bpf_map_lookup_elem(&running_progs, &zero);

	if (r && r->depth)
		r->depth--;
}

/* The packet of the innermost traced program running on this CPU, 0 if none matched. */
static __always_inline __u64 running_packet(__u32 *type)
{
	__u32 zero = 0, slot;
	struct running *r = bpf_map_lookup_elem(&running_progs, &zero);

	if (!r || !r->depth)
		return 0;
	slot = r->depth <= RUNNING_MAX ? r->depth - 1 : RUNNING_MAX - 1;
	slot &= RUNNING_MAX - 1;
	*type = r->type[slot];
	return r->packet[slot];
}

/*
 * --filter-trace-tc: fentry on a tc BPF program. Its BTF says
 * `struct __sk_buff *`, but the kernel passes the real sk_buff. The packet is
 * marked for helpers after the event is made (and unmarked before an fexit's):
 * pwru's own helper calls must not count as the traced program's.
 */
SEC("pwru_fentry/tc")
int pwru_fentry_tc(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	bool match = skb && filter_skb(skb, false); /* BTF says __sk_buff: no direct loads */

	struct site at = { .type = PWRU_EVENT_TC, .probe = probe_id() };

	if (match)
		report_skb(ctx, skb, at, 0, 0);
	if (CFG.track_bpf_helpers)
		push_running(match ? (__u64)skb : 0, PWRU_EVENT_TC);
	return 0;
}

/* The tc program returned: its helpers are done (--filter-track-bpf-helpers only). */
SEC("pwru_fexit/tc")
int pwru_fexit_tc(__u64 *ctx)
{
	pop_running();
	return 0;
}

/* --filter-trace-xdp: no sk_buff yet, only the xdp_buff the driver built. */
static __always_inline bool filter_xdp(struct xdp_buff *xdp)
{
	struct net_device *dev = BPF_CORE_READ(xdp, rxq, dev);
	void *data = BPF_CORE_READ(xdp, data);
	void *data_end = BPF_CORE_READ(xdp, data_end);

	if (CFG.netns && BPF_CORE_READ(dev, nd_net.net, ns.inum) != CFG.netns)
		return false;
	if (CFG.mark_mask)
		return false; /* XDP packets carry no mark yet */
	if (CFG.ifindex && BPF_CORE_READ(dev, ifindex) != CFG.ifindex)
		return false;
	if (CFG.have_pcap_filter && !filter_pcap_l2(data, data_end))
		return false;
	return !CFG.have_xdp_expr || filter_xdp_expr(xdp);
}

/* What an XDP packet's event carries: meta and tuple from the frame, metadata, extras. */
static __always_inline void fill_xdp(struct pwru_event *ev, void *ctx, struct xdp_buff *xdp)
{
	struct net_device *dev = BPF_CORE_READ(xdp, rxq, dev);
	void *data = BPF_CORE_READ(xdp, data);
	__be16 ethertype;
	__u16 l4;

	if ((CFG.output_meta || CFG.output_tuple) && bpf_probe_read_kernel(&ethertype, 2, data + 12))
		ethertype = 0;
	if (CFG.output_meta) {
		ev->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
		ev->ifindex = BPF_CORE_READ(dev, ifindex);
		ev->mtu = BPF_CORE_READ(dev, mtu);
		ev->len = BPF_CORE_READ(xdp, data_end) - data;
		ev->protocol = ethertype;
	}
	if (CFG.output_tuple &&
	    (ethertype == bpf_htons(ETH_P_IP) || ethertype == bpf_htons(ETH_P_IPV6)) &&
	    parse_tuple(&ev->tuple, data, ETH_HLEN, &l4))
		ev->flags |= PWRU_EVENT_HAS_TUPLE;
	if (CFG.output_xdp_metadata)
		read_xdp_metadata(xdp, ev->skb_metadata);
	set_extras(ev, ctx, NULL);
}

static __always_inline int handle_xdp(void *ctx, struct xdp_buff *xdp, bool exit, __u64 verdict)
{
	struct pwru_event *ev = new_event((__u64)xdp, PWRU_EVENT_XDP, probe_id(), false);

	if (!ev)
		return 0;
	if (exit) {
		ev->reason = verdict;
		ev->flags |= PWRU_EVENT_HAS_REASON | PWRU_EVENT_FEXIT;
	}
	fill_xdp(ev, ctx, xdp);
	if (CFG.capture_bytes)
		set_xdp_packet((struct pwru_packet *)((char *)ev + RECORD_SIZE), xdp);
	send_record(ev, 0);
	return 0;
}

SEC("pwru_fentry/xdp")
int pwru_fentry_xdp(__u64 *ctx)
{
	struct xdp_buff *xdp = (struct xdp_buff *)ctx[0];
	__u32 zero = 0;
	__u8 *matched = bpf_map_lookup_elem(&xdp_matched, &zero);
	bool match = filter_xdp(xdp);

	if (matched)
		*matched = match;
	if (match)
		handle_xdp(ctx, xdp, false, 0);
	if (CFG.track_bpf_helpers) /* after the event: see pwru_fentry_tc */
		push_running(match ? (__u64)xdp : 0, PWRU_EVENT_XDP);
	return 0;
}

/* fexit: the same packet again, with the program's verdict (XDP_PASS, XDP_DROP, ...). */
SEC("pwru_fexit/xdp")
int pwru_fexit_xdp(__u64 *ctx)
{
	__u32 zero = 0;
	__u8 *matched = bpf_map_lookup_elem(&xdp_matched, &zero);

	if (CFG.track_bpf_helpers)
		pop_running();
	if (!matched || !*matched)
		return 0;
	return handle_xdp(ctx, (struct xdp_buff *)ctx[0], true, ctx[1]);
}

/*
 * --filter-track-bpf-helpers: kprobes on the kernel functions that the traced tc/XDP
 * programs call (helpers, and the map operations the verifier calls directly). A
 * call made while a matched packet's program runs on this CPU is an event of that
 * packet: of its skb (a kprobe event) or of its xdp_buff (an XDP event).
 */
static __always_inline struct pwru_event *packet_event(void *ctx, __u64 packet, __u32 type,
							__u32 probe, __u64 func_ip, bool bpfmap)
{
	bool xdp = type == PWRU_EVENT_XDP;
	struct pwru_event *ev = new_event(packet, xdp ? PWRU_EVENT_XDP : PWRU_EVENT_KPROBE, probe,
					  bpfmap);
	struct skb_view v;

	if (!ev)
		return NULL;
	ev->func_ip = func_ip;
	if (xdp) {
		fill_xdp(ev, ctx, (struct xdp_buff *)packet);
	} else {
		record_view((struct sk_buff *)packet, &v);
		fill_skb(ev, ctx, (struct sk_buff *)packet, &v);
	}
	return ev;
}

SEC("pwru_kprobe/helper")
int pwru_kp_helper(struct pt_regs *ctx)
{
	__u32 type = 0;
	__u64 packet = running_packet(&type);
	struct pwru_event *ev;

	if (!packet)
		return 0;
	ev = packet_event(ctx, packet, type, kprobe_id(ctx), kprobe_ip(ctx), false);
	if (ev)
		send_record(ev, 0);
	return 0;
}

/* --output-bpfmap: the struct pwru_bpfmap at the end of a map helper's record. */
static __always_inline struct pwru_bpfmap *bpfmap_part(struct pwru_event *ev)
{
	/* after the packet part, empty in a helper's record (set_extras zeroed it) */
	__u32 packet = CFG.capture_bytes ? sizeof(struct pwru_packet) : 0;

	return (struct pwru_bpfmap *)((char *)ev + RECORD_SIZE + packet);
}

/* At most PWRU_BPFMAP_DATA_LEN of ``size`` bytes at ``from`` (zeros if unreadable). */
static __always_inline void read_map_bytes(__u8 *to, __u32 size, const void *from)
{
	if (size > PWRU_BPFMAP_DATA_LEN)
		size = PWRU_BPFMAP_DATA_LEN;
	bpf_probe_read_kernel(to, size, from);
}

/* The map's id, name and sizes, and the key (the helper's first two arguments). */
static __always_inline void read_map(struct pwru_bpfmap *m, struct pt_regs *ctx)
{
	struct bpf_map *map = (struct bpf_map *)PT_REGS_PARM1(ctx);

	m->id = BPF_CORE_READ(map, id);
	m->key_size = BPF_CORE_READ(map, key_size);
	m->value_size = BPF_CORE_READ(map, value_size);
	m->flags = 0;
	if (BPF_CORE_READ_STR_INTO(&m->name, map, name) < 0)
		m->name[0] = 0;
	read_map_bytes(m->key, m->key_size, (void *)PT_REGS_PARM2(ctx));
}

/* map_update_elem(map, key, value, flags) and map_delete_elem(map, key). */
static __always_inline int report_map_change(struct pt_regs *ctx, bool has_value)
{
	__u32 type = 0;
	__u64 packet = running_packet(&type);
	struct pwru_event *ev;
	struct pwru_bpfmap *m;

	if (!packet)
		return 0;
	ev = packet_event(ctx, packet, type, kprobe_id(ctx), kprobe_ip(ctx), true);
	if (!ev)
		return 0;
	m = bpfmap_part(ev);
	read_map(m, ctx);
	if (has_value) {
		read_map_bytes(m->value, m->value_size, (void *)PT_REGS_PARM3(ctx));
		m->flags |= PWRU_BPFMAP_HAS_VALUE;
	}
	ev->flags |= PWRU_EVENT_HAS_BPFMAP;
	send_record(ev, sizeof(struct pwru_bpfmap));
	return 0;
}

SEC("pwru_kprobe/map_update")
int pwru_kp_map_update(struct pt_regs *ctx)
{
	return report_map_change(ctx, true);
}

SEC("pwru_kprobe/map_delete")
int pwru_kp_map_delete(struct pt_regs *ctx)
{
	return report_map_change(ctx, false);
}

/*
 * map_lookup_elem(map, key): the key at entry, the value when it returns. Most
 * lookups return the value's address; __htab_map_lookup_elem (the call the verifier
 * puts in hash map lookups) returns its struct htab_elem, whose value follows the
 * key, rounded up to 8 bytes (``returns_elem``).
 */
static __always_inline int stash_lookup(struct pt_regs *ctx, bool returns_elem)
{
	__u32 zero = 0, type = 0;
	struct lookup_stash *s = bpf_map_lookup_elem(&lookup_stashes, &zero);
	__u64 packet = running_packet(&type);

	if (!s)
		return 0;
	s->type = 0;
	if (!packet)
		return 0;
	s->packet = packet;
	s->probe = kprobe_id(ctx);
	s->func_ip = kprobe_ip(ctx);
	read_map(&s->map, ctx);
	s->value_offset = 0;
	if (returns_elem)
		s->value_offset = bpf_core_field_offset(struct htab_elem, key) +
				  ((s->map.key_size + 7) & ~7U);
	s->type = type;
	return 0;
}

SEC("pwru_kprobe/map_lookup")
int pwru_kp_map_lookup(struct pt_regs *ctx)
{
	return stash_lookup(ctx, false);
}

SEC("pwru_kprobe/map_lookup_htab")
int pwru_kp_map_lookup_htab(struct pt_regs *ctx)
{
	return stash_lookup(ctx, true);
}

SEC("pwru_kretprobe/map_lookup")
int pwru_krp_map_lookup(struct pt_regs *ctx)
{
	__u32 zero = 0, type;
	struct lookup_stash *s = bpf_map_lookup_elem(&lookup_stashes, &zero);
	struct pwru_event *ev;
	struct pwru_bpfmap *m;
	__u64 found = PT_REGS_RC(ctx);

	if (!s || !s->type)
		return 0;
	type = s->type;
	s->type = 0;
	ev = packet_event(ctx, s->packet, type, s->probe, s->func_ip, true);
	if (!ev)
		return 0;
	m = bpfmap_part(ev);
	__builtin_memcpy(m, &s->map, offsetof(struct pwru_bpfmap, value));
	if (found) {
		read_map_bytes(m->value, m->value_size, (void *)(found + s->value_offset));
		m->flags |= PWRU_BPFMAP_HAS_VALUE;
	}
	ev->flags |= PWRU_EVENT_HAS_BPFMAP;
	send_record(ev, sizeof(struct pwru_bpfmap));
	return 0;
}

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

/*
 * The direct bodies, tested the same way: the kernel's own sk_buff (6.3+ kfunc)
 * gives a BTF-typed skb whose head the verifier types as tp_btf programs see it.
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

static __always_inline int selftest_direct(struct __sk_buff *ctx, bool l2)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	void *data = skb->data, *end = skb->head + skb->tail;

	if (l2)
		return filter_pcap_l2_direct(data, end);
	return filter_pcap_l3_direct(data + ETH_HLEN, end);
}

SEC("pwru_selftest/l2_direct")
int pwru_selftest_l2_direct(struct __sk_buff *ctx)
{
	return selftest_direct(ctx, true);
}

SEC("pwru_selftest/l3_direct")
int pwru_selftest_l3_direct(struct __sk_buff *ctx)
{
	return selftest_direct(ctx, false);
}
