"""Text and JSON rendering of events, checked character for character against
cilium/pwru's formats (internal/pwru/output.go)."""

from __future__ import annotations

import json
import struct
import time

from pwru.bpf import abi
from pwru.filter.skbexpr import MetadataField
from pwru.options import Options, parse_options
from pwru.output.decode import Bpfmap, Event, Tuple5
from pwru.output.render import (
    JsonRenderer,
    Renderer,
    TextRenderer,
    cb_text,
    cb_words,
    center,
    hex_dump,
    make_renderer,
    metadata_name,
    tcp_flags_text,
    tuple_text,
)

PROBES = {0: "ip_local_out", 1: "kfree_skb", 2: "tcf_classify", 3: "xdp_prog"}


class FakeNames:
    def probe_name(self, ev: Event) -> str:
        return PROBES[ev.probe_id]

    def drop_reason(self, value: int) -> str | None:
        return {6: "SKB_DROP_REASON_NETFILTER_DROP"}.get(value)

    def iface(self, netns: int, ifindex: int) -> str:
        return {2: "eth0:2", 9: "~ry-long-name:9"}.get(ifindex, str(ifindex))

    def process(self, pid: int, comm: str) -> str:
        return "<empty>:0" if pid == 0 else f"{comm}:{pid}"

    def symbol(self, addr: int) -> str:
        return {0xFFFFFFFF81000010: "__ip_queue_xmit"}.get(addr, f"{addr:#x}")

    def netns_name(self, netns: int) -> str:
        return {4026531840: "pwru-test-0a1b2c-b", 7: "short"}.get(netns, "")


TCP4 = Tuple5("10.0.2.15", "10.0.0.2", 41234, 80, 0x0800, 6, 0x12)
UDP6 = Tuple5("2001:db8::1", "2001:db8::2", 5353, 53, 0x86DD, 17, 0)
ICMP4 = Tuple5("10.0.0.1", "10.0.0.2", 0, 0, 0x0800, 1, 0)
ICMP6 = Tuple5("fe80::1", "ff02::1", 0, 0, 0x86DD, 58, 0)

EV = Event(
    ts=1_000_000_000, skb_addr=0xFFFF888012345678, func_ip=0, caller_ip=0xFFFFFFFF81000010,
    reason=None, probe_id=0, pid=12345, cpu=1, type=abi.PWRU_EVENT_TRACEPOINT,
    flags=abi.PWRU_EVENT_HAS_TUPLE, stack_id=-1, netns=4026531840, mark=0, ifindex=2,
    len=60, mtu=1500, protocol=0x0800, tuple=TCP4, tunnel_tuple=None,
    skb_metadata=(0, 0, 0, 0), comm="curl",
)  # fmt: skip


# the saved-trace keys after pwru's (pwru.output.savedtrace)
SAVED_KEYS = ["ts", "pid", "comm", "probe_type"]
EV_SAVED = ',"ts":1000000000,"pid":12345,"comm":"curl","probe_type":"tracepoint"'


def pwru_keys(d: dict[str, object]) -> dict[str, object]:
    """``d`` without the saved-trace keys (what cilium/pwru prints)."""
    return {k: v for k, v in d.items() if k not in (*SAVED_KEYS, "reason")}


def renderer(*argv: str, offset: int = 0) -> Renderer:
    return make_renderer(parse_options(list(argv)), FakeNames(), wall_offset_ns=offset)


def test_make_renderer_kinds() -> None:
    assert isinstance(renderer(), TextRenderer)
    assert isinstance(renderer("--output-json"), JsonRenderer)
    header = json.loads(renderer("--output-json").header())
    assert list(header) == ["pwru_trace"] and header["pwru_trace"]["format"] == 1


# --- text ---------------------------------------------------------------------

HEADER = (
    "SKB                CPU PROCESS          NETNS      MARK/x        IFACE       PROTO  MTU"
    "   LEN   TUPLE FUNC"
)
ROW = (
    "0xffff888012345678 1   curl:12345       4026531840 0             eth0:2      0x0800 1500"
    "  60    10.0.2.15:41234->10.0.0.2:80(tcp) ip_local_out"
)


def test_text_default() -> None:
    r = renderer()
    assert r.header() == HEADER
    assert r.render(EV) == ROW


def test_text_header_variants() -> None:
    assert renderer("--output-meta=false", "--output-tuple=false").header() == (
        "SKB                CPU PROCESS          FUNC"
    )
    assert renderer("--output-meta=false", "--output-caller", "--output-tunnel").header() == (
        "SKB                CPU PROCESS          TUPLE FUNC CALLER TUNNEL"
    )
    assert renderer("--timestamp=current", "--output-meta=false").header() == (
        "SKB                CPU PROCESS          TIMESTAMP        TUPLE FUNC"
    )
    assert renderer("--timestamp=absolute", "--output-meta=false").header() == (
        "TIME                    SKB                CPU PROCESS          TIMESTAMP        "
        "TUPLE FUNC"
    )


def test_text_meta_columns() -> None:
    r = renderer("--output-tuple=false")
    ev = EV._replace(mark=0xA00, ifindex=9, protocol=0x86DD, mtu=65536, len=123456, netns=7)
    assert r.render(ev) == (
        "0xffff888012345678 1   curl:12345       7          a00      ~ry-long-name:9  0x86dd "
        "65536 123456 ip_local_out"
    )
    ev = EV._replace(ifindex=0, protocol=0, mtu=0, len=0, netns=0, cpu=123, pid=0)
    assert r.render(ev) == (
        "0xffff888012345678 123 <empty>:0        0          0        " + " " * 7 + "0" + " " * 8
        + " 0x0000 0     0     ip_local_out"
    )  # fmt: skip
    assert "1".center(16) == " " * 7 + "1" + " " * 8  # pwru: left pad = (16 - len) / 2


def test_text_tuples() -> None:
    def text(tup: Tuple5 | None, flags: bool = False) -> str:
        return tuple_text(tup, flags)

    assert text(TCP4) == "10.0.2.15:41234->10.0.0.2:80(tcp)"
    assert text(TCP4, True) == "10.0.2.15:41234->10.0.0.2:80(tcp:SYN|ACK)"
    assert text(TCP4._replace(tcp_flags=0), True) == "10.0.2.15:41234->10.0.0.2:80(tcp)"
    assert text(UDP6, True) == "[2001:db8::1]:5353->[2001:db8::2]:53(udp)"
    assert text(ICMP4) == "10.0.0.1:0->10.0.0.2:0(icmp)"
    assert text(ICMP6) == "[fe80::1]:0->[ff02::1]:0(icmp6)"
    assert text(Tuple5("10.0.0.1", "10.0.0.2", 0, 0, 0x0800, 47, 0)) == "10.0.0.1:0->10.0.0.2:0()"
    assert text(None) == ":0->:0()"  # what pwru prints for an unparsed packet


def test_tcp_flag_names() -> None:
    assert tcp_flags_text(0) == ""
    assert tcp_flags_text(0x02) == "SYN"
    assert tcp_flags_text(0x11) == "FIN|ACK"
    assert tcp_flags_text(0xFF) == "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR"


def test_text_tuple_column_widens() -> None:
    r = renderer("--output-meta=false")
    short = EV._replace(tuple=ICMP4)
    assert r.render(short).endswith(" 10.0.0.1:0->10.0.0.2:0(icmp) ip_local_out")
    r.render(EV)  # 33 chars wide
    assert r.render(short).endswith(" 10.0.0.1:0->10.0.0.2:0(icmp)      ip_local_out")


def test_text_func_with_reason_and_prog_type() -> None:
    r = renderer("--output-meta=false", "--output-tuple=false")
    prefix = "0xffff888012345678 1   curl:12345      "
    ev = EV._replace(probe_id=1, reason=6, flags=EV.flags | abi.PWRU_EVENT_HAS_REASON)
    assert r.render(ev) == prefix + " kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)"
    assert r.render(ev._replace(reason=123)) == prefix + " kfree_skb (123)"
    assert r.render(EV._replace(probe_id=2, type=abi.PWRU_EVENT_TC)) == (
        prefix + " tcf_classify(tc)"
    )
    assert r.render(EV._replace(probe_id=3, type=abi.PWRU_EVENT_XDP)) == (
        prefix + " xdp_prog(xdp)"
    )
    # an XDP exit carries the program's verdict, not a drop reason (1 is also SKB_CONSUMED)
    xdp_exit = EV._replace(
        probe_id=3,
        type=abi.PWRU_EVENT_XDP,
        flags=abi.PWRU_EVENT_HAS_REASON | abi.PWRU_EVENT_FEXIT,
        reason=1,
    )
    assert r.render(xdp_exit) == prefix + " xdp_prog(XDP_DROP)(xdp)"
    assert r.render(xdp_exit._replace(reason=7)) == prefix + " xdp_prog(7)(xdp)"
    assert r.render(EV._replace(type=abi.PWRU_EVENT_KPROBE_MULTI)) == prefix + " ip_local_out"
    # nf_hook_slow's hook (--summary) and a clone's original are no drop reasons
    hook = EV._replace(reason=0x201, flags=abi.PWRU_EVENT_HAS_HOOK)
    assert r.render(hook) == prefix + " ip_local_out"
    assert r.render(hook._replace(flags=abi.PWRU_EVENT_CLONE)) == prefix + " ip_local_out"


def test_text_caller_column() -> None:
    r = renderer("--output-meta=false", "--output-tuple=false", "--output-caller")
    prefix = "0xffff888012345678 1   curl:12345      "
    assert r.render(EV._replace(probe_id=1)) == prefix + " kfree_skb __ip_queue_xmit"
    assert r.render(EV) == prefix + " ip_local_out __ip_queue_xmit"
    assert r.render(EV._replace(probe_id=1, caller_ip=0x10)) == (prefix + " kfree_skb    0x10")


def test_text_tunnel_metadata_and_stack() -> None:
    r = renderer(
        "--output-meta=false",
        "--output-tuple=false",
        "--output-tunnel",
        "--output-stack",
        "--output-skb-metadata",
        "skb->mark,skb->dev->ifindex",
    )
    ev = EV._replace(tunnel_tuple=UDP6, skb_metadata=(5, 2, 0, 0))
    assert r.render(ev, stack=("ip_output", "ip_local_out")) == (
        "0xffff888012345678 1   curl:12345       ip_local_out mark=5 ifindex=2"
        "\nip_output\nip_local_out [2001:db8::1]:5353->[2001:db8::2]:53(udp)"
    )
    assert r.render(EV).endswith(" :0->:0()")


def test_metadata_name() -> None:
    assert metadata_name("skb->mark") == "mark"
    assert metadata_name("skb->dev->ifindex") == "ifindex"
    assert metadata_name("skb->cb[0]") == "cb"


def test_timestamps_current_and_relative() -> None:
    cur = renderer("--timestamp=current", "--output-meta=false", "--output-tuple=false")
    assert cur.render(EV) == (
        "0xffff888012345678 1   curl:12345       1000000000       ip_local_out"
    )
    rel = renderer("--timestamp=relative", "--output-meta=false", "--output-tuple=false")

    def ts(ev: Event) -> str:
        return rel.render(ev).split()[3]

    other = EV._replace(skb_addr=0xFFFF888000000001)
    assert ts(EV) == "0"
    assert ts(other._replace(ts=1_000_000_500)) == "0"
    assert ts(EV._replace(ts=1_000_001_000)) == "1000"
    assert ts(other._replace(ts=1_000_002_000)) == "1500"
    assert ts(EV._replace(ts=1_000_001_500)) == "500"
    assert ts(EV._replace(ts=1_000_001_400)) == "0"  # out of order: never negative


def test_relative_map_is_bounded() -> None:
    rel = renderer("--timestamp=relative")
    for addr in range(70_000):
        rel.relative_ts(EV._replace(skb_addr=addr))
    assert len(rel._last_seen) <= 1 << 16
    assert rel.relative_ts(EV._replace(skb_addr=69_999, ts=EV.ts + 7)) == 7


def test_absolute_timestamp() -> None:
    offset = 1_700_000_000_000_000_000 - EV.ts  # the event happened at that wall time
    r = renderer("--timestamp=absolute", "--output-meta=false", "--output-tuple=false",
                 offset=offset)  # fmt: skip
    wall = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_700_000_000))
    assert r.render(EV) == (
        f"{wall}.000 0xffff888012345678 1   curl:12345       1000000000       ip_local_out"
    )
    later = r.render(EV._replace(ts=EV.ts + 1_234_567_890))
    wall = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1_700_000_001))
    assert later.startswith(f"{wall}.234 ")


def test_absolute_timestamp_default_offset_is_now() -> None:
    r = make_renderer(parse_options(["--timestamp=absolute"]), FakeNames())
    ev = EV._replace(ts=time.monotonic_ns())
    stamp = r.render(ev)[:23]
    wall = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:]) / 1000
    assert abs(wall - time.time()) < 2


# --- json ---------------------------------------------------------------------


def test_json_default() -> None:
    line = renderer("--output-json").render(EV)
    assert line == (
        '{"skb":"0xffff888012345678","cpu":1,"process":"curl:12345","func":"ip_local_out",'
        '"netns":4026531840,"iface":"eth0:2","proto":2048,"mtu":1500,"len":60,'
        '"tuple":{"saddr":"10.0.2.15","daddr":"10.0.0.2","sport":41234,"dport":80,"proto":6}'
        + EV_SAVED
        + "}"
    )
    assert "\n" not in line


def test_json_omits_empty_values() -> None:
    ev = EV._replace(cpu=0, netns=0, mark=0, ifindex=0, protocol=0, mtu=0, len=0, tuple=None)
    assert pwru_keys(json.loads(renderer("--output-json").render(ev))) == {
        "skb": "0xffff888012345678", "process": "curl:12345", "func": "ip_local_out",
        "iface": "0", "tuple": {},
    }  # fmt: skip
    ev = EV._replace(mark=0xA00)
    r = renderer("--output-json", "--output-meta=false", "--output-tuple=false")
    assert pwru_keys(json.loads(r.render(ev))) == {
        "skb": "0xffff888012345678", "cpu": 1, "process": "curl:12345", "func": "ip_local_out",
    }  # fmt: skip
    assert json.loads(renderer("--output-json").render(ev))["mark"] == 0xA00


def test_json_tuples_and_flags() -> None:
    r = renderer("--output-json", "--output-meta=false", "--output-tcp-flags", "--output-tunnel")
    ev = EV._replace(tuple=UDP6, tunnel_tuple=TCP4)
    d = json.loads(r.render(ev))
    assert d["tuple"] == {"saddr": "[2001:db8::1]", "daddr": "[2001:db8::2]", "sport": 5353,
                          "dport": 53, "proto": 17}  # fmt: skip
    assert d["tunnel_tuple"] == {"saddr": "10.0.2.15", "daddr": "10.0.0.2", "sport": 41234,
                                 "dport": 80, "proto": 6, "flags": "SYN|ACK"}  # fmt: skip
    assert list(d) == ["skb", "cpu", "process", "func", "tuple", "tunnel_tuple", *SAVED_KEYS]
    d = json.loads(renderer("--output-json").render(EV))
    assert "flags" not in d["tuple"] and "tunnel_tuple" not in d


def test_json_time_func_caller_stack() -> None:
    r = renderer("--output-json", "--timestamp=relative", "--output-caller", "--output-stack",
                 "--output-meta=false", "--output-tuple=false")  # fmt: skip
    ev = EV._replace(probe_id=1, reason=6, flags=EV.flags | abi.PWRU_EVENT_HAS_REASON)
    assert r.render(ev, stack=("a", "b")) == (
        '{"skb":"0xffff888012345678","cpu":1,"process":"curl:12345",'
        '"func":"kfree_skb(SKB_DROP_REASON_NETFILTER_DROP)","caller_func":"__ip_queue_xmit",'
        '"time":0,"stack":"\\na\\nb"'
        ',"ts":1000000000,"pid":12345,"comm":"curl","probe_type":"tracepoint","reason":6}'
    )
    assert json.loads(r.render(ev._replace(ts=ev.ts + 5)))["time"] == 5
    cur = renderer("--output-json", "--timestamp=current")
    assert json.loads(cur.render(EV))["time"] == 1_000_000_000
    ab = renderer("--output-json", "--timestamp=absolute", offset=-EV.ts)
    wall = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(0))
    assert json.loads(ab.render(EV))["time"] == f"{wall}.000"


def test_json_escapes_strings() -> None:
    ev = EV._replace(comm='we"ird\\näme', pid=7)
    d = json.loads(renderer("--output-json").render(ev))
    assert d["process"] == 'we"ird\\näme:7'


def test_json_keys_match_pwru_order() -> None:
    r = renderer("--output-json", "--timestamp=current", "--output-caller", "--output-tunnel",
                 "--output-stack")  # fmt: skip
    ev = EV._replace(mark=1, tunnel_tuple=ICMP4)
    keys = list(json.loads(r.render(ev, stack=("x",))))
    assert keys == ["skb", "cpu", "process", "func", "caller_func", "time", "netns", "mark",
                    "iface", "proto", "mtu", "len", "tuple", "tunnel_tuple", "stack",
                    *SAVED_KEYS]  # fmt: skip


def test_default_options_render() -> None:
    r = make_renderer(Options(), FakeNames())
    assert r.render(EV) == ROW


# --- cilium/pwru v1.0.12 columns and keys ------------------------------------------

# skb->cb whose struct qdisc_skb_cb.data (bytes 8..28) holds the words 1..5
CB = bytes(range(100, 108)) + struct.pack("=5I", 1, 2, 0xDEADBEEF, 4, 5) + bytes(20)
CB_TEXT = "[0x00000001,0x00000002,0xDEADBEEF,0x00000004,0x00000005]"


def test_center_is_gos() -> None:
    assert center("ab", 5) == " ab  "  # str.center would give "  ab "
    assert center("NETNS NAME", 10) == "NETNS NAME"
    assert center("abc", 2) == "abc"


def test_cb_words_and_text() -> None:
    assert cb_words(CB) == (1, 2, 0xDEADBEEF, 4, 5)
    assert cb_text(CB) == CB_TEXT and len(CB_TEXT) == 56
    assert cb_text(b"") == "[" + ",".join(["0x00000000"] * 5) + "]"


def test_text_cb_and_netns_name_columns() -> None:
    r = renderer("--output-skb-cb", "--output-netns-names", "--netns-names-max-length", "11",
                 "--output-tuple=false")  # fmt: skip
    assert r.header() == (
        HEADER.removesuffix(" TUPLE FUNC") + " __sk_buff->cb[]" + " " * 41 + "NETNS NAME " + " FUNC"
    )
    row = ROW.split(" 10.0.2.15")[0]  # up to the padded LEN column
    assert r.render(EV, cb=CB) == row + " " + CB_TEXT + "pwru-test-0" + " ip_local_out"
    short = r.render(EV._replace(netns=7), cb=CB)
    assert short.endswith(CB_TEXT + "   short    ip_local_out")  # centered in 11
    assert r.render(EV._replace(netns=8)).endswith("]" + " " * 11 + " ip_local_out")


def test_text_netns_name_without_meta_and_default_width() -> None:
    r = renderer("--output-netns-names", "--output-meta=false", "--output-tuple=false")
    assert r.header() == "SKB                CPU PROCESS" + " " * 12 + "NETNS NAME    FUNC"
    assert r.render(EV) == "0xffff888012345678 1   curl:12345      pwru-test-0a1b2c ip_local_out"


def test_trace_tc_shows_cb_as_pwru_does() -> None:
    r = renderer("--filter-trace-tc", "--output-tuple=false")
    assert "__sk_buff->cb[]" in r.header() and CB_TEXT in r.render(EV, cb=CB)


def test_json_cb_netns_name_and_our_skb_cb() -> None:
    r = renderer("--output-json", "--output-skb-cb", "--output-netns-names")
    d = json.loads(r.render(EV, cb=CB))
    assert d["cb"] == [1, 2, 0xDEADBEEF, 4, 5]
    assert bytes.fromhex(d["skb_cb"]) == CB
    assert d["netns_name"] == "pwru-test-0a1b2c-b"  # never truncated in JSON
    assert list(d).index("netns_name") == list(d).index("netns") + 1
    assert "netns_name" not in json.loads(r.render(EV._replace(netns=8)))
    plain = json.loads(renderer("--output-json").render(EV, cb=CB))
    assert "cb" not in plain and "skb_cb" not in plain and "netns_name" not in plain
    no_meta = json.loads(renderer("--output-json", "--output-skb-cb", "--output-netns-names",
                                  "--output-meta=false").render(EV, cb=CB))  # fmt: skip
    assert "cb" not in no_meta and "netns" not in no_meta and no_meta["netns_name"]


def test_json_skb_and_shared_info_dumps() -> None:
    both = renderer("--output-json", "--output-skb", "--output-skb-shared-info")
    d = json.loads(both.render(EV, skb_text="SKB", shinfo_text="SHINFO"))
    assert (d["skb_metadata"], d["skb_shared_info"]) == ("\nSKB", "\nSHINFO")
    assert list(d)[:2] == ["skb", "skb_shared_info"]  # pwru's struct order
    alone = renderer("--output-json", "--output-skb-shared-info")
    d = json.loads(alone.render(EV, shinfo_text="SHINFO"))  # v1.0.12 put it in skb_metadata
    assert d["skb_metadata"] == d["skb_shared_info"] == "\nSHINFO"
    assert "skb_metadata" not in json.loads(both.render(EV))  # nothing printed: left out


def test_json_skb_metadata_values_are_ours() -> None:
    r = renderer("--output-json", "--output-skb-metadata", "skb->mark,skb->dev->ifindex")
    d = json.loads(r.render(EV._replace(skb_metadata=(66, 2, 0, 0))))
    assert d["skb_metadata_values"] == {"skb->mark": 66, "skb->dev->ifindex": 2}
    keys = list(d)
    assert keys[keys.index("ts") - 1] == "skb_metadata_values"  # last before the saved trace's


def test_json_every_key_in_pwrus_order() -> None:
    r = renderer("--output-json", "--timestamp=current", "--output-caller", "--output-tunnel",
                 "--output-stack", "--output-skb-cb", "--output-netns-names", "--output-skb",
                 "--output-skb-shared-info", "--output-tcp-flags",
                 "--output-skb-metadata", "skb->mark")  # fmt: skip
    ev = EV._replace(mark=1, tunnel_tuple=ICMP4)
    d = json.loads(r.render(ev, stack=("x",), skb_text="s", shinfo_text="i", cb=CB))
    assert list(d) == [
        "skb", "skb_shared_info", "cpu", "process", "func", "caller_func", "time", "netns",
        "netns_name", "mark", "iface", "proto", "mtu", "len", "cb", "skb_cb", "tuple",
        "tunnel_tuple", "stack", "skb_metadata", "skb_metadata_values",
        # the saved trace's (pwru.output.savedtrace)
        "ts", "pid", "comm", "probe_type", "skb_fields",
    ]  # fmt: skip
    assert d["tuple"]["flags"] == "SYN|ACK"
# --- map helpers and XDP metadata ------------------------------------------------

MAP_UPDATE = Bpfmap(12, "vm_tc_ports", 4, 8, b"\x1d\x45\x00\x00", bytes([2]) + bytes(7))


def test_text_bpfmap_lines() -> None:
    """pwru's layout below the event line: id, name, then key and value as hex dumps
    (a value only when one was read)."""
    line = renderer("--output-meta=false", "--output-tuple=false").render(EV, bpfmap=MAP_UPDATE)
    assert line.split("\n") == [
        "0xffff888012345678 1   curl:12345       ip_local_out",
        "map_id: 12",
        "map_name: vm_tc_ports",
        "key(4):",
        "00000000  1d 45 00 00                                       |.E..|",
        "value(8):",
        "00000000  02 00 00 00 00 00 00 00                           |........|",
    ]
    deleted = MAP_UPDATE._replace(value=None)
    assert renderer().render(EV, bpfmap=deleted).split("\n")[-2:] == [
        "key(4):",
        "00000000  1d 45 00 00                                       |.E..|",
    ]


def test_hex_dump_is_hexdump_c() -> None:
    """Go's hex.Dump, which is `hexdump -C` without the final offset line."""
    assert hex_dump(b"") == ""
    assert hex_dump(bytes(range(0x41, 0x41 + 18))) == (
        "00000000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|\n"
        "00000010  51 52                                             |QR|\n"
    )


def test_json_bpfmap() -> None:
    out = json.loads(renderer("--output-json").render(EV, bpfmap=MAP_UPDATE))
    assert out["bpfmap"] == {
        "id": 12, "name": "vm_tc_ports", "key_size": 4, "key": "1d450000",
        "value_size": 8, "value": "0200000000000000",
    }  # fmt: skip
    assert "value" not in json.loads(
        renderer("--output-json").render(EV, bpfmap=MAP_UPDATE._replace(value=None))
    )["bpfmap"]


def test_xdp_events_print_xdp_metadata() -> None:
    """The metadata slots of an XDP event hold --output-xdp-metadata, of the others
    --output-skb-metadata; each is printed with its own fields."""
    skb_field = MetadataField("skb->mark", 4, False, None, name="mark")
    xdp_field = MetadataField("xdp->rxq->queue_index", 4, False, None, name="queue_index")
    r = make_renderer(
        parse_options(["--output-meta=false", "--output-tuple=false"]),
        FakeNames(), wall_offset_ns=0, metadata=[skb_field], xdp_metadata=[xdp_field],
    )  # fmt: skip
    xdp = EV._replace(type=abi.PWRU_EVENT_XDP, probe_id=3, skb_metadata=(5, 0, 0, 0))
    assert r.render(xdp).endswith(" xdp_prog(xdp) queue_index=5")
    assert r.render(EV._replace(skb_metadata=(66, 0, 0, 0))).endswith(" ip_local_out mark=66")
    no_xdp_fields = make_renderer(
        parse_options([]), FakeNames(), wall_offset_ns=0, metadata=[skb_field]
    )
    assert no_xdp_fields.render(xdp).endswith(" xdp_prog(xdp)")
