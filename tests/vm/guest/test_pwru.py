"""pwru's kprobe features end to end, inside each guest kernel of tests/vm/kernels.txt.

Every test runs once per backend: ``kprobe`` (restricted with --filter-func to the functions
the test looks at: attaching ~1,600 kprobes one by one is slow under TCG) and
``kprobe-multi`` (every skb function). Where kernels.txt says kprobe.multi does not work
(Debian 6.1: CONFIG_FPROBE off), the kprobe-multi case runs the same pwru command and
asserts pwru's one-line error naming CONFIG_FPROBE and exit code 1.

  1. iptables DROP in the receiver's INPUT: a TCP SYN passes the ip_local_out family and
     nf_hook_slow and ends in kfree_skb_reason (< 6.11) / sk_skb_reason_drop (6.11+) with
     SKB_DROP_REASON_NETFILTER_DROP.
  2. --filter-track-skb follows a DNAT'ed datagram to its new destination; without it the
     translated packet is not shown.
  3. --output-stack: the drop event's stack (run of 1) contains nf_hook_slow.
  4. --filter-trace-tc sees a tc classifier loaded with tc(8) (progs/tc.bpf.c).
  5. a pcap filter restricts the output to the matching port.
  6. Geneve (the CI host has no geneve module): inner-packet filter and inner tuple.
  7. clones: a's tc egress mirrors a datagram (tc mirred: skb_clone) to a second veth pair
     into b, where the kernel clears the mark pwru filters on; --filter-track-skb still
     follows the clone (fexit on skb_clone with kprobe, kretprobe with kprobe-multi).
  8. --filter-trace-xdp: an XDP program (progs/xdp.bpf.c, generic mode on that second pair)
     drops one port; entry and exit events, the exit with XDP_DROP.
  9. --filter-track-skb-by-stackid: the ICMP port unreachable b builds while handling a
     matched datagram is shown although it does not match, and followed back into a.
 10. --filter-non-skb-funcs nft_do_chain: the nftables chain run is shown for the SYN of
     test 1, with --output-caller naming the calling function as the stack does.
 11. --filter-xdp-expr / --output-xdp-metadata on test 8's XDP program: the expression
     keeps (==) or rejects (!=) the packets, the XDP events print the xdp_buff's fields.
 12. --filter-track-bpf-helpers --output-bpfmap (in test 4's run): the helpers its tc
     program calls (bpf_skb_load_bytes, the hash map lookup and update) are shown for its
     packet, with the map's id, name, key and value.
 13. Kernels without BPF cookies (5.10): kprobe events are named by address, and pwru
     says so; without module BTF, --kmods is refused in one line.
 14. --output-per-packet with clones: the datagram of test 7 and its mirrored clone are one
     packet (the clone's birth reported by the fexit/kretprobe on skb_clone), with two fates.
 15. --summary on the SYN of test 1 names the netfilter hook (nf_hook_slow's state), the
     dropping function (the drop function's return address) and the iptables rule whose
     counter grew; the DNAT'ed datagram of test 2 is one packet whose tuple changes.
     (14 and 15 share one run: --filter-track-skb --summary --output-per-packet --output-json.)
Expectations per kernel (drop function, cookies, module BTF, kprobe-multi) come from
tests/vm/kernels.txt.

How (time: one pwru start costs ~10 s of CPU under TCG — Python, BTF, discovery, load):
one lab for the module (netlab's Lab: two namespaces on a veth pair) with
every scenario's rules, tc filter and tunnel in place. Per backend, the six pwru runs of
the six tests (1 and 3 share one, 2 needs two) start at the same time (netlab's PwruRun:
each waits for its --ready-file), then all the traffic is sent, from a thread that
setns()-es into the sender's namespace (no `ip netns exec python3`: 2-5 s a start here),
then they stop and each test asserts on its own run's output. Every scenario's traffic
crosses every other run's filter, so each run also proves its filter rejects the rest.
pwru is the console script next to the interpreter running pytest ($PWRU_BIN overrides):
the guest's PATH has no pyenv. pwru's outputs are kept in $PWRU_VM_RESULTS/<package>.pwru/.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netlab import Host, Lab, PwruRun, pwru_programs_left

from .conftest import KernelExpect, run, tool

pytestmark = pytest.mark.vm

KPROBE, KPROBE_MULTI = "kprobe", "kprobe-multi"
BACKENDS = (KPROBE, KPROBE_MULTI)
START_AT_ONCE = 3  # pwru runs starting together in a guest
READY_TIMEOUT = 300.0  # per run, START_AT_ONCE starting together on 2 TCG vCPUs, busy host
SETTLE = 1.0  # softirq delivery under TCG before pwru is stopped
LEFT_TIMEOUT = 60.0  # the kernel frees programs an RCU grace period after the last fd
SCENARIOS_ENV = "PWRU_VM_SCENARIOS"  # e.g. "tc,xdp": start only these runs (debugging)
CLONE_NEWNET = 0x40000000
NETFILTER_DROP = "SKB_DROP_REASON_NETFILTER_DROP"
T = TypeVar("T")

# Ports: one scenario each; every source port is fixed so tuples can be compared whole.
DROP_PORT, DROP_SPORT = 7701, 41701
NAT_PORT, NAT_TO_PORT, NAT_SPORT = 7721, 7722, 41721
# a port per backend: each run meets the tc program's hash map (progs/tc.bpf.c counts
# datagrams per port) without its port at first, so the lookup misses and an update adds
# it; the second datagram's lookup then finds 1 (test 12)
TC_PORT = {"kprobe": 7741, "kprobe-multi": 7742}
TC_SPORT = 41741
PCAP_PORT, PCAP_SPORT, PCAP_OTHER, PCAP_OTHER_SPORT = 7801, 41801, 7802, 41802
GENEVE_PORT, GENEVE_VNI = 6081, "7"
INNER_PORT, INNER_SPORT, INNER_OTHER, INNER_OTHER_SPORT = 7811, 41811, 7812, 41812
INNER = ("198.51.100.1", "198.51.100.2")  # gn0 in a, b
TC_PROG = "vm_tc_ingress"  # tests/vm/guest/progs/tc.bpf.c
CLONE_PORT, CLONE_SPORT, CLONE_MARK = 7751, 41751, 0x77
XDP_PORT, XDP_SPORT, XDP_PASS_PORT = 7761, 41761, 7762  # progs/xdp.bpf.c drops XDP_PORT
XDP_PROG = "vm_xdp_drop"
STACK_PORT, STACK_SPORT = 7771, 41771
HELPER_MAP = "vm_tc_ports"  # progs/tc.bpf.c
HELPER_CALL = re.compile(r"bpf_skb_load_bytes|\w+_(lookup|update|delete)_elem")
MIRROR = ("pwm0", "pwm1")  # second veth pair: pwm0 in a, pwm1 in b
MIRROR_NET = ("203.0.113.1", "203.0.113.2")
NO_TUPLE = ("", 0, "", 0, "")  # what pwru prints for an skb without headers yet

# --filter-func for the kprobe backend: the functions each test looks at (names absent
# from a kernel simply do not match)
DROP_FUNCS = (
    "__ip_queue_xmit|__ip_local_out|ip_local_out|ip_output|ip_finish_output2|ip_rcv|"
    "ip_local_deliver|nf_hook_slow|tcp_v4_rcv|kfree_skb|kfree_skb_reason|sk_skb_reason_drop"
)
DROP_FUNCTIONS = {"kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop"}  # kernels.txt: drop
NAT_FUNCS = (
    "__ip_local_out|ip_local_out|nf_hook_slow|ip_output|ip_finish_output2|"
    "__dev_queue_xmit|ip_rcv|ip_local_deliver|__udp4_lib_rcv"
)
TC_FUNCS = "ip_rcv|__netif_receive_skb|tcf_classify"
PCAP_FUNCS = "__ip_local_out|ip_output|__dev_queue_xmit|ip_rcv|ip_local_deliver|__udp4_lib_rcv"
GENEVE_FUNCS = "ip_rcv|ip_local_deliver|udp_rcv|__udp4_lib_rcv"
# the clone must meet no probe in a (where it still has the mark): none past ip_output
CLONE_FUNCS = "ip_output|ip_rcv|kfree_skb|kfree_skb_reason|sk_skb_reason_drop"
XDP_FUNCS = "ip_output|ip_rcv"
STACK_FUNCS = "__ip_local_out|ip_output|ip_rcv|__udp4_lib_rcv|icmp_rcv"

LOCAL_OUT = {"__ip_local_out", "ip_local_out", "ip_output"}
PAST_INPUT = {"ip_local_deliver_finish", "ip_protocol_deliver_rcu", "tcp_v4_rcv"}


# --------------------------------------------------------------------------- pwru
def parallel(fns: list[Callable[[], T]]) -> list[T]:
    """Call every fn at once; all finish before the first error (if any) is raised."""
    with ThreadPoolExecutor(max_workers=len(fns)) as pool:
        futures = [pool.submit(fn) for fn in fns]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]


def pwru_refusal(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.environ["PWRU_BIN"], *args],
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def assert_refused(res: subprocess.CompletedProcess[str], release: str) -> None:
    """No kprobe.multi in this kernel: one line naming CONFIG_FPROBE, exit 1, no trace."""
    detail = f"{release}: {' '.join(res.args)} -> rc={res.returncode}\n{res.stderr}"
    assert res.returncode == 1, detail
    assert res.stdout == "", detail
    errors = [ln for ln in res.stderr.splitlines() if "CONFIG_FPROBE" in ln]
    assert len(errors) == 1, detail
    assert res.stderr.rstrip("\n").splitlines()[-1] == errors[0], detail
    assert errors[0].startswith("pwru: ") and "kprobe-multi" in errors[0], detail
    assert "Traceback" not in res.stderr, detail


def start_all(
    arg_sets: list[list[str]], workdir: Path, env: dict[str, str] | None = None
) -> list[PwruRun]:
    """Start several pwru, a few at a time, and wait until every one is ready. Under
    TCG their start-up is CPU work: a few at once keeps each one's wait for its own
    ready file short even on a busy host (all at once, the last waits for all)."""
    with ThreadPoolExecutor(max_workers=min(len(arg_sets), START_AT_ONCE)) as pool:
        futures = [pool.submit(PwruRun, args, workdir, READY_TIMEOUT, env) for args in arg_sets]
        errors = [f.exception() for f in futures]
    runs = [f.result() for f in futures if f.exception() is None]
    if any(errors):
        for r in runs:
            with contextlib.suppress(Exception):
                r.stop()
        raise next(e for e in errors if e is not None)
    return runs


def stop_all(runs: list[PwruRun]) -> None:
    time.sleep(SETTLE)
    codes = parallel([partial(r.stop, signal.SIGINT, timeout=120) for r in runs])
    for r, code in zip(runs, codes):
        assert code == 0, f"pwru {' '.join(r.args)} -> {code}\n{r.stderr}"


# --------------------------------------------------------------------------- output
TUPLE = re.compile(
    r"(?P<src>\S*):(?P<sport>\d+)->(?P<dst>\S*):(?P<dport>\d+)\((?P<proto>\w*)(?::[A-Z|]+)?\)"
)
EVENT = re.compile(r"^(0x[0-9a-f]+)\s+\d+\s")  # SKB CPU ...; a stack frame is one token


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


def events(pw: PwruRun) -> list[Event]:
    """pwru's text output as events; --output-stack frames (one per line) go to the event."""
    found: list[Event] = []
    lines = pw.stdout.splitlines()
    assert lines and lines[0].startswith("SKB "), f"no header: {pw.stdout[:500]}"
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


def show(pw: PwruRun, limit: int = 150) -> str:
    out = pw.stdout.splitlines()
    more = [f"... {len(out) - limit} more lines"] if len(out) > limit else []
    return "\n".join([f"$ {' '.join(pw.args)}", *out[:limit], *more, "[stderr]", pw.stderr])


# --------------------------------------------------------------------------- traffic
def in_netns(host: Host, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread that joined host's network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with open(host.netns_path) as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({host.netns})")
            result.append(fn())
        except BaseException as error:  # re-raised in the caller
            errors.append(error)

    t = threading.Thread(target=body, name=f"in-{host.netns}")
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), f"traffic from {host.netns} hung"
    if errors:
        raise errors[0]
    return result[0]


def udp(dst: str, port: int, sport: int, count: int = 1, mark: int = 0) -> Callable[[], None]:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if mark:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            s.bind(("", sport))
            for _ in range(count):
                s.sendto(b"pwru-vm", (dst, port))

    return send


def tcp_syn(dst: str, port: int, sport: int) -> Callable[[], str]:
    """One connection attempt: the SYN (the 0.5 s timeout is below TCP's 1 s initial RTO)."""

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

    return connect


# --------------------------------------------------------------------------- the lab
@dataclass
class GuestLab:
    lab: Lab
    virtual: str  # the DNAT'ed destination X (on the veth subnet, nobody has it)
    mirror_ifindex: int  # pwm1 in b

    @property
    def a(self) -> Host:
        return self.lab.a

    @property
    def b(self) -> Host:
        return self.lab.b


def ipt(host: Host, *args: str, check: bool = True) -> None:
    run("ip", "netns", "exec", host.netns, tool("iptables"), "-w", *args, check=check)


def tc(host: Host, *args: str, check: bool = True) -> str:
    return run(tool("tc"), "-n", host.netns, *args, check=check).stdout


def add_geneve(lab: Lab) -> None:
    """A Geneve tunnel (gn0, VNI 7, UDP 6081) between a and b over the veth."""
    if not Path("/sys/module/geneve").exists():
        run(tool("modprobe"), "geneve")
    inner = {lab.a.netns: INNER[0], lab.b.netns: INNER[1]}
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):
        here.run("ip", "link", "add", "gn0", "type", "geneve", "id", GENEVE_VNI,
                 "remote", there.ipv4)  # fmt: skip
        here.run("ip", "addr", "add", f"{inner[here.netns]}/24", "dev", "gn0")
        here.run("ip", "link", "set", "gn0", "up")
    for here, there in ((lab.a, lab.b), (lab.b, lab.a)):  # static neighbours, as netlab
        mac = there.run("cat", "/sys/class/net/gn0/address").stdout.strip()
        here.run("ip", "neigh", "replace", inner[there.netns], "lladdr", mac, "dev", "gn0",
                 "nud", "permanent")  # fmt: skip


def add_mirror(lab: Lab, xdp_obj: Path) -> int:
    """A second veth pair (pwm0 in a, pwm1 in b, 203.0.113.0/24) with xdp.bpf.o on pwm1
    (generic mode), and a's veth egress mirroring UDP to CLONE_PORT into pwm0 (tc u32 + mirred
    clones the skb). Returns pwm1's ifindex."""
    a, b = lab.a, lab.b
    run("ip", "link", "add", MIRROR[0], "netns", a.netns, "type", "veth",
        "peer", "name", MIRROR[1], "netns", b.netns)  # fmt: skip
    for host, dev, addr in ((a, MIRROR[0], MIRROR_NET[0]), (b, MIRROR[1], MIRROR_NET[1])):
        host.run("ip", "addr", "add", f"{addr}/24", "dev", dev)
        host.run("ip", "link", "set", dev, "up")
    for here, dev, there, peer_dev, addr in (
        (a, MIRROR[0], b, MIRROR[1], MIRROR_NET[1]),
        (b, MIRROR[1], a, MIRROR[0], MIRROR_NET[0]),
    ):
        mac = there.run("cat", f"/sys/class/net/{peer_dev}/address").stdout.strip()
        here.run("ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
    b.run("ip", "link", "set", "dev", MIRROR[1], "xdpgeneric", "obj", str(xdp_obj), "sec", "xdp")
    shown = b.run("ip", "link", "show", "dev", MIRROR[1]).stdout
    assert "xdpgeneric" in shown, shown
    egress = ["dev", a.ifname]
    tc(a, "qdisc", "add", *egress, "clsact")
    tc(a, "filter", "add", *egress, "egress", "protocol", "ip", "u32",
       "match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", str(CLONE_PORT), "0xffff",
       "action", "mirred", "egress", "mirror", "dev", MIRROR[0])  # fmt: skip
    return int(b.run("cat", f"/sys/class/net/{MIRROR[1]}/ifindex").stdout)


@pytest.fixture(scope="module")
def guest_lab(probes_dir: Path) -> Iterator[GuestLab]:
    """a and b on a veth pair, with everything the scenarios need:
    b: iptables DROP of TCP to 7701 in INPUT; clsact + tc.bpf.o on veth-b ingress; ICMP
       errors not rate-limited (test 9 sends them);
    a: iptables DNAT X:7721 -> b:7722 in nat OUTPUT; a Geneve tunnel between a and b;
    a second veth pair with an XDP program, and a mirror into it (add_mirror)."""
    tc_obj, xdp_obj = probes_dir / "tc.bpf.o", probes_dir / "xdp.bpf.o"
    for obj in (tc_obj, xdp_obj):
        assert obj.is_file(), f"{obj} missing: matrix.sh builds it (tests/vm/guest/progs)"
    lab = Lab.create(subnet=2)
    virtual = lab.b.ipv4.rsplit(".", 1)[0] + ".99"
    drop_rule = ["INPUT", "-p", "tcp", "--dport", str(DROP_PORT), "-j", "DROP"]
    nat_rule = ["OUTPUT", "-p", "udp", "-d", virtual, "--dport", str(NAT_PORT),
                "-j", "DNAT", "--to-destination", f"{lab.b.ipv4}:{NAT_TO_PORT}"]  # fmt: skip
    dev = ["dev", lab.b.ifname]
    try:
        ipt(lab.b, "-A", *drop_rule)
        ipt(lab.a, "-t", "nat", "-A", *nat_rule)
        tc(lab.b, "qdisc", "add", *dev, "clsact")
        tc(lab.b, "filter", "add", *dev, "ingress", "bpf", "da", "obj", str(tc_obj), "sec", "tc")
        shown = tc(lab.b, "filter", "show", *dev, "ingress")
        assert f"name {TC_PROG}" in shown, shown
        add_geneve(lab)
        lab.b.run("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        mirror_ifindex = add_mirror(lab, xdp_obj)
        yield GuestLab(lab, virtual, mirror_ifindex)
    finally:
        # the namespaces take all of it with them; undo explicitly anyway
        for host in (lab.a, lab.b):
            host.run("ip", "link", "del", "gn0", check=False)
        lab.a.run("ip", "link", "del", MIRROR[0], check=False)
        tc(lab.a, "qdisc", "del", "dev", lab.a.ifname, "clsact", check=False)
        tc(lab.b, "qdisc", "del", *dev, "clsact", check=False)
        ipt(lab.a, "-t", "nat", "-D", *nat_rule, check=False)
        ipt(lab.b, "-D", *drop_rule, check=False)
        lab.close()


# --------------------------------------------------------------------------- the runs
@dataclass
class Scenario:
    run: PwruRun | None = None  # None: kprobe-multi refused (see refusal)
    refusal: subprocess.CompletedProcess[str] | None = None


@dataclass
class Traces:
    backend: str
    gl: GuestLab
    scenarios: dict[str, Scenario]
    syn: str  # what the TCP connect to the dropped port saw
    left: list[str]  # pwru's BPF programs still loaded once every run has exited

    def get(self, name: str, release: str) -> PwruRun:
        """The scenario's finished pwru run. Where this kernel has no kprobe-multi, the
        refusal is asserted (one clear line) and the test is skipped, saying so."""
        if name not in self.scenarios:
            pytest.fail(f"scenario {name!r} was not started ({SCENARIOS_ENV})", pytrace=False)
        sc = self.scenarios[name]
        if sc.refusal is not None:
            assert_refused(sc.refusal, release)
            pytest.skip(f"{release} has no kprobe-multi: pwru's refusal was asserted instead")
        assert sc.run is not None
        return sc.run


def scenario_args(gl: GuestLab, backend: str) -> dict[str, list[str]]:
    def args(kprobe_funcs: str, *rest: str, always: bool = False, auto: bool = False) -> list[str]:
        """--filter-func for the kprobe backend (and for both where ``always``); ``auto``:
        no --backend with the kprobe backend (pwru chooses; test_pcap_filter checks)."""
        only = ["--filter-func", kprobe_funcs] if backend == KPROBE or always else []
        chosen = [] if auto and backend == KPROBE else ["--backend", backend]
        return [*chosen, *only, *rest]

    nat_expr = f"dst host {gl.virtual} and dst port {NAT_PORT}"
    on_pwm1 = f"xdp->rxq->dev->ifindex == {gl.mirror_ifindex}"
    return {
        "drop": args(DROP_FUNCS, "--output-stack", f"tcp and dst port {DROP_PORT}"),
        "dnat-tracked": args(NAT_FUNCS, "--filter-track-skb", nat_expr),
        "dnat-plain": args(NAT_FUNCS, nat_expr),
        "tc": args(
            TC_FUNCS,
            "--filter-trace-tc",
            "--filter-track-bpf-helpers",
            "--output-bpfmap",
            f"udp and dst port {TC_PORT[backend]}",
        ),
        "pcap": args(PCAP_FUNCS, f"udp and dst port {PCAP_PORT}", auto=True),
        "geneve": args(
            GENEVE_FUNCS,
            "--filter-netns",
            gl.b.netns_path,
            "--output-tunnel",
            "--filter-tunnel-pcap-l3",
            f"udp dst port {INNER_PORT}",
            f"udp dst port {GENEVE_PORT}",
        ),
        "clone": args(
            CLONE_FUNCS,
            "--filter-track-skb",
            "--filter-mark",
            hex(CLONE_MARK),
            "--output-skb-metadata",
            "skb->mark",
            f"udp and dst port {CLONE_PORT}",
            always=True,
        ),
        "xdp": args(
            XDP_FUNCS,
            "--filter-trace-xdp",
            "--filter-xdp-expr",
            on_pwm1,
            "--output-xdp-metadata",
            "xdp->rxq->queue_index,xdp->rxq->dev->ifindex",
            f"udp and dst port {XDP_PORT}",
        ),
        "xdp-miss": args(
            XDP_FUNCS,
            "--filter-trace-xdp",
            "--filter-xdp-expr",
            on_pwm1.replace("==", "!="),
            f"udp and dst port {XDP_PORT}",
        ),
        "stackid": args(
            STACK_FUNCS, "--filter-track-skb-by-stackid", f"udp and dst port {STACK_PORT}"
        ),
        "nonskb": args(
            DROP_FUNCS,
            "--filter-non-skb-funcs",
            "nft_do_chain",
            "--output-caller",
            "--output-stack",
            f"tcp and dst port {DROP_PORT}",
        ),
        # one run for tests 11 and 12 (each pwru start costs ~10 s of TCG CPU)
        "diagnose": args(
            f"{DROP_FUNCS}|{NAT_FUNCS}|{CLONE_FUNCS}",
            "--filter-track-skb",
            "--summary",
            "--output-per-packet",
            "--output-json",
            f"(tcp and dst port {DROP_PORT}) or ({nat_expr}) or (udp and dst port {CLONE_PORT})",
        ),
    }


# --filter-track-skb follows clones with fexit where the kernel allows it; the kprobe-multi
# runs take the kretprobe path instead, so both are proven (PWRU_CLONE_HOOK, pwru/trace/tracking.py)
CLONE_HOOK = {KPROBE: "fexit", KPROBE_MULTI: "kretprobe"}


def send_everything(gl: GuestLab, backend: str) -> str:
    """Every scenario's traffic, all from a; returns the dropped connection's outcome."""
    a, b = gl.a, gl.b
    syn = in_netns(a, tcp_syn(b.ipv4, DROP_PORT, DROP_SPORT))
    for send in (
        udp(b.ipv4, STACK_PORT, STACK_SPORT),
        udp(b.ipv4, CLONE_PORT, CLONE_SPORT, mark=CLONE_MARK),
        udp(MIRROR_NET[1], XDP_PORT, XDP_SPORT, count=2),
        udp(MIRROR_NET[1], XDP_PASS_PORT, XDP_SPORT),
        udp(gl.virtual, NAT_PORT, NAT_SPORT),
        udp(b.ipv4, TC_PORT[backend], TC_SPORT, count=2),
        udp(b.ipv4, PCAP_PORT, PCAP_SPORT),
        udp(b.ipv4, PCAP_OTHER, PCAP_OTHER_SPORT),
        udp(INNER[1], INNER_PORT, INNER_SPORT),
        udp(INNER[1], INNER_OTHER, INNER_OTHER_SPORT),
    ):
        in_netns(a, send)
    return syn


@pytest.fixture(scope="module", params=BACKENDS)
def traces(
    request: pytest.FixtureRequest,
    guest_lab: GuestLab,
    vm_kernel: KernelExpect,
    vm_results: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Traces:
    backend: str = request.param
    wanted = scenario_args(guest_lab, backend)
    if os.environ.get(SCENARIOS_ENV):  # for debugging a few scenarios (select their tests)
        chosen = os.environ[SCENARIOS_ENV].split(",")
        wanted = {name: args for name, args in wanted.items() if name in chosen}
    key = "pwru_" + backend.replace("-", "_")
    started = time.monotonic()
    if backend == KPROBE_MULTI and vm_kernel.expect["kprobe_multi"] != "ok":
        refusals = parallel([partial(pwru_refusal, a) for a in wanted.values()])
        vm_results[key] = "refused: " + refusals[0].stderr.strip().splitlines()[-1]
        scenarios = {n: Scenario(refusal=r) for n, r in zip(wanted, refusals)}
        return Traces(backend, guest_lab, scenarios, "", pwru_programs_left(LEFT_TIMEOUT))
    env = {"PWRU_CLONE_HOOK": CLONE_HOOK[backend]} if CLONE_HOOK[backend] != "fexit" else {}
    runs = start_all(list(wanted.values()), tmp_path_factory.mktemp(backend), env)
    ready = time.monotonic() - started
    try:
        syn = send_everything(guest_lab, backend)
    finally:
        stop_all(runs)
    left = pwru_programs_left(LEFT_TIMEOUT)
    keep_outputs(backend, wanted, runs)
    attached = re.search(r"attached \d+ functions.*", runs[0].stderr)
    vm_results[key] = (
        f"{len(runs)} runs ready after {ready:.1f} s; drop run: "
        f"{attached.group(0) if attached else '?'}"
    )
    scenarios = {n: Scenario(run=r) for n, r in zip(wanted, runs)}
    return Traces(backend, guest_lab, scenarios, syn, left)


def keep_outputs(backend: str, wanted: dict[str, list[str]], runs: list[PwruRun]) -> None:
    """pwru's outputs, for reading after the VM is gone: $PWRU_VM_RESULTS/<package>.pwru/."""
    results = os.environ.get("PWRU_VM_RESULTS")
    if not results:
        return
    out = Path(results, os.environ.get("PWRU_VM_PKG", os.uname().release) + ".pwru")
    out.mkdir(exist_ok=True)
    for name, pw in zip(wanted, runs):
        text = f"$ {' '.join(pw.args)}\n{pw.stdout}[stderr]\n{pw.stderr}"
        (out / f"{backend}-{name}.txt").write_text(text)


# --------------------------------------------------------------------------- 1 + 3: drop
def drop_func(kernel: KernelExpect, reason: str) -> str:
    """FUNC of a drop event on this kernel (kernels.txt's drop column): the function
    with the reason, or plain kfree_skb where the kernel has no drop reasons (5.10).
    6.11 ("net: introduce sk_skb_reason_drop") moved drops to sk_skb_reason_drop."""
    fn = kernel.expect["drop"]
    return fn if fn == "kfree_skb" else f"{fn}({reason})"


def story_reason(kernel: KernelExpect, reason: str) -> str | None:
    """A packet's drop reason in the per-packet view: none where the kernel has no drop
    reasons (5.10; the summary infers them from the dropping function, a packet's
    verdict does not)."""
    return None if kernel.expect["drop"] == "kfree_skb" else reason


def kernel_has_function(name: str) -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.split()[2] == name for line in f if line.rstrip().endswith(name))


def syn_events(tr: Traces, pw: PwruRun, kernel: KernelExpect) -> tuple[list[Event], Event]:
    """The SYN's events (one skb) and its drop event."""
    evs = events(pw)
    want = (tr.gl.a.ipv4, DROP_SPORT, tr.gl.b.ipv4, DROP_PORT, "tcp")
    fn = kernel.expect["drop"]
    drops = [e for e in evs if e.name == fn and e.tuple == want]
    assert drops, f"no {fn} event for {want}\n{show(pw)}"
    return [e for e in evs if e.skb == drops[0].skb], drops[0]


def test_iptables_drop(traces: Traces, vm_kernel: KernelExpect) -> None:
    """The SYN leaves a through the ip_local_out family, reaches nf_hook_slow in b and is
    dropped there with SKB_DROP_REASON_NETFILTER_DROP by this kernel's drop function."""
    pw = traces.get("drop", vm_kernel.release)
    assert traces.syn == "timeout", f"the SYN was not dropped: {traces.syn}"
    fn = vm_kernel.expect["drop"]
    assert kernel_has_function(fn), f"{vm_kernel.release}: no {fn} in /proc/kallsyms"
    skb_events, drop = syn_events(traces, pw, vm_kernel)
    names = [e.name for e in skb_events]
    detail = "\n".join(e.line for e in skb_events) + "\n---\n" + show(pw)
    assert drop.func == drop_func(vm_kernel, NETFILTER_DROP), detail
    assert drop.netns == traces.gl.b.inode, detail
    first_out = min(i for i, n in enumerate(names) if n in LOCAL_OUT)
    i_drop = skb_events.index(drop)
    assert first_out < i_drop, detail
    assert "ip_rcv" in names[first_out:i_drop], detail
    assert "nf_hook_slow" in names[first_out:i_drop], detail
    # the other kernel generations' drop functions are not there; nothing past INPUT
    assert not (DROP_FUNCTIONS - {fn}) & set(names), detail
    assert not PAST_INPUT & set(names), detail


def test_output_stack(traces: Traces, vm_kernel: KernelExpect) -> None:
    """--output-stack: the drop happened under nf_hook_slow, and its stack says so."""
    pw = traces.get("drop", vm_kernel.release)
    _, drop = syn_events(traces, pw, vm_kernel)
    detail = f"{drop.line}\n" + "\n".join(drop.stack) + "\n---\n" + show(pw)
    frames = [f.split("+", 1)[0] for f in drop.stack]
    assert "nf_hook_slow" in frames, detail
    # symbolized, with the receive path below nf_hook_slow
    assert frames.index("nf_hook_slow") < len(frames) - 1, detail
    assert sum(not f.startswith("0x") for f in frames) >= 3, detail
    assert not frames[0].startswith(("bpf_", "kprobe", "fprobe")), detail


# --------------------------------------------------------------------------- 2: DNAT
def test_track_skb_follows_dnat(traces: Traces, vm_kernel: KernelExpect) -> None:
    """a DNATs X:7721 to b:7722 in its OUTPUT chain; pwru filters on X:7721. With
    --filter-track-skb the same skb is shown again with b:7722, without it never."""
    tracked = traces.get("dnat-tracked", vm_kernel.release)
    plain = traces.get("dnat-plain", vm_kernel.release)
    a, b = traces.gl.a, traces.gl.b
    original = (a.ipv4, NAT_SPORT, traces.gl.virtual, NAT_PORT, "udp")
    natted = (a.ipv4, NAT_SPORT, b.ipv4, NAT_TO_PORT, "udp")

    evs, detail = events(tracked), show(tracked)
    before = [e for e in evs if e.tuple == original]
    after = [e for e in evs if e.tuple == natted]
    assert before, detail
    assert after, f"--filter-track-skb lost the packet after DNAT\n{detail}"
    assert {e.skb for e in after} & {e.skb for e in before}, detail
    assert {e.netns for e in after} == {a.inode, b.inode}, detail  # left a, arrived in b
    assert "ip_rcv" in {e.name for e in after}, detail
    assert {e.tuple for e in evs} == {original, natted}, detail

    evs, detail = events(plain), show(plain)
    assert [e for e in evs if e.tuple == original], detail
    assert {e.tuple for e in evs} == {original}, f"without --filter-track-skb\n{detail}"


# --------------------------------------------------------------------------- 4: tc
def test_filter_trace_tc(traces: Traces, vm_kernel: KernelExpect) -> None:
    """A tc classifier on b's veth ingress, loaded with tc(8): pwru --filter-trace-tc shows
    both datagrams passing through it as `vm_tc_ingress(tc)`, before ip_rcv."""
    pw = traces.get("tc", vm_kernel.release)
    assert re.search(r"tracing 1 tc programs", pw.stderr), show(pw)
    evs = events(pw)
    a, b = traces.gl.a, traces.gl.b
    want = (a.ipv4, TC_SPORT, b.ipv4, TC_PORT[traces.backend], "udp")
    tc_events = [e for e in evs if e.func == f"{TC_PROG}(tc)"]
    assert len(tc_events) == 2, show(pw)
    assert all(e.tuple == want and e.netns == b.inode for e in tc_events), show(pw)
    assert {e.tuple for e in evs} == {want}, show(pw)
    for ev in tc_events:  # the classifier runs in b before IP
        later = evs[evs.index(ev) + 1 :]
        assert any(e.skb == ev.skb and e.name == "ip_rcv" for e in later), show(pw)


# --------------------------------------------------------------------------- 5: pcap filter
def test_pcap_filter(traces: Traces, vm_kernel: KernelExpect) -> None:
    """'udp and dst port 7801', with datagrams to 7801 and 7802 (and every other scenario's
    traffic) on the wire: only the datagram to 7801 is printed, on its whole path."""
    pw = traces.get("pcap", vm_kernel.release)
    a, b = traces.gl.a, traces.gl.b
    evs = events(pw)
    assert {e.tuple for e in evs} == {(a.ipv4, PCAP_SPORT, b.ipv4, PCAP_PORT, "udp")}, show(pw)
    assert {e.netns for e in evs} == {a.inode, b.inode}, show(pw)  # sent in a, received in b
    assert {"ip_output", "ip_rcv"} <= {e.name for e in evs}, show(pw)
    if "--backend" not in pw.args:  # the kprobe runs let pwru choose (kernels.txt: kprobe_multi)
        multi = vm_kernel.expect["kprobe_multi"] == "ok"
        chosen = (
            "kprobe-multi backend" if multi else "kprobe backend: this kernel has no kprobe-multi"
        )
        assert f"pwru: using the {chosen}" in pw.stderr, show(pw)


# --------------------------------------------------------------------------- 6: Geneve
def test_geneve_inner_filter(traces: Traces, vm_kernel: KernelExpect) -> None:
    """Outer 'udp dst port 6081' + --filter-tunnel-pcap-l3 'udp dst port 7811' in b: only
    the tunnelled datagram to 7811 is printed, with its inner tuple (--output-tunnel)."""
    pw = traces.get("geneve", vm_kernel.release)
    a, b = traces.gl.a, traces.gl.b
    evs = events(pw)
    assert evs, show(pw)
    for e in evs:
        assert e.tuple[0] == a.ipv4 and e.tuple[2:] == (b.ipv4, GENEVE_PORT, "udp"), show(pw)
        assert e.netns == b.inode, show(pw)
        inner = TUPLE.search(" ".join(e.after))
        assert inner, f"no inner tuple: {e.line}\n{show(pw)}"
        assert _tuple(inner) == (INNER[0], INNER_SPORT, INNER[1], INNER_PORT, "udp"), show(pw)
    assert "ip_rcv" in {e.name for e in evs}, show(pw)


# --------------------------------------------------------------------------- 7: clones
def metadata(ev: Event, name: str) -> int:
    """An --output-skb-metadata value (name=value after FUNC)."""
    found = [t.split("=", 1)[1] for t in ev.after if t.startswith(f"{name}=")]
    assert found, f"no {name}= in {ev.line!r}"
    return int(found[0], 0)


def test_track_skb_follows_clones(traces: Traces, vm_kernel: KernelExpect) -> None:
    """pwru matches the datagram by its mark in a (ip_output). a's tc egress mirrors it:
    skb_clone makes a second skb, which crosses a second veth pair into b; crossing into
    another namespace clears the mark (skb_scrub_packet), and b drops the clone in ip_rcv
    (it is addressed to another MAC). The clone is shown in b, with mark 0, only because
    --filter-track-skb followed it from skb_clone (--filter-func leaves no probe where the
    clone still has the mark)."""
    pw = traces.get("clone", vm_kernel.release)
    a, b = traces.gl.a, traces.gl.b
    hook = CLONE_HOOK[traces.backend]
    assert f"clones followed with {hook}" in pw.stderr, show(pw)
    want = (a.ipv4, CLONE_SPORT, b.ipv4, CLONE_PORT, "udp")
    evs, detail = events(pw), show(pw)
    assert {e.tuple for e in evs} == {want}, detail
    sent = [e for e in evs if e.name == "ip_output"]
    assert len(sent) == 1 and sent[0].netns == a.inode, detail
    assert metadata(sent[0], "mark") == CLONE_MARK, detail
    original = sent[0].skb
    in_b = [e for e in evs if e.netns == b.inode]
    assert all(metadata(e, "mark") == 0 for e in in_b), detail  # scrubbed: no match in b
    assert any(e.skb == original and e.name == "ip_rcv" for e in in_b), detail
    clone = [e for e in in_b if e.skb != original]
    assert clone, f"the mirrored clone was not followed into b\n{detail}"
    assert len({e.skb for e in clone}) == 1, detail
    assert all(f"{MIRROR[1]}:{traces.gl.mirror_ifindex}" in e.line for e in clone), detail
    assert clone[0].name == "ip_rcv", detail
    assert clone[-1].func == drop_func(vm_kernel, "SKB_DROP_REASON_OTHERHOST"), detail


# --------------------------------------------------------------------------- 8: XDP
def test_filter_trace_xdp(traces: Traces, vm_kernel: KernelExpect) -> None:
    """progs/xdp.bpf.c on pwm1 (generic XDP) drops UDP to 7761: for each of the two
    datagrams pwru shows the program's entry, `vm_xdp_drop(xdp)`, and its exit with the
    verdict, `vm_xdp_drop(XDP_DROP)(xdp)`; the dropped datagrams never reach ip_rcv, and
    the datagram to 7762 (passed) is filtered out."""
    pw = traces.get("xdp", vm_kernel.release)
    assert re.search(r"tracing 1 XDP programs", pw.stderr), show(pw)
    a_addr, b_addr = MIRROR_NET
    want = (a_addr, XDP_SPORT, b_addr, XDP_PORT, "udp")
    evs, detail = events(pw), show(pw)
    assert {e.tuple for e in evs} == {want}, detail
    xdp = [e for e in evs if e.func.endswith("(xdp)")]
    funcs = [e.func for e in xdp]
    assert funcs == [f"{XDP_PROG}(xdp)", f"{XDP_PROG}(XDP_DROP)(xdp)"] * 2, detail
    b = traces.gl.b
    assert all(e.netns == b.inode for e in xdp), detail
    assert all(f"{MIRROR[1]}:{traces.gl.mirror_ifindex}" in e.line for e in xdp), detail
    assert "ip_output" in {e.name for e in evs}, detail  # sent from a
    assert "ip_rcv" not in {e.name for e in evs}, detail  # dropped before IP


# --------------------------------------------------------------------------- 9: by stackid
def test_track_skb_by_stackid(traces: Traces, vm_kernel: KernelExpect) -> None:
    """A datagram to a closed port of b makes b answer with ICMP port unreachable, built
    while the datagram is being handled. The ICMP packet does not match 'udp and dst port
    7771', but it is met on the stack the datagram owns, so it is shown, then followed
    back to a by address."""
    pw = traces.get("stackid", vm_kernel.release)
    a, b = traces.gl.a, traces.gl.b
    datagram = (a.ipv4, STACK_SPORT, b.ipv4, STACK_PORT, "udp")
    reply = (b.ipv4, 0, a.ipv4, 0, "icmp")
    evs, detail = events(pw), show(pw)
    # all functions probed (kprobe-multi): the reply is also met before it has headers
    assert {e.tuple for e in evs} - {NO_TUPLE} == {datagram, reply}, detail
    replies = [e for e in evs if e.tuple == reply]
    assert {e.netns for e in replies} == {b.inode, a.inode}, detail  # built in b, back in a
    assert not {e.skb for e in replies} & {e.skb for e in evs if e.tuple == datagram}, detail
    # 7.3 has no __udp4_lib_rcv (inlined): the datagram's last sure stop is ip_rcv in b
    assert ("ip_rcv", b.inode) in {(e.name, e.netns) for e in evs if e.tuple == datagram}, detail
    assert {"icmp_rcv"} <= {e.name for e in replies if e.netns == a.inode}, detail


# --------------------------------------------------------------------------- 10: non-skb
def test_filter_non_skb_funcs(traces: Traces, vm_kernel: KernelExpect) -> None:
    """nft_do_chain takes no sk_buff. With --filter-non-skb-funcs it is shown for the SYN
    (same skb, same tuple) in b between nf_hook_slow and the drop; --output-caller names
    the function that called it (nft_do_chain_ipv4) and, for the drop, the first frame
    under the probed function in its --output-stack."""
    pw = traces.get("nonskb", vm_kernel.release)
    assert re.search(r", 1 non-skb functions", pw.stderr), show(pw)
    skb_events, drop = syn_events(traces, pw, vm_kernel)
    detail = "\n".join(e.line for e in skb_events) + "\n---\n" + show(pw)
    chain = [e for e in skb_events if e.name == "nft_do_chain" and e.netns == traces.gl.b.inode]
    assert chain, detail
    assert chain[0].after[0] == "nft_do_chain_ipv4", detail
    i_hook = max(i for i, e in enumerate(skb_events[: skb_events.index(chain[0])])
                 if e.name == "nf_hook_slow")  # fmt: skip
    assert i_hook < skb_events.index(chain[0]) < skb_events.index(drop), detail
    frames = [f.split("+", 1)[0] for f in drop.stack]
    assert frames[0] == drop.name, detail
    assert drop.after[0] == frames[1], detail


# --------------------------------------------------------------------------- 11: XDP expr
def test_xdp_expr_and_metadata(traces: Traces, vm_kernel: KernelExpect) -> None:
    """Test 8's run has --filter-xdp-expr 'xdp->rxq->dev->ifindex == <pwm1>' (which every
    packet there satisfies) and --output-xdp-metadata: its XDP events print the
    xdp_buff's receive queue and device; the skb events print no XDP field."""
    pw = traces.get("xdp", vm_kernel.release)
    evs, detail = events(pw), show(pw)
    xdp = [e for e in evs if e.func.endswith("(xdp)")]
    assert len(xdp) == 4, detail
    for e in xdp:
        assert metadata(e, "queue_index") == 0, detail
        assert metadata(e, "ifindex") == traces.gl.mirror_ifindex, detail
    skb = [e for e in evs if not e.func.endswith("(xdp)")]
    assert skb and not any("=" in " ".join(e.after) for e in skb), detail


def test_xdp_expr_rejects(traces: Traces, vm_kernel: KernelExpect) -> None:
    """The same run with the expression negated ('!='): the datagrams are still seen
    leaving a (ip_output), the XDP program is traced, and no XDP event passes."""
    pw = traces.get("xdp-miss", vm_kernel.release)
    evs, detail = events(pw), show(pw)
    assert re.search(r"tracing 1 XDP programs", pw.stderr), detail
    want = (MIRROR_NET[0], XDP_SPORT, MIRROR_NET[1], XDP_PORT, "udp")
    assert [e.tuple for e in evs if e.name == "ip_output"] == [want, want], detail
    assert not [e for e in evs if e.func.endswith("(xdp)")], detail


# --------------------------------------------------------------------------- 12: helpers
def bpfmap_block(ev: Event) -> dict[str, Any]:
    """--output-bpfmap's lines under an event (events() files them as its stack):
    map_id, map_name, key and value (hex dump bytes joined), sizes."""
    found: dict[str, Any] = {}
    part = ""
    for line in ev.stack:
        if m := re.fullmatch(r"(map_id|map_name): (\S+)", line):
            found[m[1]] = m[2]
        elif m := re.fullmatch(r"(key|value)\((\d+)\):", line):
            part = m[1]
            found[part], found[part + "_size"] = b"", int(m[2])
        elif m := re.fullmatch(r"[0-9a-f]{8}  ((?:[0-9a-f]{2} +)+)\|.*\|", line):
            found[part] += bytes.fromhex(m[1].replace(" ", ""))
    return found


def test_track_bpf_helpers(traces: Traces, vm_kernel: KernelExpect) -> None:
    """vm_tc_ingress reads each datagram's port with bpf_skb_load_bytes and counts it in a
    hash map. For the first datagram to the port the lookup finds nothing and the port
    is added (value 1); for the second the lookup finds 1. pwru shows those calls as
    events of the tc program's skb, with the map's id, name, key and value; the other
    scenarios' datagrams run the same program but do not match the filter: no calls."""
    pw = traces.get("tc", vm_kernel.release)
    evs, detail = events(pw), show(pw)
    a, b, port = traces.gl.a, traces.gl.b, TC_PORT[traces.backend]
    want = (a.ipv4, TC_SPORT, b.ipv4, port, "udp")
    assert re.search(r"tracing 1 tc programs", pw.stderr), detail
    assert re.search(r", 3 BPF helpers", pw.stderr), detail  # the attach summary
    assert {e.tuple for e in evs} == {want}, detail
    entries = [e for e in evs if e.func == f"{TC_PROG}(tc)"]
    assert len(entries) == 2, detail
    key, one = port.to_bytes(4, sys.byteorder), (1).to_bytes(8, sys.byteorder)
    bounds = [evs.index(e) for e in entries] + [len(evs)]
    maps = []
    for n, entry in enumerate(entries):  # each datagram's calls, between its entry and the next
        window = evs[bounds[n] + 1 : bounds[n + 1]]
        calls = [e for e in window if e.skb == entry.skb and HELPER_CALL.fullmatch(e.name)]
        names = [e.name.rsplit("_", 2)[-2] if "_elem" in e.name else e.name for e in calls]
        blocks = [bpfmap_block(e) for e in calls]
        if n == 0:  # the port is not there yet: no value; then the update adds it
            assert names == ["bpf_skb_load_bytes"] * 2 + ["lookup", "update"], detail
            assert "value" not in blocks[2] and blocks[3]["value"] == one, detail
        else:
            assert names == ["bpf_skb_load_bytes"] * 2 + ["lookup"], detail
            assert blocks[2]["value"] == one, detail
        assert [b["key"] for b in blocks[2:]] == [key] * (len(blocks) - 2), detail
        maps += blocks[2:]
    assert {(m["map_id"], m["map_name"], m["key_size"]) for m in maps} == {
        (maps[0]["map_id"], HELPER_MAP, 4)
    }, detail


# --------------------------------------------------------------------------- 13: old kernels
def test_kprobe_events_without_cookies(traces: Traces, vm_kernel: KernelExpect) -> None:
    """Where kprobes have no BPF cookies (kernels.txt: cookies=no), pwru says that it
    names kprobe events by the probed address; the drop run's names are real (test 1)."""
    pw = traces.get("drop", vm_kernel.release)
    said = "events are named by the probed address" in pw.stderr
    expected = traces.backend == KPROBE and vm_kernel.expect["cookies"] == "no"
    assert said == expected, show(pw)
    assert not [e for e in events(pw) if e.func.startswith(("0x", "probe#"))], show(pw)


def test_kmods_needs_module_btf(
    guest_lab: GuestLab, vm_kernel: KernelExpect, tmp_path: Path
) -> None:
    """--kmods veth: probes veth_xmit from the module's BTF where the kernel has it
    (kernels.txt: modbtf); elsewhere (5.10) pwru refuses in one line, exit 1."""
    argv = ["--backend", KPROBE, "--kmods", "veth", "--filter-func", "veth_xmit", "udp"]
    if vm_kernel.expect["modbtf"] == "no":
        res = pwru_refusal(argv)
        detail = f"{' '.join(res.args)} -> rc={res.returncode}\n{res.stderr}"
        assert res.returncode == 1 and res.stdout == "" and "Traceback" not in res.stderr, detail
        last = res.stderr.rstrip("\n").splitlines()[-1]
        assert last.startswith("pwru: error: --kmods cannot work here: this kernel has no BTF "
                               "for modules"), detail  # fmt: skip
        return
    pw = PwruRun(argv, tmp_path, READY_TIMEOUT)
    assert pw.stop(signal.SIGINT, timeout=120) == 0, pw.stderr
    assert "attached 1 functions with kprobe" in pw.stderr, pw.stderr


# --------------------------------------------------------------------------- cleanup
def test_nothing_left_loaded(traces: Traces, vm_kernel: KernelExpect) -> None:
    """Once every run of this backend has exited (SIGINT; on 6.1 the kprobe-multi runs are
    refused before anything loads), none of pwru's programs is left in the kernel:
    kprobes, kprobe-multi links, fentry/fexit on tc/XDP programs and skb_clone, all gone."""
    assert traces.left == [], f"{vm_kernel.release} {traces.backend}: {traces.left}"
    for scenario in traces.scenarios.values():  # refused runs: one clear line each
        if scenario.refusal is not None:
            assert_refused(scenario.refusal, vm_kernel.release)


# --------------------------------------------------------------------------- 11: clone story
def json_lines(pw: PwruRun, key: str) -> list[dict[str, Any]]:
    """The ``{key: ...}`` objects of a JSON run (packets, the summary)."""
    found = []
    for line in pw.stdout.splitlines():
        obj = json.loads(line)
        if key in obj:
            found.append(obj[key])
    return found


def test_per_packet_view_groups_a_clone(traces: Traces, vm_kernel: KernelExpect) -> None:
    """The mirrored datagram of test 7 as one packet: the original (sent in a, arrived in
    b, no socket there) and its clone (born in skb_clone, dropped as OTHERHOST in b), each
    with its fate. The clone's birth comes from the clone tracking programs (fexit with
    kprobe, kretprobe with kprobe-multi), which report it with --output-per-packet."""
    pw = traces.get("diagnose", vm_kernel.release)
    detail = show(pw)
    a, b = traces.gl.a, traces.gl.b
    packets = [p for p in json_lines(pw, "packet") if p.get("tuple", {}).get("dport") == CLONE_PORT]
    assert len(packets) == 1, detail
    packet = packets[0]
    (clone,) = packet["clones"]
    assert clone["parent"] == packet["skb"], detail
    assert clone["verdict"]["fate"] == "dropped", detail
    otherhost = story_reason(vm_kernel, "SKB_DROP_REASON_OTHERHOST")
    assert clone["verdict"]["reason"] == otherhost, detail
    hops = packet["hops"]
    births = [h for h in hops if h["skb"] == clone["skb"] and h["func"] == "skb_clone"]
    assert len(births) == 1 and births[0]["netns"] == a.inode, detail
    original = [h for h in hops if h["skb"] == packet["skb"]]
    assert ("ip_output", a.inode) in {(h["func"], h["netns"]) for h in original}, detail
    assert ("ip_rcv", b.inode) in {(h["func"], h["netns"]) for h in original}, detail
    assert hops.index(births[0]) < max(i for i, h in enumerate(hops) if h["skb"] == clone["skb"])
    assert packet["verdict"]["fate"] == "dropped", detail
    no_socket = story_reason(vm_kernel, "SKB_DROP_REASON_NO_SOCKET")
    assert packet["verdict"]["reason"] == no_socket, detail


# --------------------------------------------------------------------------- 12: summary
def test_summary_names_hook_function_and_rule(traces: Traces, vm_kernel: KernelExpect) -> None:
    """The SYN of test 1, dropped by b's iptables rule: with kprobes the summary knows the
    hook from nf_hook_slow's state, the dropping function from the return address of the
    drop function (nftables frees the packet itself: nft_do_chain; before drop reasons,
    5.10, nf_hook_slow frees it), and names the rule, whose counter grew by the one SYN
    during the trace."""
    pw = traces.get("diagnose", vm_kernel.release)
    detail = show(pw)
    lines = pw.stdout.splitlines()
    assert lines and lines[-1].startswith('{"summary"'), detail
    (summary,) = json_lines(pw, "summary")
    b = traces.gl.b
    drops = [d for d in summary["drops"] if d.get("tuple", {}).get("dport") == DROP_PORT]
    assert len(drops) == 1, detail
    drop = drops[0]
    assert drop["reason"] == NETFILTER_DROP and drop["netns"] == b.inode, detail
    dropper = "nf_hook_slow" if vm_kernel.expect["drop"] == "kfree_skb" else "nft_do_chain"
    assert drop["hook"] == "ipv4 INPUT" and drop["func"] == dropper, detail
    assert drop["count"] == 1, detail
    rule = f"`-A INPUT -p tcp -m tcp --dport {DROP_PORT} -j DROP` (iptables, table filter"
    assert drop["rules"] and drop["rules"][0].startswith(rule), detail
    assert "its packet counter grew by 1 during the trace" in drop["hint"], detail
    assert not any("nf_hook_slow" in note for note in summary["unknown"]), detail
    syn = [p for p in json_lines(pw, "packet") if p.get("tuple", {}).get("dport") == DROP_PORT]
    hooks = [h for p in syn for h in p["hops"] if h.get("hook")]
    assert ("nf_hook_slow", "ipv4 INPUT") in {(h["func"], h["hook"]) for h in hooks}, detail


def test_per_packet_view_follows_dnat(traces: Traces, vm_kernel: KernelExpect) -> None:
    """The DNAT'ed datagram of test 2 (--filter-track-skb) is one packet: first seen in a
    with the virtual destination, then with b:7722, ending in b (no socket there)."""
    pw = traces.get("diagnose", vm_kernel.release)
    detail = show(pw)
    a, b = traces.gl.a, traces.gl.b
    nat = [p for p in json_lines(pw, "packet") if p.get("tuple", {}).get("dport") == NAT_PORT]
    assert len(nat) == 1, detail
    packet = nat[0]
    dports = [h.get("tuple", {}).get("dport") for h in packet["hops"]]
    assert dports[0] == NAT_PORT and dports[-1] == NAT_TO_PORT, detail
    first_natted = dports.index(NAT_TO_PORT)
    assert set(dports[:first_natted]) == {NAT_PORT} and set(dports[first_natted:]) == {NAT_TO_PORT}
    assert packet["netns"] == a.inode and packet["hops"][-1]["netns"] == b.inode, detail
    verdict = packet["verdict"]
    assert verdict["fate"] == "dropped", detail
    assert verdict["reason"] == story_reason(vm_kernel, "SKB_DROP_REASON_NO_SOCKET"), detail
    dropped_in = verdict["dropped_in"]  # the return address of the drop function
    with open("/proc/kallsyms") as f:
        names = {line.split()[2].split(".", 1)[0] for line in f}
    assert dropped_in in names, detail
