"""Runs inside the arm64 guest (see test_arm64.py), with the guest's python3.

Starts pwru (installed from the aarch64 wheel) with the kprobe backend on a few
functions, sends two datagrams to a closed port on lo once pwru is ready, stops it,
and leaves pwru's exit code, stdout and stderr in the directory given as argument.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PORT = 7951
FUNCTIONS = "ip_rcv|ip_local_deliver|__udp4_lib_rcv|sk_skb_reason_drop|kfree_skb_reason"
READY = Path("/tmp/pwru-ready")


def send_datagrams() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", PORT + 1))
        for _ in range(2):
            sender.sendto(b"x" * 16, ("127.0.0.1", PORT))


def main(results: Path) -> int:
    args = [
        sys.executable, "-m", "pwru", "--debug", "--backend", "kprobe",
        "--filter-func", FUNCTIONS, "--ready-file", str(READY), f"udp and dst port {PORT}",
    ]  # fmt: skip
    with open(results / "pwru.out", "w") as out, open(results / "pwru.err", "w") as err:
        pwru = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        started = time.monotonic()
        while not READY.exists() and pwru.poll() is None and time.monotonic() - started < 600:
            time.sleep(0.1)
        (results / "ready-after").write_text(f"{time.monotonic() - started:.1f}\n")
        if READY.exists() and pwru.poll() is None:
            send_datagrams()
            time.sleep(1)  # let the events reach the ring buffer reader
        if pwru.poll() is None:
            pwru.send_signal(signal.SIGINT)
        code = pwru.wait(120)
    (results / "pwru.rc").write_text(f"{code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
