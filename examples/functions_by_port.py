#!/usr/bin/env python3
"""Which kernel functions did packets to a port pass, and how often?

    sudo python3 examples/functions_by_port.py --port 80 --seconds 10

traces for the given time, then prints how many events each function had, most
frequent first, and where and why packets died:

       3 netif_receive_skb
       3 icmp_send
       3 kfree_skb
       3 kfree_skb  SKB_DROP_REASON_NO_SOCKET (dropped)

Uses pwru's Python API (docs/python.md): ``pwru.Tracer`` attaches on entry to the
``with`` block and detaches when it is left, however it is left.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import pwru


def count_functions(port: int, seconds: float, netns: str) -> tuple[Counter[str], Counter[str]]:
    """Events per function, and drops per (function, reason), for packets to ``port``."""
    functions: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    with pwru.Tracer(f"dst port {port}", filter_netns=netns) as tracer:
        print(f"tracing packets to port {port} for {seconds:g} s", file=sys.stderr, flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for event in tracer.poll(timeout_ms=100):
                functions[event.func] += 1
                if event.reason_name:
                    drops[f"{event.func}  {event.reason_name}"] += 1
    return functions, drops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=80, help="destination port (default 80)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to trace")
    parser.add_argument("--netns", default="", help="only this network namespace (/run/netns/x)")
    args = parser.parse_args()
    try:
        functions, drops = count_functions(args.port, args.seconds, args.netns)
    except pwru.PwruError as error:
        print(f"functions_by_port: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    for func, count in functions.most_common():
        print(f"{count:8} {func}")
    for drop, count in drops.most_common():
        print(f"{count:8} {drop} (dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
