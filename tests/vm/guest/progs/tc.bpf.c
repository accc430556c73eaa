// SPDX-License-Identifier: GPL-2.0
/* tests/vm: a tc classifier for pwru --filter-trace-tc and --filter-track-bpf-helpers
 * (test_pwru.py). Loaded by `tc filter add ... bpf da obj tc.bpf.o sec tc` in the guest;
 * built with -g so it has BTF (pwru traces only tc programs with BTF). It lets everything
 * pass; for each IPv4 UDP datagram it reads the destination port with bpf_skb_load_bytes
 * and counts it in a hash map: a lookup (the verifier turns it into a call of
 * __htab_map_lookup_elem) and, for a port's first datagram, an update
 * (htab_map_update_elem). Those calls are what --output-bpfmap shows. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define ETH_HLEN 14
#define ETH_P_IP 0x0800

__u64 vm_tc_seen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);   /* UDP destination port, host order */
	__type(value, __u64); /* datagrams seen */
} vm_tc_ports SEC(".maps");

SEC("tc")
int vm_tc_ingress(struct __sk_buff *skb)
{
	__u8 ihl_proto[10];
	__be16 dest;
	__u32 port;
	__u64 one = 1, *seen;

	__sync_fetch_and_add(&vm_tc_seen, 1);
	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, ihl_proto, sizeof(ihl_proto)) ||
	    ihl_proto[9] != IPPROTO_UDP ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + (ihl_proto[0] & 0xf) * 4 + 2, &dest, 2))
		return TC_ACT_OK;
	port = bpf_ntohs(dest);
	seen = bpf_map_lookup_elem(&vm_tc_ports, &port);
	if (seen)
		__sync_fetch_and_add(seen, 1);
	else
		bpf_map_update_elem(&vm_tc_ports, &port, &one, BPF_ANY);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
