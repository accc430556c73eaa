"""pwru's BPF object: the libbpf binding, the ABI shared with bpf/pwru.h, splicing and loading."""
