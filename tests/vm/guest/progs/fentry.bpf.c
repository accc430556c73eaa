// SPDX-License-Identifier: GPL-2.0
/* tests/vm: fentry (BPF trampoline, BTF-typed args) on ip_rcv */
#include "ipcount.h"

SEC("fentry/ip_rcv")
int BPF_PROG(vm_fentry_ip_rcv, struct sk_buff *skb)
{
	return ipcount(skb);
}
