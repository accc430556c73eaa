"""End-to-end: the installed pwru traces real packets between two namespaces.

Each test starts pwru, sends packets through a veth pair, stops pwru and
checks what it printed. pwru runs with --filter-netns so that other traffic
on the machine cannot make a test pass or fail by accident.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from netlab import Lab, PwruRun, pwru_programs_left, pwru_programs_loaded


def dports(events: list[dict[str, object]]) -> set[object]:
    """Destination ports seen (JSON omits empty fields, like cilium/pwru)."""
    return {e["tuple"].get("dport") for e in events if isinstance(e.get("tuple"), dict)} - {None}  # type: ignore[union-attr]


def lines_with(lines: list[str], *needles: str) -> list[str]:
    return [ln for ln in lines if all(n in ln for n in needles)]


def test_iptables_drop_shows_tuple_and_netfilter_reason(lab: Lab, workdir: Path) -> None:
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "7777", "-j", "DROP")
    run = PwruRun(["--filter-netns", lab.b.netns_path], workdir)
    lab.a.send_udp(lab.b.ipv4, 7777, count=3, sport=40001)
    assert run.stop() == 0
    lines = run.lines()
    assert lines[0].split()[:3] == ["SKB", "CPU", "PROCESS"], lines[0]
    tuple_text = f"{lab.a.ipv4}:40001->{lab.b.ipv4}:7777(udp)"
    drops = lines_with(lines, tuple_text, "kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)")
    assert len(drops) == 3, run.stdout
    # the same skb was seen arriving before it was dropped
    skb = drops[0].split()[0]
    assert any(ln.split()[0] == skb and "netif_receive_skb" in ln for ln in lines), run.stdout


def test_tcp_to_closed_port_shows_reset_and_no_socket(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--filter-netns", lab.b.netns_path], workdir)
    assert lab.a.tcp_connect(lab.b.ipv4, 7778) == "refused"
    assert run.stop() == 0
    lines = run.lines()
    syn = f"{lab.a.ipv4}:"
    assert lines_with(
        lines, syn, f"->{lab.b.ipv4}:7778(tcp)", "kfree_skb(SKB_DROP_REASON_NO_SOCKET)"
    ), run.stdout
    assert lines_with(lines, "tcp_send_reset"), run.stdout


def test_ipv6_tuple(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--filter-netns", lab.b.netns_path], workdir)
    lab.a.send_udp(lab.b.ipv6, 7781, sport=40002)
    assert run.stop() == 0
    assert lines_with(run.lines(), f"[{lab.a.ipv6}]:40002->[{lab.b.ipv6}]:7781(udp)"), run.stdout


def test_filter_netns_excludes_other_namespaces(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--filter-netns", lab.b.netns_path, "--output-json"], workdir)
    lab.a.send_udp(lab.b.ipv4, 7782, sport=40003)
    lab.a.send_udp("127.0.0.1", 7783, sport=40004)  # loopback inside a: a different netns
    assert run.stop() == 0
    events = run.json_events()
    assert events, run.stderr
    assert {e["netns"] for e in events} == {lab.b.inode}
    seen = dports(events)
    assert 7782 in seen and 7783 not in seen


def test_filter_mark_excludes_unmarked_packets(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        ["--filter-netns", lab.a.netns_path, "--filter-mark", "0x42", "--output-json"], workdir
    )
    lab.a.send_udp(lab.b.ipv4, 7784, mark=0x42, sport=40005)
    lab.a.send_udp(lab.b.ipv4, 7785, mark=0x43, sport=40006)
    lab.a.send_udp(lab.b.ipv4, 7786, sport=40007)
    assert run.stop() == 0
    events = run.json_events()
    assert events, run.stderr
    assert {e.get("mark") for e in events} == {0x42}
    assert dports(events) == {7784}


def test_filter_mark_with_mask(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        ["--filter-netns", lab.a.netns_path, "--filter-mark", "0x100/0xf00", "--output-json"],
        workdir,
    )
    lab.a.send_udp(lab.b.ipv4, 7787, mark=0x1AB, sport=40008)
    lab.a.send_udp(lab.b.ipv4, 7788, mark=0x2AB, sport=40009)
    assert run.stop() == 0
    assert dports(run.json_events()) == {7787}


def test_json_output_fields(lab: Lab, workdir: Path) -> None:
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "7789", "-j", "DROP")
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--output-json", "--timestamp", "current"], workdir
    )
    lab.a.send_udp(lab.b.ipv4, 7789, sport=40010, payload=100)
    assert run.stop() == 0
    events = run.json_events()
    drop = [e for e in events if e.get("func") == "kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)"]
    assert len(drop) == 1, events
    ev = drop[0]
    assert re.fullmatch(r"0x[0-9a-f]+", str(ev["skb"]))
    assert isinstance(ev["time"], int) and ev["time"] > 0
    assert ev["netns"] == lab.b.inode
    assert ev["iface"] == f"{lab.b.ifname}:{_ifindex(lab, lab.b.ifname)}"
    assert ev["proto"] == 0x0800
    assert ev["mtu"] == 1500
    assert ev["len"] == 20 + 8 + 100  # IP + UDP + payload at the netfilter hook
    assert ev["tuple"] == {
        "saddr": lab.a.ipv4,
        "daddr": lab.b.ipv4,
        "sport": 40010,
        "dport": 7789,
        "proto": 17,
    }
    assert str(ev["process"])


def _ifindex(lab: Lab, ifname: str) -> int:
    return int(lab.b.run("cat", f"/sys/class/net/{ifname}/ifindex").stdout)


def test_output_file_and_limit_lines(lab: Lab, workdir: Path) -> None:
    out = workdir / "trace.txt"
    run = PwruRun(
        [
            "--filter-netns",
            lab.b.netns_path,
            "--output-limit-lines",
            "5",
            "--output-file",
            str(out),
        ],
        workdir,
    )
    lab.a.send_udp(lab.b.ipv4, 7790, count=20, sport=40011)
    assert run.wait() == 0  # ends by itself after 5 events
    lines = out.read_text().splitlines()
    assert lines[0].startswith("SKB")
    assert len(lines) == 1 + 5
    assert run.stdout == ""


def test_filter_func_restricts_probes(lab: Lab, workdir: Path) -> None:
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--filter-func", "kfree_skb|consume_skb"], workdir
    )
    lab.a.send_udp(lab.b.ipv4, 7791, sport=40012)
    assert run.stop() == 0
    funcs = {ln.split()[-1].split("(")[0] for ln in run.lines()[1:]}
    assert funcs and funcs <= {"kfree_skb", "consume_skb"}, run.stdout


def test_nothing_left_after_sigint_sigterm_and_limit(lab: Lab, workdir: Path) -> None:
    for how in ("SIGINT", "SIGTERM", "limit"):
        # the filter keeps b's own traffic (IPv6 router solicitations, MLD reports) from
        # ending the "limit" run before its programs are listed
        args = ["--filter-netns", lab.b.netns_path, "udp and dst port 7792"]
        if how == "limit":
            args += ["--output-limit-lines", "1"]
        run = PwruRun(args, workdir)
        assert run.proc.poll() is None, f"pwru ended before {how}: {run.stdout}"
        assert pwru_programs_loaded(), "pwru should have programs loaded while it runs"
        if how == "limit":
            lab.a.send_udp(lab.b.ipv4, 7792, sport=40013)
            assert run.wait() == 0
        else:
            assert run.stop(getattr(signal, how)) == 0
        assert pwru_programs_left() == [], f"programs left after {how}"


def test_runs_under_a_low_open_file_limit(lab: Lab, workdir: Path) -> None:
    """pwru lifts RLIMIT_NOFILE itself (kprobes need two fds per function): started with a
    soft limit of 48, it still attaches its 30 tracepoints (~70 fds) and traces."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))  # inherited by the pwru child
    try:
        run = PwruRun(["--filter-netns", lab.b.netns_path], workdir)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lab.a.send_udp(lab.b.ipv4, 7793, sport=40014)
    assert run.stop() == 0, run.stderr
    assert lines_with(run.lines(), f"->{lab.b.ipv4}:7793(udp)"), run.stdout


def test_track_skb_by_stackid_shows_the_icmp_error_it_caused(lab: Lab, workdir: Path) -> None:
    """The ICMP port unreachable that b builds while handling a datagram to a closed port
    does not match 'udp and dst port 7791'; --filter-track-skb-by-stackid shows it (it is
    built on the stack the datagram owns) and follows it back into a. Without the option,
    the same traffic shows the datagram only."""
    lab.b.run("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
    expr = "udp and dst port 7791"
    by_stack = PwruRun(["--filter-track-skb-by-stackid", expr], workdir)
    plain = PwruRun([expr], workdir)
    lab.a.send_udp(lab.b.ipv4, 7791, sport=40091)
    assert by_stack.stop() == 0 and plain.stop() == 0
    datagram = f"{lab.a.ipv4}:40091->{lab.b.ipv4}:7791(udp)"
    reply = f"{lab.b.ipv4}:0->{lab.a.ipv4}:0(icmp)"
    for run, want in ((by_stack, {datagram, reply}), (plain, {datagram})):
        tuples = {m.group(0) for ln in run.lines()[1:] if (m := re.search(r"\S+->\S+\)", ln))}
        assert tuples == want, run.stdout
    replies = lines_with(by_stack.lines(), reply)
    assert {ln.split()[3] for ln in replies} == {str(lab.a.inode), str(lab.b.inode)}, replies
    assert not {ln.split()[0] for ln in replies} & {
        ln.split()[0] for ln in lines_with(by_stack.lines(), datagram)
    }, by_stack.stdout


def test_output_skb_shared_info_stack_and_caller(lab: Lab, workdir: Path) -> None:
    """--output-skb/--output-skb-shared-info: the kernel's BTF printout of the skb (whose
    .len is the LEN column) and of its shared info follow each event; --output-caller
    names the caller of the function that hit the tracepoint: the stack's second frame
    (for kfree_skb and consume_skb it comes from their location argument)."""
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--output-skb", "--output-skb-shared-info",
         "--output-caller", "--output-stack", "udp and dst port 7795"],
        workdir,
    )  # fmt: skip
    lab.a.send_udp(lab.b.ipv4, 7795, sport=40095)
    assert run.stop() == 0
    lines = run.stdout.splitlines()
    assert lines[0].split()[-2:] == ["FUNC", "CALLER"], lines[0]
    events = [i for i, ln in enumerate(lines) if ln.startswith("0x")]
    assert events, run.stdout
    for n, i in enumerate(events):
        cols = lines[i].split()
        block = lines[i + 1 : events[n + 1] if n + 1 < len(events) else len(lines)]
        caller, length = cols[-1], int(cols[8])
        assert block[1] == caller, (lines[i], block[:3])  # below the function that hit it
        assert not caller.startswith("0x"), lines[i]
        skb = block.index("(struct sk_buff){")
        assert f" .len = (unsigned int){length}," in block[skb:], block[skb:]
        assert "(struct skb_shared_info){" in block[skb:], block[skb:]
        assert block.index("(struct skb_shared_info){") > skb
    assert {ln.split()[-2] for ln in (lines[i] for i in events)} >= {"netif_receive_skb"}


def test_small_ring_wraps_many_times_without_losing_a_record(lab: Lab, workdir: Path) -> None:
    """A 1 MiB ring holds ~4,600 events: 1,500 datagrams (7,500+ events) at a pace pwru
    keeps up with wrap it around several times; every event arrives whole, in order of
    its packet, and the records that wrap past the ring's end read as one piece."""
    lab.b.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "7790", "-j", "DROP")
    run = PwruRun(
        ["--filter-netns", lab.b.netns_path, "--ringbuf-size", "1", "--output-json",
         "udp and dst port 7790"],
        workdir,
    )  # fmt: skip
    for _ in range(15):  # 100 datagrams at a time, a little apart
        lab.a.send_udp(lab.b.ipv4, 7790, count=100, sport=40790)
    assert run.stop() == 0
    events = run.json_events()
    drops = [e for e in events if e["func"] == "kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)"]
    assert len(drops) == 1500, run.stderr
    assert all(e["tuple"] == events[0]["tuple"] for e in events), "a record read torn"
    assert "events lost" not in run.stderr
