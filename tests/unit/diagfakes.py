"""Events and names for the diagnosis unit tests: events made by probe name."""

from __future__ import annotations

from pwru.bpf import abi
from pwru.output.decode import Event, Tuple5

UDP = Tuple5("192.0.2.1", "192.0.2.2", 40000, 7002, 0x0800, 17, 0)
TCP_SYN = Tuple5("192.0.2.1", "192.0.2.2", 40001, 7003, 0x0800, 6, 0x02)
ICMP = Tuple5("192.0.2.2", "192.0.2.1", 0, 0, 0x0800, 1, 0)
SKB = 0xFFFF888000001000
NETNS_A, NETNS_B = 4026532001, 4026532002
REASONS = {
    1: "SKB_CONSUMED",
    2: "SKB_DROP_REASON_NO_SOCKET",
    6: "SKB_DROP_REASON_NETFILTER_DROP",
}
TP, KP = abi.PWRU_EVENT_TRACEPOINT, abi.PWRU_EVENT_KPROBE_MULTI
_PROBES: list[str] = []


def ev(
    name: str,
    ts: int,
    *,
    skb: int = SKB,
    netns: int = NETNS_B,
    ifindex: int = 2,
    kind: int = TP,
    reason: int | None = None,
    flags: int = 0,
    tup: Tuple5 | None = UDP,
    caller: int = 0,
) -> Event:
    """An event of probe ``name`` at ``ts`` microseconds."""
    if name not in _PROBES:
        _PROBES.append(name)
    if reason is not None and not flags:
        flags = abi.PWRU_EVENT_HAS_REASON
    return Event(
        ts=ts * 1000, skb_addr=skb, func_ip=0, caller_ip=caller, reason=reason,
        probe_id=_PROBES.index(name), pid=1, cpu=0, type=kind,
        flags=flags | (abi.PWRU_EVENT_HAS_TUPLE if tup else 0), stack_id=-1, netns=netns,
        mark=0, ifindex=ifindex, len=60, mtu=1500, protocol=0x0800, tuple=tup,
        tunnel_tuple=None, skb_metadata=(0, 0, 0, 0), comm="test",
    )  # fmt: skip


class Names:
    """NameResolver for events made by ``ev``."""

    symbols: dict[int, str] = {0x1000: "nft_do_chain", 0x2000: "__udp4_lib_rcv"}

    def probe_name(self, event: Event) -> str:
        return _PROBES[event.probe_id]

    def drop_reason(self, value: int) -> str | None:
        return REASONS.get(value)

    def iface(self, netns: int, ifindex: int) -> str:
        return {2: "veth-b:2", 3: "veth-bc:3", 1: "lo:1"}.get(ifindex, str(ifindex))

    def process(self, pid: int, comm: str) -> str:
        return f"{comm}:{pid}"

    def symbol(self, addr: int) -> str:
        return self.symbols.get(addr, f"{addr:#x}")
