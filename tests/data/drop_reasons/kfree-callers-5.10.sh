#!/bin/bash
# kfree-callers-5.10.sh OUTPUT_DIR - in a guest running a kernel without drop reasons
# (5.10), cause known drops and print which function called kfree_skb for each: the
# frame under kfree_skb in the skb:kfree_skb event's stack trace (what the tracepoint's
# `location` names). Backs the table in pwru/diagnose/function_texts.py. Root in a
# throwaway guest only: it creates netns a and b, an iptables rule and tc filters there.
#
#   tests/vm/run-in-guest.sh -w DIR <5.10 kernel package> \
#       'bash tests/data/drop_reasons/kfree-callers-5.10.sh DIR'
#
# (Debian 5.10 kernels come from bullseye(-security), which the host's apt lists lack:
# extract linux-image-5.10.0-*-amd64-unsigned into $PWRU_VM_DIR/kernels/<package>/ with
# dpkg-deb -x, run depmod -b there and touch .complete, as fetch-kernel.sh would.)
set -u
OUT=${1:?usage: kfree-callers-5.10.sh OUTPUT_DIR}
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs none $T
ip netns add a; ip netns add b
ip link add va netns a type veth peer name vb netns b
ip -n a addr add 192.0.2.1/24 dev va; ip -n b addr add 192.0.2.2/24 dev vb
ip -n a link set va up; ip -n b link set vb up; ip -n a link set lo up; ip -n b link set lo up
ip -n a route add 198.51.100.0/24 via 192.0.2.2
ip netns exec b sysctl -qw net.ipv4.ip_forward=0 net.ipv4.icmp_ratelimit=0
send() { ip netns exec a python3 -c "
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])): s.sendto(b'x'*200,(sys.argv[1],int(sys.argv[2])))" "$@"; }
cleanup() {
  echo '!stacktrace' > $T/events/skb/kfree_skb/trigger 2>/dev/null
  ip netns del a 2>/dev/null; ip netns del b 2>/dev/null
}
trap cleanup EXIT
echo stacktrace > $T/events/skb/kfree_skb/trigger
run() { # name, command...
  local name=$1; shift
  echo > $T/trace; echo 1 > $T/events/skb/kfree_skb/enable
  "$@"; sleep 0.5
  echo 0 > $T/events/skb/kfree_skb/enable
  cp $T/trace $OUT/trace.$name
}
run closed send 192.0.2.2 7002 3
modprobe -q nf_tables; modprobe -q nft_compat 2>/dev/null
ip netns exec b iptables -A INPUT -p udp --dport 7001 -j DROP || echo "iptables failed"
run netfilter send 192.0.2.2 7001 3
run iperror send 198.51.100.9 7003 3
arp_case() { send 192.0.2.77 7004 1; sleep 4; }
run arp arp_case
ip netns exec b tc qdisc add dev vb clsact
ip netns exec b tc filter add dev vb ingress protocol ip prio 1 u32 match ip dport 7005 0xffff action drop
run tcingress send 192.0.2.2 7005 3
ip netns exec a tc qdisc add dev va clsact
ip netns exec a tc filter add dev va egress protocol ip prio 1 u32 match ip dport 7006 0xffff action drop
run tcegress send 192.0.2.2 7006 3
ip netns exec b python3 -c "
import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1024)
s.bind(('192.0.2.2',7007))
time.sleep(8)" &
sleep 3
run rcvbuf send 192.0.2.2 7007 40
wait
for f in $OUT/trace.*; do echo "== ${f##*.}"; grep -A1 "=> kfree_skb$" $f | grep -v "=> kfree_skb$\|^--" | sort | uniq -c | sort -rn | head -6; done
