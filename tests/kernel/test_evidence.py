"""End to end: the packets pwru saw, kept as evidence.

pwru traces real UDP, TCP and ICMP flows between two namespaces and writes a pcapng
file, which tshark reads (packet counts, payload bytes, comments, interface names, the
raw-IP link type of packets that had no MAC header yet); packets whose headers or
payload sit in page fragments are captured, or marked as missing where this kernel
does not let pwru reach fragments, never filled with garbage; saved traces read back
(--read) as exactly what the live run printed; the Python API traces and detaches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import pwru
from netlab import Host, Lab, PwruRun, bpf_prog_ids_of, bpf_progs_alive, pwru_command
from pwru.bpf import loader
from pwru.bpf.config import Spliced, build_config
from pwru.bpf.loader import LoadRequest
from pwru.kernel.btf import KernelBtf
from pwru.kernel.directmap import NO_DIRECT_MAP, DirectMap, direct_map
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import parse_options
from pwru.output.pcapng import MISSING
from pwru.trace.backend import TraceContext
from pwru.trace.probes import ProbeTable
from pwru.trace.tracepoint import TracepointBackend

ROOT = Path(__file__).resolve().parents[2]
TCP_PAYLOAD = b"pwru-tcp-payload-0123456789"
ICMP_PAYLOAD = b"pwru-icmp-echo-payload"
FRAG_SIZE = 6000  # a frame this big, sent through a packet socket, has its headers in a page

SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1]))); s.listen(1)
print("listening", flush=True)
conn, _ = s.accept()
data = b""
while chunk := conn.recv(65536):
    data += chunk
print(len(data), flush=True)
"""

PING = """
import socket, struct, sys
def csum(b):
    b += b"\\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(int(sys.argv[2])):
    body = struct.pack("!HH", 0x7077, seq) + sys.argv[3].encode()
    s.sendto(struct.pack("!BBH", 8, 0, csum(b"\\x08\\x00\\0\\0" + body)) + body, (sys.argv[1], 0))
"""

# An Ethernet frame sent whole through a packet socket: the kernel keeps only the MAC
# header in the linear area and puts the rest (IP and UDP headers, payload) in a page.
RAW_FRAME = """
import socket, struct, sys
ifname, dmac, src, dst, size = sys.argv[1:6]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
payload = bytes(i % 251 for i in range(int(size)))
udp = struct.pack("!HHHH", 40009, 7799, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
t = sum(struct.unpack("!10H", ip)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
ip = ip[:10] + struct.pack("!H", ~t & 0xFFFF) + ip[12:]
s.send(bytes.fromhex(dmac.replace(":", "")) + s.getsockname()[4] + b"\\x08\\x00" + ip + udp)
"""


def tshark(path: Path, *fields: str, where: str = "") -> list[dict[str, str]]:
    """One dict per packet of ``path``: the first value of each field."""
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    argv += [arg for f in fields for arg in ("-e", f)] + (["-Y", where] if where else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("\t"))) for line in out.splitlines()]


def mac(host: Host) -> str:
    return host.run("cat", f"/sys/class/net/{host.ifname}/address").stdout.strip()


def tcp_exchange(lab: Lab, port: int, payload: bytes) -> None:
    """A connects to a server in b, sends ``payload`` and closes; the server reads it all."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.b.netns, sys.executable, "-c", SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        lab.a.python(
            "import socket\n"
            f"c = socket.create_connection(({lab.b.ipv4!r}, {port}), timeout=5)\n"
            f"c.sendall({payload!r}); c.close()\n"
        )
        assert server.stdout.readline().strip() == str(len(payload))
    finally:
        server.kill()
        server.wait()


def ping(host: Host, dst: str, count: int) -> None:
    host.run(sys.executable, "-c", PING, dst, str(count), ICMP_PAYLOAD.decode())


def frags_copied() -> bool:
    """Whether pwru reads page fragments on this kernel (pwru.kernel.directmap)."""
    return direct_map() != NO_DIRECT_MAP


def test_pcapng_of_udp_tcp_icmp_reads_in_tshark(lab: Lab, workdir: Path) -> None:
    # payloads stay in the linear area: veth-a cannot scatter-gather, so it linearises
    lab.a.run("ethtool", "-K", lab.a.ifname, "sg", "off")
    lab.b.run("iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "echo-reply", "-j", "DROP")
    pcap, trace = workdir / "flows.pcapng", workdir / "flows.json"
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--output-pcap", str(pcap),
         "--output-json", "--output-file", str(trace)],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7791, count=3, payload=32, sport=40011)
    tcp_exchange(lab, 7792, TCP_PAYLOAD)
    ping(lab.a, lab.b.ipv4, 2)
    assert run.stop() == 0, run.stderr
    fields = ("frame.comment", "frame.interface_name", "frame.protocols", "frame.len",
              "frame.cap_len", "frame.time_epoch", "udp.dstport", "tcp.dstport", "tcp.payload",
              "icmp.type", "data.data")  # fmt: skip
    packets = tshark(pcap, *fields)
    events = [json.loads(ln) for ln in trace.read_text().splitlines()[1:]]
    # one packet per event, in order, each commented with its function and skb
    assert len(packets) == len(events) > 0
    for packet, event in zip(packets, events):
        assert packet["frame.comment"].startswith("func="), packet
        assert f"netns={lab.b.inode} skb={event['skb']}" in packet["frame.comment"]
        assert abs(float(packet["frame.time_epoch"]) - time.time()) < 600
    iface = f"veth-b (netns {lab.b.inode})"

    def where(func: str, **match: str) -> list[dict[str, str]]:
        return [p for p in packets if p["frame.comment"].startswith(f"func={func} ")
                and all(p[k] == v for k, v in match.items())]  # fmt: skip

    udp = where("netif_receive_skb", **{"udp.dstport": "7791"})
    assert len(udp) == 3, packets
    for packet in udp:
        assert packet["frame.interface_name"] == iface
        assert packet["frame.protocols"] == "eth:ethertype:ip:udp:data"
        assert packet["data.data"] == (b"x" * 32).hex()
        assert packet["frame.len"] == packet["frame.cap_len"] == "74"
    drops = where("kfree_skb", **{"udp.dstport": "7791"})
    assert len(drops) == 3 and all("reason=SKB_DROP_REASON_NO_SOCKET" in p["frame.comment"]
                                   for p in drops)  # fmt: skip
    assert len(where("net_dev_queue", **{"icmp.type": "3"})) == 3, "no port-unreachable replies"
    tcp = where("netif_receive_skb", **{"tcp.dstport": "7792", "tcp.payload": TCP_PAYLOAD.hex()})
    assert len(tcp) == 1 and tcp[0]["frame.interface_name"] == iface, packets
    pings = where("netif_receive_skb", **{"icmp.type": "8"})
    assert len(pings) == 2 and all(ICMP_PAYLOAD.hex() in p["data.data"] for p in pings)
    # the replies die in OUTPUT before any MAC header exists: raw IP packets
    replies = where("kfree_skb", **{"icmp.type": "0"})
    assert len(replies) == 2, packets
    for packet in replies:
        assert packet["frame.protocols"].startswith("raw:ip:icmp"), packet
        assert "reason=SKB_DROP_REASON_NETFILTER_DROP" in packet["frame.comment"]
        assert packet["frame.interface_name"].endswith(f"(netns {lab.b.inode})")
    # the pcapng reads back as the JSON trace the same run wrote
    shown = subprocess.run([*pwru_command(), "--read", str(pcap), "--output-json"],
                           capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == trace.read_text()


def linear_bytes(packet: dict[str, str]) -> int:
    return int(packet["frame.cap_len"])


def test_packets_with_data_in_page_fragments(lab: Lab, workdir: Path) -> None:
    """Headers in a page (a packet socket's big frame: cilium/pwru issue 253) and a TCP
    payload in pages (scatter-gather): copied where pwru reaches page fragments on this
    kernel, else the captured bytes end where the linear area ends and the block says
    the rest is missing."""
    for host in (lab.a, lab.b):
        host.run("ip", "link", "set", host.ifname, "mtu", "9000")
    pcap = workdir / "frags.pcapng"
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--output-pcap", str(pcap), "--capture-bytes",
         "9216", "--output-skb-shared-info", "--output-meta=false", "--output-tuple=false"],
        workdir,
    )  # fmt: skip
    lab.a.run(sys.executable, "-c", RAW_FRAME, lab.a.ifname, mac(lab.b), lab.a.ipv4,
              lab.b.ipv4, str(FRAG_SIZE))  # fmt: skip
    tcp_payload = bytes(i % 199 for i in range(3000))
    tcp_exchange(lab, 7793, tcp_payload)
    assert run.stop() == 0, run.stderr
    fields = ("frame.comment", "frame.len", "frame.cap_len", "eth.dst", "eth.src", "eth.type",
              "ip.src", "udp.dstport", "tcp.dstport", "data.data", "tcp.payload")  # fmt: skip
    arrivals = [p for p in tshark(pcap, *fields)
                if p["frame.comment"].startswith("func=netif_receive_skb ")]  # fmt: skip
    frame = [p for p in arrivals if p["frame.len"] == str(14 + 28 + FRAG_SIZE)]
    assert len(frame) == 1, arrivals
    # the kernel really held these in pages: shared info of the arrival events
    assert "nr_frags = (__u8)1" in run.stdout or "nr_frags = (__u8)2" in run.stdout
    big = frame[0]
    assert (big["eth.dst"], big["eth.src"], big["eth.type"]) == (mac(lab.b), mac(lab.a), "0x0800")
    data = [p for p in arrivals if p["tcp.dstport"] == "7793" and int(p["frame.len"]) > 1000]
    assert data, arrivals
    if frags_copied():
        assert big["frame.cap_len"] == big["frame.len"] and MISSING not in big["frame.comment"]
        assert (big["ip.src"], big["udp.dstport"]) == (lab.a.ipv4, "7799")
        assert big["data.data"] == bytes(i % 251 for i in range(FRAG_SIZE)).hex()
        assert "".join(p["tcp.payload"] for p in data) == tcp_payload.hex()
    else:
        assert linear_bytes(big) == 14 and MISSING in big["frame.comment"], big
        for packet in data:  # headers captured, the payload in pages marked missing
            assert linear_bytes(packet) == 14 + 20 + 32 and MISSING in packet["frame.comment"]


def concurrent_sender(host: Host, dst: str, port: int, count: int) -> subprocess.Popen[str]:
    """Sends ``count`` datagrams, then waits for stdin to close: two pwru runs name the
    same live process, whenever each looks it up."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 40031))\n"
        f"for _ in range({count}): s.sendto(b'y' * 16, ({dst!r}, {port}))\n"
        "print('sent', flush=True); sys.stdin.read()\n"
    )
    argv = ["ip", "netns", "exec", host.netns, sys.executable, "-c", code]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_back(*argv: str) -> str:
    shown = subprocess.run([*pwru_command(), "--read", *argv], capture_output=True, text=True)
    assert shown.returncode == 0 and not shown.stderr, shown.stderr
    return shown.stdout


# (no timestamps: the two runs' programs each read the clock)
@pytest.mark.parametrize("flags", [[], ["--output-caller", "--output-stack", "--output-tcp-flags"]])
def test_read_reproduces_the_live_outputs(lab: Lab, workdir: Path, flags: list[str]) -> None:
    trace, text = workdir / "live.json", workdir / "live.txt"
    common = ["--filter-netns", lab.b.netns_path, *flags, "udp port 7794"]
    json_run = PwruRun([*common, "--output-json", "--output-file", str(trace)], workdir)
    text_run = PwruRun([*common, "--output-file", str(text)], workdir)
    sender = concurrent_sender(lab.a, lab.b.ipv4, 7794, 3)
    try:
        assert sender.stdout is not None and sender.stdout.readline().strip() == "sent"
        assert text_run.stop() == 0 and json_run.stop() == 0
    finally:
        sender.communicate("")
    lines = trace.read_text().splitlines()
    assert len(lines) > 3 and "pwru_trace" in json.loads(lines[0])
    assert read_back(str(trace), "--output-json") == trace.read_text()
    assert read_back(str(trace)) == text.read_text()


def test_pcapng_beside_text_lines_reads_back_as_them(lab: Lab, workdir: Path) -> None:
    """The usual ``--output-pcap`` run prints text lines: its pcapng sink takes records
    undecoded and builds blocks from cached pieces (pwru.output.pcapng); the file still
    has a block per line, commented, and reads back as the lines the run printed."""
    pcap, text = workdir / "lines.pcapng", workdir / "lines.txt"
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--output-pcap", str(pcap),
         "--output-file", str(text), "udp port 7796"],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7796, count=20, payload=32, sport=40012)
    assert run.stop() == 0, run.stderr
    lines = text.read_text().splitlines()[1:]  # after the column header
    packets = tshark(pcap, "frame.comment", "udp.dstport", "data.data")
    assert len(packets) == len(lines) >= 20
    for packet, line in zip(packets, lines):
        assert f"skb={line.split()[0]}" in packet["frame.comment"], (packet, line)
    drops = [p for p in packets if "reason=SKB_DROP_REASON_NO_SOCKET" in p["frame.comment"]]
    assert len(drops) == 20
    assert all((p["udp.dstport"], p["data.data"]) == ("7796", (b"x" * 32).hex()) for p in drops)
    assert read_back(str(pcap)) == text.read_text()


@pytest.mark.parametrize("content", [b"not a trace\n", b'{"pwru_trace":{"format":1,"opt'])
def test_read_of_a_foreign_file_is_one_line(workdir: Path, content: bytes) -> None:
    path = workdir / "foreign"
    path.write_bytes(content)
    shown = subprocess.run([*pwru_command(), "--read", str(path)], capture_output=True, text=True)
    assert shown.returncode == 2 and shown.stdout == ""
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith("pwru: error: ")


def drops_of(tracer: pwru.Tracer, wanted: int, seconds: float = 15.0) -> Iterator[pwru.Event]:
    """Events until ``wanted`` of them carry a drop reason (or the time is up)."""
    deadline, drops = time.monotonic() + seconds, 0
    while drops < wanted and time.monotonic() < deadline:
        for event in tracer.poll(100):
            drops += event.reason is not None
            yield event


def test_tracer_yields_events_and_detaches(lab: Lab) -> None:
    with pwru.Tracer("udp port 7795", filter_netns=lab.b.netns_path, capture_bytes=64) as t:
        loaded = bpf_prog_ids_of(os.getpid())
        assert loaded
        lab.a.send_udp(lab.b.ipv4, 7795, count=2, sport=40041)
        events = list(drops_of(t, 2))
    assert not bpf_progs_alive(loaded)
    drops = [e for e in events if e.reason is not None]
    assert [(e.func, e.reason_name) for e in drops] == [
        ("kfree_skb", "SKB_DROP_REASON_NO_SOCKET")
    ] * 2
    arrived = [e for e in events if e.func == "netif_receive_skb"]
    assert len(arrived) == 2 and len({e.skb for e in arrived}) == 2
    for event in events:
        assert event.tuple is not None and (event.tuple.sport, event.tuple.dport) == (40041, 7795)
        assert event.netns == lab.b.inode and event.iface == f"{lab.b.ifname}:2"
        assert event.time > 0 and event.packet is not None
        # 64 of the frame's 74 bytes, as asked: 22 of the 32 payload bytes
        assert event.packet.len == 74 and event.packet.data[42:] == b"x" * 22


def test_tracer_detaches_when_the_block_raises(lab: Lab) -> None:
    loaded: set[int] = set()
    with pytest.raises(ZeroDivisionError), pwru.Tracer(filter_netns=lab.b.netns_path):
        loaded = bpf_prog_ids_of(os.getpid())
        _ = 1 / 0
    assert loaded and not bpf_progs_alive(loaded)
    with pwru.Tracer("udp port 7796", filter_netns=lab.b.netns_path, output_limit_lines=3) as t:
        lab.a.send_udp(lab.b.ipv4, 7796, count=2)
        assert len(list(t)) == 3  # the line limit ends the iteration
        loaded = bpf_prog_ids_of(os.getpid())
    assert not bpf_progs_alive(loaded)


def run_example(argv: Sequence[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "examples" / "functions_by_port.py"
    return subprocess.Popen([sys.executable, str(script), *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_example_counts_functions_for_a_port(lab: Lab) -> None:
    example = run_example(["--port", "7797", "--seconds", "4", "--netns", lab.b.netns_path])
    assert example.stderr is not None
    said = ""
    for line in example.stderr:  # pwru's notes, then the example's own line
        said += line
        if line.startswith("tracing packets to port 7797"):
            break
    else:
        raise AssertionError(f"the example did not start: {said}")
    lab.a.send_udp(lab.b.ipv4, 7797, count=3, sport=40051)
    lab.a.send_udp(lab.b.ipv4, 7798, count=2, sport=40052)  # another port: not counted
    out, err = example.communicate(timeout=60)
    assert example.returncode == 0, err
    counts = {" ".join(line.split()[1:]): int(line.split()[0]) for line in out.splitlines()}
    assert counts["netif_receive_skb"] == 3 and counts["kfree_skb"] == 3, out
    assert counts["kfree_skb SKB_DROP_REASON_NO_SOCKET (dropped)"] == 3, out


@pytest.mark.parametrize(
    "argv", [[], ["--output-skb", "--output-skb-shared-info", "--output-stack"]]
)
def test_fragment_copying_passes_this_kernels_verifier(argv: list[str]) -> None:
    """This kernel lists no direct map (see frags_copied), so runs here prune the code
    that reads page fragments: load it anyway, with stand-in addresses, never attached."""
    options = parse_options([*argv, "--output-pcap", "/dev/null"])
    config = build_config(options, Spliced(), DirectMap(1, 1, 12))
    btf = KernelBtf.load()
    ctx = TraceContext(options, btf, btf, Kallsyms.load, lambda _name: True)
    requests = TracepointBackend(ctx).plan(ProbeTable())
    requests += [LoadRequest(p) for p in ("pwru_kp_skb0", "pwru_km_kfree_reason")]
    loader.load(config, requests, {}, 4096).close()
