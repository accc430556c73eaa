/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared body of the tests/vm capability probes: count ip_rcv() calls, and among them
 * the IPv4/UDP packets for one (daddr, dport[, ifindex]) that the test sends over a veth
 * pair. CO-RE against the 6.18 vmlinux.h of vmlinux-headers/x86; only long-stable
 * fields (sk_buff head/network_header/dev, net_device ifindex) are used, so the same
 * object relocates on 6.1, 6.12 and 7.x. Header fields are read at fixed wire offsets.
 */
#ifndef PWRU_VM_IPCOUNT_H
#define PWRU_VM_IPCOUNT_H
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct ipcount_cfg {
	__u32 daddr;   /* network byte order */
	__u32 dport;   /* network byte order, low 16 bits */
	__u32 ifindex; /* 0: any device */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipcount_cfg);
} cfg SEC(".maps");

/* [0] every ip_rcv call, [1] calls for the configured UDP flow */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counts, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int ipcount(struct sk_buff *skb)
{
	__u32 zero = 0, daddr, ifindex;
	struct ipcount_cfg *c;
	unsigned char *nh;
	__u8 ip[20];
	__u16 dport;

	bump(0);
	c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c)
		return 0;
	/* ip_rcv() runs after __netif_receive_skb_core() reset the network header */
	nh = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header);
	if (bpf_probe_read_kernel(ip, sizeof(ip), nh))
		return 0;
	if ((ip[0] >> 4) != 4 || ip[9] != 17 /* UDP */)
		return 0;
	__builtin_memcpy(&daddr, &ip[16], 4);
	if (daddr != c->daddr)
		return 0;
	if (bpf_probe_read_kernel(&dport, sizeof(dport), nh + (ip[0] & 0xf) * 4 + 2))
		return 0;
	if (dport != (__u16)c->dport)
		return 0;
	if (c->ifindex) {
		ifindex = BPF_CORE_READ(skb, dev, ifindex);
		if (ifindex != c->ifindex)
			return 0;
	}
	bump(1);
	return 0;
}
#endif
