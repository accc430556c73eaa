"""Saved traces read back: a JSON trace and a pcapng file, written from the same events,
show again exactly what the run printed (JSON byte for byte, and the text output);
damaged and foreign files end in one line and exit code 2."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pwru.bpf import abi
from pwru.cli import main
from pwru.filter.skbexpr import MetadataField
from pwru.options import Options, parse_options
from pwru.output.decode import Event, Extras, Packet, RecordLayout
from pwru.output.pcapng import PcapngSink
from pwru.output.printer import Printer, StreamOutput
from pwru.output.readback import open_trace
from pwru.output.render import make_renderer
from pwru.output.savedtrace import header_line, reading_options
from tests.unit.test_render import EV, ICMP4, TCP4, UDP6, FakeNames

WALL = 1_700_000_000_000_000_000 - EV.ts
MARK = MetadataField("skb->mark", 4, False, None, "mark")
FORMATS = ("--timestamp=relative", "--timestamp=absolute", "--timestamp=current")
CONTENT = (
    "--output-caller", "--output-stack", "--output-tunnel", "--output-tcp-flags",
    "--output-skb", "--output-skb-metadata", "skb->mark", "--filter-netns", "inode:1",
    "--capture-bytes", "1514",
)  # fmt: skip
FRAMES = [0xFFFFFFFF81000010, 0xFFFFFFFF81000020]
REASON = abi.PWRU_EVENT_HAS_REASON


def events() -> Iterator[tuple[Event, Extras]]:
    """A little of everything the outputs print."""
    eth = Packet(abi.PWRU_LINK_ETHERNET, 98, bytes(range(64)), True)
    raw = Packet(abi.PWRU_LINK_RAW_IP, 84, bytes(84), False)
    none = Packet(abi.PWRU_LINK_NONE, 0, b"", False)
    xdp = {"type": abi.PWRU_EVENT_XDP, "probe_id": 3}
    variants: list[tuple[dict[str, object], Packet]] = [
        ({}, eth),
        ({"probe_id": 1, "reason": 6, "flags": REASON, "skb_metadata": (7, 0, 0, 0)}, raw),
        ({"probe_id": 1, "reason": 99, "flags": REASON, "cpu": 0, "mark": 0xA0}, none),
        ({"probe_id": 2, "type": abi.PWRU_EVENT_TC, "tuple": UDP6, "tunnel_tuple": ICMP4}, eth),
        (xdp, eth),
        ({**xdp, "reason": 2, "flags": REASON | abi.PWRU_EVENT_FEXIT, "ifindex": 9}, eth),
        ({"pid": 0, "ifindex": 0, "netns": 0, "ts": EV.ts + 5_000, "tuple": None}, raw),
        ({"skb_addr": EV.skb_addr + 256, "ts": EV.ts + 9_000, "comm": 'we"ird'}, raw),
    ]
    for fields, packet in variants:
        extras = Extras(FRAMES, "(struct sk_buff){\n .len = (u32)60,\n}", "", packet=packet)
        event = EV._replace(**fields)._replace(extras=extras)  # type: ignore[arg-type]
        yield event, extras


def render(argv: list[str]) -> str:
    """What a live run with ``argv`` printed for events()."""
    out = io.StringIO()
    options = parse_options(argv)
    renderer = make_renderer(options, FakeNames(), wall_offset_ns=WALL, metadata=[MARK])
    printer = Printer(renderer, StreamOutput(out), RecordLayout())
    for event, extras in events():
        printer.add(event, extras)
    printer.flush()
    return out.getvalue()


def read(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("timestamps", FORMATS)
def test_json_trace_reads_back_as_the_same_json_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timestamps: str
) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(render(["--output-json", timestamps, *CONTENT]))
    code, out, err = read(capsys, "--read", str(trace), "--output-json", timestamps)
    assert (code, err) == (0, "")
    assert out == trace.read_text()
    code, out, err = read(capsys, "--read", str(trace), timestamps)
    assert (code, err) == (0, "")
    assert out == render([timestamps, *CONTENT])


def test_reading_may_hide_columns_and_change_timestamps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(render(["--output-json", *CONTENT]))
    argv = ["--output-meta=false", "--output-tuple=false", "--timestamp=relative"]
    code, out, _ = read(capsys, "--read", str(trace), *argv)
    assert code == 0 and out == render([*argv, *CONTENT])


def test_pcapng_reads_back_as_the_json_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--output-json", *CONTENT]
    json_trace = tmp_path / "trace.json"
    json_trace.write_text(render(argv))
    pcap = tmp_path / "trace.pcapng"
    options = parse_options([*argv, "--output-pcap", str(pcap)])
    sink = PcapngSink.open(options, FakeNames(), header_line(options, WALL, [MARK]), WALL)
    for event, extras in events():
        sink.add(event, extras)
    sink.close()
    code, out, err = read(capsys, "--read", str(pcap), "--output-json")
    assert (code, err) == (0, "")
    assert out == json_trace.read_text()
    # and from either, a pcapng again that reads back the same
    again = tmp_path / "again.pcapng"
    assert read(capsys, "--read", str(json_trace), "--output-pcap", str(again))[0] == 0
    assert read(capsys, "--read", str(again), "--output-json")[1] == json_trace.read_text()


def test_events_carry_names_and_extras(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(render(["--output-json", *CONTENT]))
    saved = open_trace(str(trace))
    got = [event for event, _ in saved.events()]
    assert [e.func for e in got[:3]] == ["ip_local_out", "kfree_skb", "kfree_skb"]
    assert got[1].reason == 6 and got[1].reason_name == "SKB_DROP_REASON_NETFILTER_DROP"
    assert got[2].reason == 99 and got[2].reason_name is None
    assert got[3].tuple == UDP6 and got[3].tunnel_tuple == ICMP4
    assert got[0].tuple == TCP4 and got[0].iface == "eth0:2" and got[0].process == "curl:12345"
    assert got[0].packet == Packet(abi.PWRU_LINK_ETHERNET, 98, bytes(range(64)), True)
    assert got[5].flags & abi.PWRU_EVENT_FEXIT and got[5].type == abi.PWRU_EVENT_XDP
    assert got[1].skb_metadata == (7, 0, 0, 0)
    assert saved.header.options.output_stack and saved.header.metadata == (MARK,)


def test_reading_options_keep_what_was_traced() -> None:
    recorded = parse_options(["--filter-netns", "inode:1", "--output-stack", "tcp"])
    asked = parse_options(["--output-json", "--timestamp=current", "--output-meta=false"])
    shown = reading_options(recorded, asked)
    assert shown.filter_netns == "inode:1" and shown.pcap_filter == "tcp"
    assert shown.output_stack and shown.output_json and shown.timestamp == "current"
    assert not shown.output_meta and shown.output_tuple


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = read(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("pwru: error: "), err
    return err


def test_truncated_json_trace_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = render(["--output-json"])
    trace = tmp_path / "cut.json"
    trace.write_text(text[: len(text) - 40])
    assert "not JSON" in one_line_error(capsys, "--read", str(trace))
    trace.write_text(text.splitlines()[0][:50])
    assert "not a pwru trace" in one_line_error(capsys, "--read", str(trace))


def test_truncated_pcapng_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = tmp_path / "trace.pcapng"
    options = parse_options(["--output-pcap", str(pcap)])
    sink = PcapngSink.open(options, FakeNames(), header_line(options, WALL), WALL)
    for event, extras in events():
        sink.add(event, extras)
    sink.close()
    data = pcap.read_bytes()
    pcap.write_bytes(data[: len(data) - 10])
    assert "truncated pcapng" in one_line_error(capsys, "--read", str(pcap))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not a pwru trace"),
        (b"\x00\x01binary\xff\xfe", "not a pwru trace"),
        (b'{"skb":"0x1","func":"ip_rcv"}\n', "no pwru_trace header"),
        (b'{"pwru_trace":{"format":99,"options":{}}}\n', "format 99"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a" + bytes(16), "not one pwru wrote"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "not a pcapng file"),
    ],
)
def test_foreign_files_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(content)
    assert words in one_line_error(capsys, "--read", str(path))


def test_missing_file_and_no_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read" in one_line_error(capsys, "--read", str(tmp_path / "nothing"))
    trace = tmp_path / "trace.json"
    lines = render(["--output-json"]).splitlines()
    trace.write_text("\n".join(lines) + "\n")
    header = json.loads(lines[0])
    assert header["pwru_trace"]["options"]["capture_bytes"] == 0
    out = str(tmp_path / "x.pcapng")
    assert "no packet bytes" in one_line_error(capsys, "--read", str(trace), "--output-pcap", out)


def test_header_records_what_was_traced() -> None:
    options = parse_options(["--output-json", "--output-file", "/x", "--filter-mark", "7", "udp"])
    header = json.loads(header_line(options, 42, [MARK]))["pwru_trace"]
    assert header["wall_offset_ns"] == 42 and header["options"]["pcap_filter"] == "udp"
    assert "output_file" not in header["options"] and "read" not in header["options"]
    assert header["skb_metadata_fields"][0]["expr"] == "skb->mark"
    assert Options(**header["options"]).filter_mark == 7
