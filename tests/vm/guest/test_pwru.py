"""pwru's kprobe features end to end, inside each guest kernel of tests/vm/kernels.txt.

Every test runs once per backend: ``kprobe`` (restricted with --filter-func to the functions
the test looks at: attaching ~1,600 kprobes one by one is slow under TCG) and
``kprobe-multi`` (every skb function). Where kernels.txt says kprobe.multi does not work
(Debian 6.1: CONFIG_FPROBE off), the kprobe-multi case runs the same command and asserts
pwru's one-line error naming CONFIG_FPROBE and exit code 1.

Traffic crosses a veth pair between two namespaces made by tests/kernel/netlab.py's Lab;
it is sent from a thread that setns()-es into the sender's namespace (a Python start under
TCG costs 2-5 s, so no `ip netns exec python3`). pwru is the installed console command
next to the interpreter running pytest ($PWRU_BIN overrides), started through netlab's
PwruRun, which waits for --ready-file before any traffic is sent.

  1. iptables DROP in the receiver's INPUT: the SYN passes the ip_local_out family and
     nf_hook_slow and ends in kfree_skb_reason / sk_skb_reason_drop (6.11+) with
     SKB_DROP_REASON_NETFILTER_DROP.
  2. --filter-track-skb follows a DNAT'ed datagram to its new destination.
  3. --output-stack: the drop event's stack contains nf_hook_slow (same run as 1).
  4. --filter-trace-tc sees a tc classifier loaded with tc(8) (progs/tc.bpf.c).
  5. a pcap filter restricts the output to the matching port.
  6. Geneve (the CI host has no geneve module): inner-packet filter and inner tuple.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.netlab import Host, Lab, PwruRun

from .conftest import KernelExpect, run, tool

pytestmark = pytest.mark.vm

KPROBE, KPROBE_MULTI = "kprobe", "kprobe-multi"
BACKENDS = (KPROBE, KPROBE_MULTI)
READY_TIMEOUT = 180.0  # pwru start under TCG: ~10 s (Python, BTF, discovery, load, attach)
SETTLE = 1.0  # softirq delivery under TCG before pwru is stopped
CLONE_NEWNET = 0x40000000
NETFILTER_DROP = "SKB_DROP_REASON_NETFILTER_DROP"


# --------------------------------------------------------------------------- pwru
@pytest.fixture(scope="session", autouse=True)
def _pwru_bin() -> None:
    """The pwru console command next to this interpreter (the guest's PATH lacks pyenv)."""
    if not os.environ.get("PWRU_BIN"):
        os.environ["PWRU_BIN"] = str(Path(sys.executable).with_name("pwru"))
    assert os.access(os.environ["PWRU_BIN"], os.X_OK), f"no pwru at {os.environ['PWRU_BIN']}"


def multi_refused(backend: str, vm_kernel: KernelExpect) -> bool:
    return backend == KPROBE_MULTI and vm_kernel.expect["kprobe_multi"] != "ok"


def pwru_args(backend: str, kprobe_funcs: str, args: list[str]) -> list[str]:
    """--backend, plus --filter-func for the one-by-one kprobe backend."""
    extra = ["--filter-func", kprobe_funcs] if backend == KPROBE else []
    return ["--backend", backend, *extra, *args]


def assert_multi_refused(args: list[str], vm_kernel: KernelExpect) -> None:
    """The kernel has no kprobe.multi: pwru must say so in one line (naming CONFIG_FPROBE)
    and exit 1, before printing any trace."""
    res = subprocess.run(
        [os.environ["PWRU_BIN"], *args],
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    detail = f"{vm_kernel.release}: pwru {' '.join(args)} -> rc={res.returncode}\n{res.stderr}"
    assert res.returncode == 1, detail
    assert res.stdout == "", detail
    errors = [ln for ln in res.stderr.splitlines() if "CONFIG_FPROBE" in ln]
    assert len(errors) == 1, detail
    assert res.stderr.rstrip("\n").splitlines()[-1] == errors[0], detail
    assert errors[0].startswith("pwru: ") and "kprobe-multi" in errors[0], detail
    assert "Traceback" not in res.stderr, detail


def start_pwru(arg_sets: list[list[str]], workdir: Path) -> list[PwruRun]:
    """Start several pwru at once (their ~10 s starts overlap) and wait until all are ready."""
    with ThreadPoolExecutor(max_workers=len(arg_sets)) as pool:
        futures = [pool.submit(PwruRun, args, workdir, READY_TIMEOUT) for args in arg_sets]
        runs, errors = [], []
        for f in futures:
            try:
                runs.append(f.result())
            except Exception as error:  # noqa: BLE001 - reported below, after cleanup
                errors.append(error)
    if errors:
        for r in runs:
            with contextlib.suppress(Exception):
                r.stop()
        raise errors[0]
    return runs


def stop_pwru(runs: list[PwruRun]) -> None:
    time.sleep(SETTLE)
    codes = [r.stop(signal.SIGINT, timeout=120) for r in runs]
    for r, code in zip(runs, codes):
        assert code == 0, f"pwru {' '.join(r.args)} -> {code}\n{r.stderr}"


# --------------------------------------------------------------------------- output
TUPLE = re.compile(
    r"(?P<src>\S*):(?P<sport>\d+)->(?P<dst>\S*):(?P<dport>\d+)\((?P<proto>\w*)(?::[A-Z|]+)?\)"
)
EVENT = re.compile(r"^(0x[0-9a-f]+)\s+\d+\s")


@dataclass
class Event:
    line: str
    skb: str
    netns: int
    tuple: tuple[str, int, str, int, str]
    func: str
    after: list[str]  # tokens after FUNC (CALLER, the inner tuple, ...)
    stack: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """FUNC without a drop reason or (tc)."""
        return self.func.split("(", 1)[0]


def _tuple(m: re.Match[str]) -> tuple[str, int, str, int, str]:
    return (m["src"], int(m["sport"]), m["dst"], int(m["dport"]), m["proto"])


def events(run_: PwruRun) -> list[Event]:
    """pwru's text output as events; --output-stack frames (one per line) go to the event."""
    found: list[Event] = []
    lines = run_.stdout.splitlines()
    assert lines and lines[0].startswith("SKB "), f"no header: {run_.stdout[:500]}"
    for line in lines[1:]:
        if not line.strip():
            continue
        if not EVENT.match(line):
            assert found, f"stack frame before any event: {line!r}"
            found[-1].stack.append(line.strip())
            continue
        cols = line.split()
        m = TUPLE.search(line)
        assert m, f"no tuple in {line!r}"
        rest = line[m.end() :].split()
        found.append(Event(line, cols[0], int(cols[3]), _tuple(m), rest[0], rest[1:]))
    return found


def show(run_: PwruRun, limit: int = 120) -> str:
    out = run_.stdout.splitlines()
    return "\n".join([f"$ pwru {' '.join(run_.args[1:])}", *out[:limit], "[stderr]", run_.stderr])


# --------------------------------------------------------------------------- network
@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab.create(subnet=2)
    try:
        yield lab
    finally:
        lab.close()


def in_netns(host: Host, fn: Callable[[], Any]) -> Any:
    """Run fn in a short-lived thread that joined host's network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[Any] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with open(host.netns_path) as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({host.netns})")
            result.append(fn())
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    t = threading.Thread(target=body, name=f"in-{host.netns}")
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), f"traffic from {host.netns} hung"
    if errors:
        raise errors[0]
    return result[0] if result else None


def send_udp(host: Host, dst: str, port: int, sport: int, count: int = 1) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("", sport))
            for _ in range(count):
                s.sendto(b"pwru-vm", (dst, port))

    in_netns(host, send)


def tcp_syn(host: Host, dst: str, port: int, sport: int) -> str:
    """One connection attempt (the SYN; the 0.5 s timeout is below TCP's 1 s initial RTO)."""

    def connect() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", sport))
            s.settimeout(0.5)
            try:
                s.connect((dst, port))
                return "connected"
            except ConnectionRefusedError:
                return "refused"
            except socket.timeout:
                return "timeout"

    return str(in_netns(host, connect))


def ipt(host: Host, *args: str) -> None:
    run("ip", "netns", "exec", host.netns, tool("iptables"), "-w", *args)


# --------------------------------------------------------------------------- 1 + 3: drop
DROP_PORT, DROP_SPORT = 7701, 41701
# the functions tests 1 and 3 look at (kprobe backend); absent ones simply do not match
DROP_FUNCS = (
    "__ip_queue_xmit|__ip_local_out|ip_local_out|ip_output|ip_finish_output2|ip_rcv|"
    "ip_local_deliver|nf_hook_slow|tcp_v4_rcv|kfree_skb_reason|sk_skb_reason_drop"
)
LOCAL_OUT = {"__ip_local_out", "ip_local_out", "ip_output"}
# functions reached after the drop by the packet that was not dropped
PAST_INPUT = {"ip_local_deliver_finish", "ip_protocol_deliver_rcu", "tcp_v4_rcv"}


def drop_function(release: str) -> str:
    """6.11 ("net: introduce sk_skb_reason_drop") moved drops to sk_skb_reason_drop;
    kfree_skb_reason became an inline wrapper."""
    major, minor = (int(x) for x in re.findall(r"\d+", release)[:2])
    return "sk_skb_reason_drop" if (major, minor) >= (6, 11) else "kfree_skb_reason"


def kernel_has_function(name: str) -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.split()[2] == name for line in f if line.rstrip().endswith(name))


@dataclass
class DropTrace:
    run: PwruRun | None  # None: kprobe-multi refused (asserted)
    lab_a: str
    lab_b: str
    netns_b: int
    outcome: str


@pytest.fixture(scope="module", params=BACKENDS)
def drop_trace(
    request: pytest.FixtureRequest, vm_kernel: KernelExpect, tmp_path_factory: Any
) -> Iterator[DropTrace]:
    """One pwru run (with --output-stack) over a TCP SYN that b's INPUT drops."""
    backend: str = request.param
    expr = f"tcp and dst port {DROP_PORT}"
    args = pwru_args(backend, DROP_FUNCS, ["--output-stack", expr])
    if multi_refused(backend, vm_kernel):
        assert_multi_refused(args, vm_kernel)
        yield DropTrace(None, "", "", 0, "")
        return
    lab = Lab.create(subnet=3)
    try:
        ipt(lab.b, "-A", "INPUT", "-p", "tcp", "--dport", str(DROP_PORT), "-j", "DROP")
        (pw,) = start_pwru([args], tmp_path_factory.mktemp(f"drop-{backend}"))
        outcome = tcp_syn(lab.a, lab.b.ipv4, DROP_PORT, DROP_SPORT)
        stop_pwru([pw])
        yield DropTrace(pw, lab.a.ipv4, lab.b.ipv4, lab.b.inode, outcome)
        ipt(lab.b, "-D", "INPUT", "-p", "tcp", "--dport", str(DROP_PORT), "-j", "DROP")
    finally:
        lab.close()


def _drop_event(trace: DropTrace, release: str) -> tuple[list[Event], Event]:
    """The SYN's events (one skb) and its drop event."""
    assert trace.run is not None
    evs = events(trace.run)
    want = (trace.lab_a, DROP_SPORT, trace.lab_b, DROP_PORT, "tcp")
    drops = [e for e in evs if e.name == drop_function(release) and e.tuple == want]
    assert drops, f"no {drop_function(release)} event for {want}\n{show(trace.run)}"
    drop = drops[0]
    return [e for e in evs if e.skb == drop.skb], drop


def test_iptables_drop(drop_trace: DropTrace, vm_kernel: KernelExpect) -> None:
    """The SYN leaves a through the ip_local_out family, reaches nf_hook_slow in b and is
    dropped there with SKB_DROP_REASON_NETFILTER_DROP by the kernel's drop function."""
    if drop_trace.run is None:
        return  # kprobe-multi refused: asserted by the fixture
    pw = drop_trace.run
    assert drop_trace.outcome == "timeout", f"the SYN was not dropped: {drop_trace.outcome}"
    fn = drop_function(vm_kernel.release)
    assert kernel_has_function(fn), f"{vm_kernel.release} has no {fn} in /proc/kallsyms"
    skb_events, drop = _drop_event(drop_trace, vm_kernel.release)
    names = [e.name for e in skb_events]
    detail = "\n".join(e.line for e in skb_events) + "\n---\n" + show(pw)
    assert drop.func == f"{fn}({NETFILTER_DROP})", detail
    assert drop.netns == drop_trace.netns_b, detail
    first_out = min(i for i, n in enumerate(names) if n in LOCAL_OUT)
    i_drop = skb_events.index(drop)
    hooks = [i for i, n in enumerate(names) if n == "nf_hook_slow"]
    assert first_out < i_drop, detail
    assert any(first_out < i < i_drop for i in hooks), detail
    assert "ip_rcv" in names[first_out:i_drop], detail
    # no other drop function in this kernel's trace, and nothing past INPUT
    other = {"kfree_skb_reason", "sk_skb_reason_drop"} - {fn}
    assert not other & set(names), detail
    assert not PAST_INPUT & set(names), detail


def test_output_stack(drop_trace: DropTrace, vm_kernel: KernelExpect) -> None:
    """--output-stack: the drop happened under nf_hook_slow, and the stack says so."""
    if drop_trace.run is None:
        return
    _, drop = _drop_event(drop_trace, vm_kernel.release)
    detail = f"{drop.line}\n" + "\n".join(drop.stack) + "\n---\n" + show(drop_trace.run)
    assert drop.stack, detail
    frames = [f.split("+", 1)[0] for f in drop.stack]
    assert "nf_hook_slow" in frames, detail
    # symbolized: names, outermost frames of the receive path below nf_hook_slow
    assert sum(not f.startswith("0x") for f in frames) >= 3, detail
    assert frames.index("nf_hook_slow") < len(frames) - 1, detail


# --------------------------------------------------------------------------- 2: DNAT
NAT_PORT, NAT_TO_PORT, NAT_SPORT = 7721, 7722, 41721
NAT_FUNCS = (
    "__ip_local_out|ip_local_out|nf_hook_slow|ip_output|ip_finish_output2|"
    "__dev_queue_xmit|ip_rcv|ip_local_deliver|__udp4_lib_rcv"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_track_skb_follows_dnat(
    backend: str, lab: Lab, vm_kernel: KernelExpect, tmp_path: Path
) -> None:
    """a DNATs X:7721 to b:7722 in its OUTPUT chain; pwru filters on X:7721. With
    --filter-track-skb the same skb is shown again with b:7722, without it never."""
    virtual = lab.b.ipv4.rsplit(".", 1)[0] + ".99"  # X: on the veth subnet, nobody has it
    expr = f"dst host {virtual} and dst port {NAT_PORT}"
    tracked = pwru_args(backend, NAT_FUNCS, ["--filter-track-skb", expr])
    plain = pwru_args(backend, NAT_FUNCS, [expr])
    if multi_refused(backend, vm_kernel):
        assert_multi_refused(tracked, vm_kernel)
        return
    rule = ["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", virtual, "--dport", str(NAT_PORT),
            "-j", "DNAT", "--to-destination", f"{lab.b.ipv4}:{NAT_TO_PORT}"]  # fmt: skip
    ipt(lab.a, *rule)
    try:
        runs = start_pwru([tracked, plain], tmp_path)
        send_udp(lab.a, virtual, NAT_PORT, NAT_SPORT)
        stop_pwru(runs)
    finally:
        ipt(lab.a, "-t", "nat", "-D", *rule[3:])
    original = (lab.a.ipv4, NAT_SPORT, virtual, NAT_PORT, "udp")
    natted = (lab.a.ipv4, NAT_SPORT, lab.b.ipv4, NAT_TO_PORT, "udp")
    with_track, without = (events(r) for r in runs)

    detail = show(runs[0])
    before = [e for e in with_track if e.tuple == original]
    assert before, detail
    after = [e for e in with_track if e.tuple == natted]
    assert after, f"--filter-track-skb lost the packet after DNAT\n{detail}"
    assert {e.skb for e in after} & {e.skb for e in before}, detail
    # after NAT it left a and arrived in b
    assert {e.netns for e in after} == {lab.a.inode, lab.b.inode}, detail
    assert "ip_rcv" in {e.name for e in after}, detail

    detail = show(runs[1])
    assert [e for e in without if e.tuple == original], detail
    assert all(e.tuple == original for e in without), f"without tracking\n{detail}"


# --------------------------------------------------------------------------- 4: tc
TC_PORT, TC_SPORT = 7741, 41741
TC_PROG = "vm_tc_ingress"  # tests/vm/guest/progs/tc.bpf.c
TC_FUNCS = "ip_rcv|__netif_receive_skb|tcf_classify"


@pytest.mark.parametrize("backend", BACKENDS)
def test_filter_trace_tc(
    backend: str, lab: Lab, vm_kernel: KernelExpect, probes_dir: Path, tmp_path: Path
) -> None:
    """A tc classifier on b's veth ingress, loaded with tc(8): pwru --filter-trace-tc shows
    the packet passing through it as `vm_tc_ingress(tc)`, before ip_rcv."""
    obj = probes_dir / "tc.bpf.o"
    assert obj.is_file(), f"{obj} missing: matrix.sh builds it (make -C tests/vm/guest/progs)"
    args = pwru_args(backend, TC_FUNCS, ["--filter-trace-tc", f"udp and dst port {TC_PORT}"])
    if multi_refused(backend, vm_kernel):
        assert_multi_refused(args, vm_kernel)
        return
    tc = tool("tc")
    dev = ["dev", lab.b.ifname]
    run(tc, "-n", lab.b.netns, "qdisc", "add", *dev, "clsact")
    try:
        run(tc, "-n", lab.b.netns, "filter", "add", *dev, "ingress",
            "bpf", "da", "obj", str(obj), "sec", "tc")  # fmt: skip
        shown = run(tc, "-n", lab.b.netns, "filter", "show", *dev, "ingress").stdout
        assert f"name {TC_PROG}" in shown, shown
        (pw,) = start_pwru([args], tmp_path)
        assert re.search(r"tracing [1-9]\d* tc programs", pw.stderr), pw.stderr
        send_udp(lab.a, lab.b.ipv4, TC_PORT, TC_SPORT, count=2)
        stop_pwru([pw])
    finally:
        run(tc, "-n", lab.b.netns, "qdisc", "del", *dev, "clsact", check=False)
    evs = events(pw)
    want = (lab.a.ipv4, TC_SPORT, lab.b.ipv4, TC_PORT, "udp")
    tc_events = [e for e in evs if e.func == f"{TC_PROG}(tc)"]
    assert len(tc_events) >= 2, show(pw)
    assert all(e.tuple == want and e.netns == lab.b.inode for e in tc_events), show(pw)
    # the classifier runs in b before IP: ip_rcv comes after it for the same skb
    first = tc_events[0]
    later = evs[evs.index(first) + 1 :]
    assert any(e.skb == first.skb and e.name == "ip_rcv" for e in later), show(pw)


# --------------------------------------------------------------------------- 5: pcap filter
PCAP_FUNCS = "__ip_local_out|ip_output|__dev_queue_xmit|ip_rcv|ip_local_deliver|__udp4_lib_rcv"


@pytest.mark.parametrize("backend", BACKENDS)
def test_pcap_filter(backend: str, lab: Lab, vm_kernel: KernelExpect, tmp_path: Path) -> None:
    """'udp and dst port 7801' with datagrams to 7801 and 7802: only 7801 is printed."""
    args = pwru_args(backend, PCAP_FUNCS, ["udp and dst port 7801"])
    if multi_refused(backend, vm_kernel):
        assert_multi_refused(args, vm_kernel)
        return
    (pw,) = start_pwru([args], tmp_path)
    send_udp(lab.a, lab.b.ipv4, 7801, 41801)
    send_udp(lab.a, lab.b.ipv4, 7802, 41802)
    stop_pwru([pw])
    evs = events(pw)
    assert evs, show(pw)
    assert {e.tuple for e in evs} == {(lab.a.ipv4, 41801, lab.b.ipv4, 7801, "udp")}, show(pw)
    # the whole path: sent in a, received in b
    assert {e.netns for e in evs} == {lab.a.inode, lab.b.inode}, show(pw)
    assert {"ip_output", "ip_rcv"} <= {e.name for e in evs}, show(pw)


# --------------------------------------------------------------------------- 6: Geneve
GENEVE_PORT = 6081
INNER = ("198.51.100.1", "198.51.100.2")
GENEVE_FUNCS = "ip_rcv|ip_local_deliver|udp_rcv|__udp4_lib_rcv|__dev_queue_xmit|ip_output"


def _geneve(lab: Lab) -> tuple[str, str]:
    """A Geneve tunnel (VNI 7) between a and b over the veth; returns the inner addresses."""
    if not Path("/sys/module/geneve").exists():
        run(tool("modprobe"), "geneve")
    inner = {lab.a.netns: INNER[0], lab.b.netns: INNER[1]}
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):
        here.run("ip", "link", "add", "gn0", "type", "geneve", "id", "7", "remote", there.ipv4)
        here.run("ip", "addr", "add", f"{inner[here.netns]}/24", "dev", "gn0")
        here.run("ip", "link", "set", "gn0", "up")
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):
        mac = there.run("cat", "/sys/class/net/gn0/address").stdout.strip()
        here.run("ip", "neigh", "replace", inner[there.netns], "lladdr", mac, "dev", "gn0",
                 "nud", "permanent")  # fmt: skip
    return inner[lab.a.netns], inner[lab.b.netns]


@pytest.mark.parametrize("backend", BACKENDS)
def test_geneve_inner_filter(
    backend: str, lab: Lab, vm_kernel: KernelExpect, tmp_path: Path
) -> None:
    """Outer filter 'udp dst port 6081' + --filter-tunnel-pcap-l3 'udp dst port 7811': only
    the tunnelled datagram to 7811 is printed, with its inner tuple (--output-tunnel)."""
    args = pwru_args(
        backend,
        GENEVE_FUNCS,
        ["--filter-netns", lab.b.netns_path, "--output-tunnel",
         "--filter-tunnel-pcap-l3", "udp dst port 7811", f"udp dst port {GENEVE_PORT}"],
    )  # fmt: skip
    if multi_refused(backend, vm_kernel):
        assert_multi_refused(args, vm_kernel)
        return
    inner_a, inner_b = _geneve(lab)
    try:
        (pw,) = start_pwru([args], tmp_path)
        send_udp(lab.a, inner_b, 7811, 41811)
        send_udp(lab.a, inner_b, 7812, 41812)
        stop_pwru([pw])
    finally:
        for host in (lab.a, lab.b):
            host.run("ip", "link", "del", "gn0", check=False)
    evs = events(pw)
    assert evs, show(pw)
    names = set()
    for e in evs:
        assert e.tuple[2:] == (lab.b.ipv4, GENEVE_PORT, "udp"), show(pw)
        assert e.netns == lab.b.inode, show(pw)
        inner = TUPLE.search(" ".join(e.after))
        assert inner, f"no inner tuple: {e.line}\n{show(pw)}"
        assert _tuple(inner) == (inner_a, 41811, inner_b, 7811, "udp"), show(pw)
        names.add(e.name)
    assert "ip_rcv" in names, show(pw)
