#!/bin/bash
# summary-5.10.sh - pwru --summary on a kernel without drop reasons, in a throwaway guest.
# Not part of make check (the matrix has no 5.10 kernel): proves by hand that the
# kfree_skb tracepoint program for (skb, location) loads, that the dropping function
# stands in for the reason (nf_hook_slow -> NETFILTER_DROP, __udp4_lib_rcv -> several)
# and that the firewall rule is still named from its counter.
#
#   PWRU_VM_DIR=... tests/vm/run-in-guest.sh -e PWRU_BIN=<pwru of the checkout> \
#       linux-image-5.10.0-46-amd64-unsigned 'bash tests/vm/summary-5.10.sh'
#
# (a 5.10 kernel in $PWRU_VM_DIR/kernels: see tests/data/drop_reasons/kfree-callers-5.10.sh)
# Measured 2026-12-03 on 5.10.0-46-amd64, tracepoint backend: NETFILTER_DROP inferred
# from nf_hook_slow, the iptables rule named (+2); __udp4_lib_rcv with NO_SOCKET, UDP_CSUM,
# PKT_TOO_SMALL as possible reasons; ip_error explained. The kprobe backend does not load
# there (bpf_get_attach_cookie needs 5.15).
set -u
PWRU=${PWRU_BIN:-pwru}
uname -r
ip netns add a; ip netns add b
trap 'ip netns del a; ip netns del b' EXIT
ip link add va netns a type veth peer name vb netns b
ip -n a addr add 192.0.2.1/24 dev va; ip -n b addr add 192.0.2.2/24 dev vb
ip -n a link set va up; ip -n b link set vb up; ip -n b link set lo up
modprobe -q nf_tables; modprobe -q nft_compat
ip netns exec b /usr/sbin/iptables -A INPUT -p udp --dport 7001 -j DROP
ip -n a route add 198.51.100.0/24 via 192.0.2.2
rm -f /tmp/ready
"$PWRU" --backend tracepoint --summary --output-json --ready-file /tmp/ready \
  --filter-netns /run/netns/b udp > /tmp/out 2> /tmp/err &
pid=$!
while [ ! -e /tmp/ready ] && kill -0 $pid 2>/dev/null; do sleep 0.2; done
ip netns exec a python3 -c "
import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for p in (7001,7001,7002): s.sendto(b'x',('192.0.2.2',p))
s.sendto(b'x',('198.51.100.9',7003))"
sleep 1; kill -INT $pid; wait $pid; echo "rc=$?"
cat /tmp/err; tail -1 /tmp/out
