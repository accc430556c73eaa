"""Filters compiled to eBPF: tcpdump expressions (via classic BPF) and skb expressions (via BTF)."""
