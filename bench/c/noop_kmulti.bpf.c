// SPDX-License-Identifier: GPL-2.0
/* The floors for the kprobe backends: programs that do nothing. nooploader attaches
 * noop_kmulti with one kprobe-multi link over the listed function addresses, or
 * noop_kprobe with one kprobe link per address, so the flood pays only for the
 * kernel entering a BPF program at each traced function. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe.multi")
int noop_kmulti(void *ctx)
{
	return 0;
}

SEC("kprobe")
int noop_kprobe(void *ctx)
{
	return 0;
}
