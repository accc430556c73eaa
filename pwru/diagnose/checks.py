"""What a namespace says now, when pwru stops: routes, sockets, sysctls.

The drop summary asks these questions of the namespace where packets died, so its
hints can quote the answer instead of only naming the command. Each answer is one
short line; a question that cannot be asked (no ``ip`` binary, the namespace is gone)
answers with why not, never with an exception.
"""

from __future__ import annotations

import os

from pwru.diagnose.places import Place, answer, run_in

_PROC_NET = "/proc/thread-self/net"  # the calling thread's namespace (run_in enters it)
_TCP_LISTEN = "0A"


class Checks:
    """Questions asked inside namespaces (a class, so tests can answer them)."""

    def route(self, place: Place, daddr: str, saddr: str = "", iif: str = "") -> str:
        """``ip route get`` for the destination (as an incoming packet with ``iif``)."""
        return answer(place, route_argv(daddr, saddr, iif))

    def sysctl(self, place: Place, name: str) -> str:
        """A sysctl's value in the namespace ("?" when unreadable)."""
        path = "/proc/sys/" + name.replace(".", "/")
        try:
            return run_in(place, lambda: _read(path)).strip() or "?"
        except OSError:
            return "?"

    def sockets(self, place: Place, proto: str, port: int, ipv6: bool) -> list[SocketLine]:
        """The sockets bound to a local port (from /proc/net/{udp,tcp}[6])."""
        name = f"{proto}6" if ipv6 else proto
        try:
            text = run_in(place, lambda: _read(os.path.join(_PROC_NET, name)))
        except OSError:
            return []
        return [s for s in parse_proc_net(text, drops=proto == "udp") if s.port == port]


def route_argv(daddr: str, saddr: str = "", iif: str = "") -> list[str]:
    argv = ["ip", "-6" if ":" in daddr else "-4", "route", "get", daddr]
    if saddr and iif:
        argv += ["from", saddr, "iif", iif]
    return argv


class SocketLine:
    """One line of /proc/net/udp or /proc/net/tcp: what matters for a hint."""

    def __init__(self, port: int, state: str, rx_queue: int, drops: int) -> None:
        self.port = port
        self.state = state  # hex TCP state (0A = LISTEN; 07 for UDP)
        self.rx_queue = rx_queue  # bytes waiting to be read
        self.drops = drops  # packets the socket dropped (UDP)

    @property
    def listening(self) -> bool:
        return self.state == _TCP_LISTEN


def parse_proc_net(text: str, drops: bool = False) -> list[SocketLine]:
    """Sockets of /proc/net/{tcp,udp}[6]: local port, state, receive queue and (UDP,
    ``drops``) the packets the socket dropped."""
    found = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5 or ":" not in cols[1]:
            continue
        try:
            port = int(cols[1].rsplit(":", 1)[1], 16)
            rx_queue = int(cols[4].split(":")[1], 16)
            dropped = int(cols[12]) if drops and len(cols) > 12 else 0
        except (ValueError, IndexError):
            continue
        found.append(SocketLine(port, cols[3], rx_queue, dropped))
    return found


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
