// SPDX-License-Identifier: GPL-2.0
/* tests/vm: an XDP program for pwru --filter-trace-xdp (test_pwru.py).
 * Attached with `ip link set dev pwm1 xdpgeneric obj xdp.bpf.o sec xdp` in the guest; built
 * with -g so it has BTF (pwru traces only programs with BTF). It drops IPv4 UDP datagrams
 * to port 7761 and passes everything else, so the test sees both verdicts. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define DROP_PORT 7761

SEC("xdp")
int vm_xdp_drop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	return udp->dest == bpf_htons(DROP_PORT) ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
