// SPDX-License-Identifier: GPL-2.0
/* The floor for the tracepoint backend: a raw tracepoint program that does nothing.
 * nooploader attaches it to every skb tracepoint pwru uses, so the flood pays only
 * for the kernel calling a BPF program at each hit. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("raw_tp")
int noop_tp(void *ctx)
{
	return 0;
}
