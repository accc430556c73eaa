// SPDX-License-Identifier: GPL-2.0
/* tests/vm: kprobe.multi (BPF_TRACE_KPROBE_MULTI link, needs CONFIG_FPROBE) on ip_rcv */
#include "ipcount.h"

SEC("kprobe.multi/ip_rcv")
int BPF_KPROBE(vm_kprobe_multi_ip_rcv, struct sk_buff *skb)
{
	return ipcount(skb);
}
