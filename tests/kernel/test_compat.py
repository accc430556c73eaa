"""cilium/pwru v1.0.12 command lines on this kernel: netns names, skb->cb, the text
buffer size, output-file rotation, JSON keys, and the caller on tracepoints.

Every test starts the pwru command, sends real packets between the lab's namespaces
and checks what pwru printed (or wrote to its files).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netlab import Host, Lab, PwruRun
from pwru.kernel.btf import KernelBtf
from pwru.output.render import QDISC_CB_DATA
from pwru.output.rotate import MEGABYTE

Json = dict[str, Any]
Start = Callable[[list[str]], PwruRun]


@pytest.fixture
def start(workdir: Path) -> Iterator[Start]:
    """Starts pwru runs, and ends every one still running when the test ends, also on
    failure."""
    runs: list[PwruRun] = []

    def start_run(args: list[str]) -> PwruRun:
        runs.append(PwruRun(args, workdir))
        return runs[-1]

    try:
        yield start_run
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.stop(signal.SIGKILL)


def lines_with(lines: list[str], *needles: str) -> list[str]:
    return [ln for ln in lines if all(n in ln for n in needles)]


def send_udp_with_router_alert(host: Host, dst: str, port: int) -> None:
    """One datagram whose IP header carries a Router Alert option (4 bytes)."""
    host.python(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([0x94, 4, 0, 0]))\n"
        f"s.sendto(b'x' * 10, ({dst!r}, {port}))\n"
    )


def send_echo_request(host: Host, dst: str) -> None:
    """One ICMP echo request from a raw socket (no ping(8) needed)."""
    host.python(
        "import socket, struct\n"
        "def csum(b):\n"
        "    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n"
        "    s = (s >> 16) + (s & 0xffff); s += s >> 16\n"
        "    return ~s & 0xffff\n"
        "body = struct.pack('!HH', 0x7077, 1) + b'pwru' * 4\n"
        "msg = struct.pack('!BBH', 8, 0, csum(struct.pack('!BBH', 8, 0, 0) + body)) + body\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        f"s.sendto(msg, ({dst!r}, 0))\n"
    )


# --- netns names ----------------------------------------------------------------------


def test_netns_names_text_truncated_and_json_whole(lab: Lab, start: Start) -> None:
    """The lab's namespaces are named in /run/netns ("pwru-test-<6 hex>-b", 18 chars):
    text shows the first --netns-names-max-length characters (16 by default) centered
    in that width, right after the metadata columns; JSON the whole name."""
    base = ["--filter-netns", lab.b.netns_path, "--output-netns-names", "udp and dst port 7801"]
    default = start(base)
    short = start([*base, "--netns-names-max-length", "12"])
    wide = start([*base, "--netns-names-max-length=31", "--output-meta=false"])
    as_json = start([*base, "--output-json"])
    lab.a.send_udp(lab.b.ipv4, 7801, sport=40801)
    assert all(run.stop() == 0 for run in (default, short, wide, as_json))
    name = lab.b.netns
    assert len(name) == 18
    for run, column in (
        (default, name[:16]),
        (short, name[:12]),
        (wide, " " * 6 + name + " " * 7),  # centered in 31: the odd space goes right
    ):
        header, *events = run.lines()
        assert events, run.stderr
        nn = header.index("NETNS NAME")
        width = len(column)
        start = nn - (width - len("NETNS NAME")) // 2
        assert all(ln[start : start + width] == column for ln in events), (column, events)
        if run is not wide:  # after the LEN column, with no space of its own
            assert header[:start].endswith(" LEN  ")  # "%-5s"
    assert wide.lines()[1][: start + width].split()[-1] == name
    events = as_json.json_events()
    assert events and {e["netns_name"] for e in events} == {name}, events


@pytest.fixture
def unnamed_netns_process() -> Iterator[subprocess.Popen[str]]:
    """A python process alone in a new network namespace that no /run/netns entry
    names: it brings lo up, says "ready", and sends a UDP datagram to itself on each
    line it reads."""
    code = (
        "import socket, subprocess, sys\n"
        "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
        "print('ready', flush=True)\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in sys.stdin: s.sendto(b'x', ('127.0.0.1', 7802))\n"
    )
    proc = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_netns_name_of_a_process_namespace(
    unnamed_netns_process: subprocess.Popen[str], start: Start
) -> None:
    """A namespace without an ``ip netns`` name is named after its first process."""
    proc = unnamed_netns_process
    netns = f"/proc/{proc.pid}/ns/net"
    run = start(
        ["--filter-netns", netns, "--output-netns-names", "--output-json", "udp port 7802"]
    )
    assert proc.stdin is not None
    proc.stdin.write("send\n")
    proc.stdin.flush()
    assert run.stop() == 0
    comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    events = run.json_events()
    assert events, run.stderr
    assert {(e["netns"], e["netns_name"]) for e in events} == {
        (os.stat(netns).st_ino, f"{comm}:{proc.pid}")
    }


# --- skb->cb --------------------------------------------------------------------------


def cb_offsets() -> tuple[int, int]:
    """Where the IP layer keeps the received options' length and router alert offset
    in skb->cb (struct inet_skb_parm .opt.optlen / .opt.router_alert), from BTF."""
    btf = KernelBtf.load()
    parm = btf.find_type_id("inet_skb_parm", "struct")
    assert parm is not None
    opt = btf.struct_member(parm, "opt")
    assert opt is not None
    optlen, alert = (btf.struct_member(opt.type_id, m) for m in ("optlen", "router_alert"))
    assert optlen is not None and alert is not None
    return (opt.offset_bits + optlen.offset_bits) // 8, (opt.offset_bits + alert.offset_bits) // 8


def test_qdisc_cb_data_offset_matches_the_kernel() -> None:
    btf = KernelBtf.load()
    qdisc_cb = btf.find_type_id("qdisc_skb_cb", "struct")
    assert qdisc_cb is not None
    data = btf.struct_member(qdisc_cb, "data")
    assert data is not None and data.offset_bits // 8 == QDISC_CB_DATA


def test_output_skb_cb_text_and_json(lab: Lab, start: Start) -> None:
    """A datagram with a 4-byte Router Alert option: after IP receive, skb->cb holds
    IPCB's opt.optlen = 4 and opt.router_alert = 20 (the option's offset in the
    header). JSON skb_cb carries all 48 bytes; cb and the text column are pwru's five
    u32 of bytes 8..28."""
    args = ["--filter-netns", lab.b.netns_path, "--output-skb-cb", "udp and dst port 7803"]
    text = start(args)
    as_json = start([*args, "--output-json"])
    send_udp_with_router_alert(lab.a, lab.b.ipv4, 7803)
    assert text.stop() == 0 and as_json.stop() == 0
    drops = [e for e in as_json.json_events() if str(e["func"]).startswith("kfree_skb(")]
    assert len(drops) == 1, as_json.stdout
    raw = bytes.fromhex(str(drops[0]["skb_cb"]))
    optlen, router_alert = cb_offsets()
    assert len(raw) == 48 and raw[optlen] == 4 and raw[router_alert] == 20
    words = list(struct.unpack("=5I", raw[QDISC_CB_DATA : QDISC_CB_DATA + 20]))
    assert drops[0]["cb"] == words
    header, *events = text.lines()
    assert "LEN   __sk_buff->cb[] " in header
    column = "[" + ",".join(f"0x{w:08X}" for w in words) + "]"
    assert lines_with(events, f" {column} ", "kfree_skb("), text.stdout


# --- --set-percpu-buf -----------------------------------------------------------------


def test_set_percpu_buf_sizes_the_printed_skb(lab: Lab, start: Start) -> None:
    """--output-skb / --output-skb-shared-info texts fit the buffer (less its NUL);
    with the default 4096 the same skbs print longer."""
    args = ["--filter-netns", lab.b.netns_path, "--output-json", "--output-skb",
            "--output-skb-shared-info", "udp and dst port 7804"]  # fmt: skip
    small = start([*args, "--set-percpu-buf", "200"])
    default = start(args)
    lab.a.send_udp(lab.b.ipv4, 7804, sport=40804)
    assert small.stop() == 0 and default.stop() == 0
    for run, longest in ((small, 199), (default, 4095)):
        events = run.json_events()
        assert events, run.stderr
        for event in events:
            for key, start in (("skb_metadata", "(struct sk_buff){"),
                               ("skb_shared_info", "(struct skb_shared_info){")):  # fmt: skip
                text = str(event[key])
                assert text.startswith("\n" + start) and len(text) - 1 <= longest, event
    assert max(len(str(e["skb_metadata"])) for e in default.json_events()) > 200


# --- output file rotation -------------------------------------------------------------


def test_output_file_rotation(lab: Lab, workdir: Path, start: Start) -> None:
    """Megabytes of real events: files rotate at 1 MiB between whole events, named as
    lumberjack names them; --output-file-max-backups keeps the newest 2, gzipped."""
    dirs = {name: workdir / name for name in ("all", "kept", "text")}
    base = ["--filter-netns", lab.b.netns_path, "--output-skb", "--output-file-max-size", "1",
            "--ringbuf-size", "64", "udp and dst port 7805"]  # fmt: skip
    runs = {
        "all": start([*base, "--output-json", "--output-file", f"{dirs['all']}/t.json"]),
        "kept": start([*base, "--output-json", "--output-file", f"{dirs['kept']}/t.json",
                       "--output-file-max-backups", "2", "--output-file-compress"]),
        "text": start([*base, "--output-file", f"{dirs['text']}/t.txt"]),
    }  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7805, count=450, sport=40805)  # ~4.5 MB of events
    assert all(run.stop() == 0 for run in runs.values())
    stamp = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}"
    every = sorted(dirs["all"].iterdir())
    assert every[-1].name == "t.json" and len(every) >= 4, every  # >= 3 rotations
    assert all(re.fullmatch(f"t-{stamp}.json", p.name) for p in every[:-1]), every
    assert all(p.stat().st_size <= MEGABYTE for p in every)
    assert sum(p.stat().st_size for p in every) > 3 * MEGABYTE
    for path in every:
        json_lines(path.read_text())
    kept = sorted(p.name for p in dirs["kept"].iterdir())
    assert len(kept) == 3 and kept[-1] == "t.json", kept
    assert all(re.fullmatch(f"t-{stamp}.json.gz", name) for name in kept[:2]), kept
    for name in kept:
        data = (dirs["kept"] / name).read_bytes()
        json_lines((gzip.decompress(data) if name.endswith(".gz") else data).decode())
    texts = sorted(dirs["text"].iterdir())
    assert len(texts) >= 4, texts
    for path in texts:  # the oldest has the header
        whole_text_events(path.read_text(), header=path == texts[0])


def json_lines(text: str) -> list[Json]:
    """Every line is a whole JSON event (the file ends with a newline)."""
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def whole_text_events(text: str, header: bool) -> None:
    """A text file of --output-skb events: an event line, then the kernel's printout
    from "(struct sk_buff){" to "}" and its newline (a blank line, as in pwru); the
    first file starts with the column header."""
    lines = text.splitlines()
    assert text.endswith("}\n\n"), lines[-3:]
    if header:
        assert lines.pop(0).startswith("SKB ")
    starts = [i for i, ln in enumerate(lines) if re.match(r"0x[0-9a-f]+ ", ln)]
    assert starts and starts[0] == 0, lines[:3]
    for start, end in zip(starts, [*starts[1:], len(lines)]):
        assert lines[start + 1] == "(struct sk_buff){", lines[start : start + 2]
        assert lines[end - 2 : end] == ["}", ""], lines[start]


# --- JSON keys ------------------------------------------------------------------------

# cilium/pwru v1.0.12's JSON (internal/pwru/output.go: the jsonPrinter struct, filled by
# PrintJson, every field omitempty), in its order: when each key is emitted, from the
# flags given and the event's values (zero values are left out).
Flags = set[str]
PWRU_V1012_KEYS: list[tuple[str, Callable[[Flags, Json], bool]]] = [
    ("skb", lambda f, ev: True),
    ("skb_shared_info", lambda f, ev: False),  # declared, never filled in v1.0.12
    ("cpu", lambda f, ev: bool(ev.get("cpu"))),
    ("process", lambda f, ev: True),
    ("func", lambda f, ev: True),
    ("caller_func", lambda f, ev: "--output-caller" in f),
    ("time", lambda f, ev: "--timestamp=current" in f),
    ("netns", lambda f, ev: "--output-meta=false" not in f and bool(ev.get("netns"))),
    ("netns_name", lambda f, ev: "--output-netns-names" in f),  # a /run/netns name here
    ("mark", lambda f, ev: "--output-meta=false" not in f and bool(ev.get("mark"))),
    ("iface", lambda f, ev: "--output-meta=false" not in f),
    ("proto", lambda f, ev: "--output-meta=false" not in f),
    ("mtu", lambda f, ev: "--output-meta=false" not in f),
    ("len", lambda f, ev: "--output-meta=false" not in f),
    ("cb", lambda f, ev: True),  # a [5]uint32 array: omitempty never leaves it out
    ("tuple", lambda f, ev: "--output-tuple=false" not in f),
    ("tunnel_tuple", lambda f, ev: "--output-tunnel" in f),
    ("stack", lambda f, ev: "--output-stack" in f),
    ("skb_metadata", lambda f, ev: bool({"--output-skb", "--output-skb-shared-info"} & f)),
]
PWRU_TUPLE_KEYS = ["saddr", "daddr", "sport", "dport", "proto", "flags"]  # flags: tcp, named
JSON_TYPES = {
    "skb": str, "skb_shared_info": str, "cpu": int, "process": str, "func": str,
    "caller_func": str, "time": int, "netns": int, "netns_name": str, "mark": int,
    "iface": str, "proto": int, "mtu": int, "len": int, "cb": list, "tuple": dict,
    "tunnel_tuple": dict, "stack": str, "skb_metadata": str,
    "skb_cb": str, "skb_metadata_values": dict,
    # the saved trace's (docs/output.md, Saved traces and pcapng)
    "ts": int, "pid": int, "comm": str, "probe_type": str, "reason": int, "skb_fields": list,
}  # fmt: skip
SAVED_TRACE_KEYS = {"ts", "pid", "comm", "probe_type", "reason"}


def pwru_keys(flags: Flags, event: Json) -> list[str]:
    return [key for key, emitted in PWRU_V1012_KEYS if emitted(flags, event)]


def test_json_keys_are_pwrus_plus_ours(lab: Lab, start: Start) -> None:
    """One event (the kfree_skb of a SYN to a closed port) with every output option:
    our keys are pwru's, in pwru's order, plus the documented additions; without
    options, pwru's minus cb (which v1.0.12 printed as zeros even when not asked)."""
    every = ["--output-caller", "--output-stack", "--timestamp=current", "--output-skb-cb",
             "--output-netns-names", "--output-tunnel", "--output-tcp-flags", "--output-skb",
             "--output-skb-shared-info", "--output-skb-metadata=skb->mark"]  # fmt: skip
    args = ["--filter-netns", lab.b.netns_path, "--output-json", "tcp and dst port 7806"]
    full, plain = start([*args, *every]), start(args)
    assert lab.a.tcp_connect(lab.b.ipv4, 7806) == "refused"
    assert full.stop() == 0 and plain.stop() == 0
    for run, flags, ours in (
        (full, set(every), {"skb_cb", "skb_metadata_values", "skb_shared_info", "skb_fields"}),
        (plain, set(), set()),
    ):
        drop = next(e for e in run.json_events() if str(e["func"]).startswith("kfree_skb("))
        expected = pwru_keys(flags, drop)
        if not flags:
            expected.remove("cb")  # left out unless asked, as pwru does since v1.0.12
        assert [k for k in drop if k in expected] == expected, (list(drop), expected)
        assert set(drop) - set(expected) == ours | SAVED_TRACE_KEYS, list(drop)
        assert {k: type(v) for k, v in drop.items()} == {k: JSON_TYPES[k] for k in drop}
        assert list(drop["tuple"]) == PWRU_TUPLE_KEYS[: 6 if "--output-tcp-flags" in flags else 5]
    drop = next(e for e in full.json_events() if str(e["func"]).startswith("kfree_skb("))
    assert drop["tuple"]["flags"] == "SYN" and drop["netns_name"] == lab.b.netns
    assert len(drop["cb"]) == 5 and drop["skb_metadata_values"] == {"skb->mark": 0}


# --- caller on tracepoints ------------------------------------------------------------


def test_caller_on_tracepoints(lab: Lab, start: Start) -> None:
    """--output-caller names the caller of the function that hit the tracepoint: the
    stack's second frame. kfree_skb and consume_skb say it themselves (their location
    argument): the netfilter function that dropped the datagram, not the drop helper;
    icmp_rcv for the echo request it consumed, not consume_skb."""
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "7808", "-j", "DROP")
    run = start(
        ["--filter-netns", lab.b.netns_path, "--output-json", "--output-caller",
         "--output-stack", "(udp and dst port 7808) or icmp[icmptype] == icmp-echo"]
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7808, sport=40808)
    send_echo_request(lab.a, lab.b.ipv4)
    assert run.stop() == 0
    events = run.json_events()
    assert events, run.stderr
    for event in events:
        frames = str(event["stack"]).split("\n")[1:]
        assert event["caller_func"] == frames[1], (event["func"], frames[:3])
    funcs = {str(e["func"]).split("(")[0]: e for e in events}
    dropped = funcs["kfree_skb"]
    assert dropped["caller_func"] in ("nft_do_chain", "ipt_do_table", "nf_hook_slow"), dropped
    assert funcs["consume_skb"]["caller_func"] == "icmp_rcv", funcs["consume_skb"]
