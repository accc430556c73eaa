// SPDX-License-Identifier: GPL-2.0
/*
 * The yardstick consumer's kernel side: one raw tracepoint program per position
 * of the sk_buff argument, attached by ringcount to pwru's skb tracepoints.
 *
 * Per hit, the same kernel work pwru's default run does before the ring buffer:
 * - the netns filter of --filter-netns: the skb's device's namespace inode, or
 *   its socket's when it has no device yet, compared with a constant (.rodata,
 *   so 0 = "any namespace" is pruned by the verifier);
 * - reserve a record of sizeof(struct pwru_event) (216 bytes, bpf/pwru.h), zero
 *   it, fill the header (time, skb address, position, pid, cpu, comm) and the skb
 *   metadata pwru prints by default (netns, mark, ifindex, len, mtu, protocol),
 *   submit it. pwru's default also parses the L3/L4 tuple; this does not.
 * A failed reservation is counted (counter 1), as pwru counts its lost events.
 * Counter 0 counts every hit that passed the netns filter (what was offered).
 * With count_only set nothing is reserved: an independent count of the events a
 * pwru run with the same filter is offered, for the lost-events check.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "pwru.h"

char LICENSE[] SEC("license") = "GPL";

struct ringcount_config {
	__u32 netns;       /* namespace inode; 0 = any */
	__u32 count_only;  /* count hits, reserve nothing */
};

volatile const struct ringcount_config CFG = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by ringcount -r */
} events SEC(".maps");

enum { OFFERED = 0, RESERVE_FAILED = 1, NR_COUNTERS = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void bump(__u32 which)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &which);

	if (value)
		*value += 1; /* per-CPU slot: no other writer */
}

static __always_inline __u32 netns_of(struct sk_buff *skb)
{
	__u32 inum = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	struct sock *sk;

	if (inum)
		return inum;
	sk = BPF_CORE_READ(skb, sk);
	return sk ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0;
}

static __always_inline int on_skb(__u64 addr, __u32 position)
{
	struct sk_buff *skb = (struct sk_buff *)addr;
	struct pwru_event *ev;

	if (!skb || (CFG.netns && netns_of(skb) != CFG.netns))
		return 0;
	bump(OFFERED);
	if (CFG.count_only)
		return 0;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		bump(RESERVE_FAILED);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts = bpf_ktime_get_ns();
	ev->skb_addr = addr;
	ev->probe_id = position;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->cpu = bpf_get_smp_processor_id();
	ev->type = PWRU_EVENT_TRACEPOINT;
	ev->stack_id = -1;
	ev->netns = netns_of(skb);
	ev->mark = BPF_CORE_READ(skb, mark);
	ev->ifindex = BPF_CORE_READ(skb, dev, ifindex);
	ev->len = BPF_CORE_READ(skb, len);
	ev->mtu = BPF_CORE_READ(skb, dev, mtu);
	ev->protocol = BPF_CORE_READ(skb, protocol);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

#define SKB_AT(pos)                                                  \
SEC("raw_tp")                                                        \
int ringcount_skb##pos(struct bpf_raw_tracepoint_args *ctx)          \
{                                                                    \
	return on_skb(ctx->args[pos], pos);                          \
}

SKB_AT(0)
SKB_AT(1)
SKB_AT(2)
SKB_AT(3)
SKB_AT(4)
