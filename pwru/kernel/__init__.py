"""What the running kernel has: BTF, symbols, skb functions, features, network namespaces."""
