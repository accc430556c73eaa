// SPDX-License-Identifier: GPL-2.0
/* tests/vm: a tc classifier for pwru --filter-trace-tc (test_pwru.py).
 * Loaded by `tc filter add ... bpf da obj tc.bpf.o sec tc` in the guest; built with -g so it
 * has BTF (pwru traces only tc programs with BTF). It lets everything pass and counts the
 * packets it saw, so the program does some work the verifier keeps. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TC_ACT_OK 0

__u64 vm_tc_seen = 0;

SEC("tc")
int vm_tc_ingress(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&vm_tc_seen, 1);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
