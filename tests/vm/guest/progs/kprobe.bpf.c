// SPDX-License-Identifier: GPL-2.0
/* tests/vm: classic kprobe (perf_event kprobe PMU) on ip_rcv */
#include "ipcount.h"

SEC("kprobe/ip_rcv")
int BPF_KPROBE(vm_kprobe_ip_rcv, struct sk_buff *skb)
{
	return ipcount(skb);
}
