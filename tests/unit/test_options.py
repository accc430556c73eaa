"""Command-line parsing: pwru-compatible flags, pflag spellings, legacy flags."""

from __future__ import annotations

import re

import pytest

from pwru.errors import EnvironmentProblem, PwruError, UsageError
from pwru.options import Options, build_parser, parse_options


def usage_error(argv: list[str]) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_options(argv)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    return info.value


def test_error_exit_codes() -> None:
    assert PwruError.exit_code == 1
    assert UsageError.exit_code == 2
    assert EnvironmentProblem.exit_code == 1
    assert issubclass(UsageError, PwruError) and issubclass(EnvironmentProblem, PwruError)


def test_defaults_are_pwrus() -> None:
    opts = parse_options([])
    assert opts == Options()
    assert opts.pcap_filter == ""
    assert opts.output_meta is True and opts.output_tuple is True
    assert opts.timestamp == "none"
    assert opts.filter_kprobe_batch == 10
    assert opts.output_limit_lines == 0
    assert (opts.filter_mark, opts.filter_mark_mask) == (0, 0)
    assert opts.backend == ""
    assert opts.ringbuf_size_bytes == 16 << 20
    assert opts.notes == []


def test_usage_line() -> None:
    assert build_parser().format_usage().strip() == "usage: pwru [options] [pcap-filter]"


def test_counter_checks_from_the_brief() -> None:
    opts = parse_options(["--output-meta=false", "tcp and port 80"])
    assert opts.output_meta is False
    assert opts.pcap_filter == "tcp and port 80"
    assert parse_options(["host", "10.0.0.1"]).pcap_filter == "host 10.0.0.1"


@pytest.mark.parametrize(
    ("spelling", "value"),
    [
        ("--output-skb", True),
        ("--output-skb=true", True),
        ("--output-skb=True", True),
        ("--output-skb=1", True),
        ("--output-skb=yes", True),
        ("--output-skb=t", True),
        ("--output-skb=false", False),
        ("--output-skb=FALSE", False),
        ("--output-skb=0", False),
        ("--output-skb=no", False),
        ("--output-skb=f", False),
    ],
)
def test_pflag_bool_spellings(spelling: str, value: bool) -> None:
    assert parse_options([spelling]).output_skb is value


def test_bool_flags_never_take_the_next_word() -> None:
    opts = parse_options(["--output-meta", "tcp", "--output-tuple", "port", "80"])
    assert opts.output_meta is True and opts.output_tuple is True
    assert opts.pcap_filter == "tcp port 80"
    opts = parse_options(["--output-json", "false"])  # pflag: "false" is a pcap word
    assert opts.output_json is True and opts.pcap_filter == "false"


def test_bad_bool_value() -> None:
    err = usage_error(["--output-meta=maybe"])
    assert "--output-meta" in str(err) and "maybe" in str(err)
    usage_error(["--output-meta="])


def test_every_bool_flag() -> None:
    names = [
        "debug", "all_kmods", "filter_track_skb", "filter_track_skb_by_stackid",
        "filter_trace_tc", "filter_trace_xdp", "output_skb", "output_skb_shared_info",
        "output_stack", "output_caller", "output_tcp_flags", "output_tunnel", "output_json",
        "version", "output_skb_cb", "output_netns_names", "output_file_compress",
    ]  # fmt: skip
    # --filter-track-bpf-helpers and --output-bpfmap need companions: test_bpf_helper_flags
    for name in names:
        flag = "--" + name.replace("_", "-")
        assert getattr(parse_options([flag]), name) is True, flag
        assert getattr(parse_options([flag + "=false"]), name) is False, flag
    assert parse_options(["--output-tuple=0"]).output_tuple is False


def test_flags_and_pcap_words_intermixed() -> None:
    opts = parse_options(["src", "host", "1.1.1.1", "--filter-func", "ip_.*", "and", "tcp"])
    assert opts.pcap_filter == "src host 1.1.1.1 and tcp"
    assert opts.filter_func == "ip_.*"


def test_double_dash_ends_flags() -> None:
    opts = parse_options(["--output-skb", "--", "--output-meta=false", "x"])
    assert opts.output_skb is True and opts.output_meta is True
    assert opts.pcap_filter == "--output-meta=false x"


def test_string_flags_with_and_without_equals() -> None:
    opts = parse_options(
        ["--kernel-btf", "/sys/kernel/btf/vmlinux", "--filter-netns=/run/netns/a",
         "--filter-ifname", "eth0", "--output-file=/tmp/o", "--ready-file", "/tmp/r",
         "--filter-tunnel-pcap-l2", "udp port 53", "--filter-tunnel-pcap-l3=icmp",
         "--filter-skb-expr", "skb->len > 100"]
    )  # fmt: skip
    assert opts.kernel_btf == "/sys/kernel/btf/vmlinux"
    assert opts.filter_netns == "/run/netns/a"
    assert opts.filter_ifname == "eth0"
    assert opts.output_file == "/tmp/o"
    assert opts.ready_file == "/tmp/r"
    assert opts.filter_tunnel_pcap_l2 == "udp port 53"
    assert opts.filter_tunnel_pcap_l3 == "icmp"
    assert opts.filter_skb_expr == "skb->len > 100"
    assert opts.pcap_filter == ""


def test_value_that_looks_like_a_bool_flag_is_a_value() -> None:
    opts = parse_options(["--output-file", "--output-json"])
    assert opts.output_file == "--output-json" and opts.output_json is False


def test_list_flags_split_and_repeat() -> None:
    opts = parse_options(["--kmods", "a,b", "--kmods=c", "--filter-non-skb-funcs", "f1,,f2"])
    assert opts.kmods == ["a", "b", "c"]
    assert opts.filter_non_skb_funcs == ["f1", "f2"]
    # as in pwru, tracing non-skb functions turns on tracking by stack id
    assert opts.filter_track_skb_by_stackid is True


def test_skb_metadata() -> None:
    opts = parse_options(["--output-skb-metadata", "skb->mark,skb->hash"])
    assert opts.output_skb_metadata == ["skb->mark", "skb->hash"]
    err = usage_error(["--output-skb-metadata", "skb->a,skb->b,skb->c,skb->d,skb->e"])
    assert "at most 4" in str(err)
    usage_error(["--output-skb-metadata", "mark"])
    usage_error(["--filter-skb-expr", "len > 1"])


def test_xdp_expressions() -> None:
    """--filter-xdp-expr / --output-xdp-metadata start at xdp and apply to the XDP
    programs --filter-trace-xdp traces."""
    opts = parse_options(
        ["--filter-trace-xdp", "--filter-xdp-expr", "xdp->rxq->dev->ifindex == 9",
         "--output-xdp-metadata", "xdp->rxq->queue_index,xdp->frame_sz"]
    )  # fmt: skip
    assert opts.filter_xdp_expr == "xdp->rxq->dev->ifindex == 9"
    assert opts.output_xdp_metadata == ["xdp->rxq->queue_index", "xdp->frame_sz"]
    four = "xdp->a,xdp->b,xdp->c,xdp->d,xdp->e"
    assert "at most 4" in str(usage_error(["--filter-trace-xdp", "--output-xdp-metadata", four]))
    assert "must start with xdp" in str(
        usage_error(["--filter-trace-xdp", "--output-xdp-metadata", "skb->mark"])
    )
    assert "must start with xdp" in str(
        usage_error(["--filter-trace-xdp", "--filter-xdp-expr", "rxq->queue_index == 1"])
    )
    err = usage_error(["--filter-xdp-expr", "xdp->frame_sz > 0"])
    assert str(err).startswith("--filter-xdp-expr applies to XDP programs: add --filter-trace-xdp")
    assert "--output-xdp-metadata" in str(usage_error(["--output-xdp-metadata", "xdp->frame_sz"]))


def test_bpf_helper_flags() -> None:
    """--filter-track-bpf-helpers shows the helpers of traced tc/XDP programs;
    --output-bpfmap adds the map helpers' arguments."""
    opts = parse_options(["--filter-trace-tc", "--filter-track-bpf-helpers", "--output-bpfmap"])
    assert opts.filter_track_bpf_helpers and opts.output_bpfmap
    assert not opts.filter_track_skb_by_stackid  # pwru's way of attributing; not ours
    err = usage_error(["--filter-track-bpf-helpers"])
    assert "add --filter-trace-tc and/or --filter-trace-xdp" in str(err)
    xdp_only = parse_options(["--filter-trace-xdp", "--filter-track-bpf-helpers"])
    assert xdp_only.filter_track_bpf_helpers
    err = usage_error(["--filter-trace-tc", "--output-bpfmap"])
    assert "add --filter-track-bpf-helpers" in str(err)


@pytest.mark.parametrize(
    ("text", "mark", "mask"),
    [
        ("0", 0, 0),
        ("5", 5, 0xFFFFFFFF),
        ("0x10", 0x10, 0xFFFFFFFF),
        ("0XA00/0xf00", 0xA00, 0xF00),
        ("0/0xffffffff", 0, 0xFFFFFFFF),
        ("4294967295", 0xFFFFFFFF, 0xFFFFFFFF),
        ("256/768", 256, 768),
    ],
)
def test_filter_mark(text: str, mark: int, mask: int) -> None:
    opts = parse_options(["--filter-mark", text])
    assert (opts.filter_mark, opts.filter_mark_mask) == (mark, mask)


@pytest.mark.parametrize(
    "text", ["x", "", "1/2/3", "0x100000000", "4294967296", "-1", "0x/1", "1/", "0xf/0x1"]
)
def test_filter_mark_errors(text: str) -> None:
    assert "--filter-mark" in str(usage_error(["--filter-mark=" + text]))


def test_numbers() -> None:
    assert parse_options(["--filter-kprobe-batch", "50"]).filter_kprobe_batch == 50
    assert parse_options(["--output-limit-lines", "0"]).output_limit_lines == 0
    assert parse_options(["--output-limit-lines=7"]).output_limit_lines == 7
    usage_error(["--filter-kprobe-batch", "0"])
    usage_error(["--filter-kprobe-batch", "ten"])
    usage_error(["--output-limit-lines=-1"])


@pytest.mark.parametrize(("mb", "ok"), [("1", True), ("64", True), ("1024", True),
                                        ("0", False), ("3", False), ("2048", False),
                                        ("x", False)])  # fmt: skip
def test_ringbuf_size(mb: str, ok: bool) -> None:
    if ok:
        assert parse_options(["--ringbuf-size", mb]).ringbuf_size_bytes == int(mb) << 20
    else:
        assert "--ringbuf-size" in str(usage_error(["--ringbuf-size", mb]))


def test_choices() -> None:
    for ts in ("none", "current", "relative", "absolute"):
        assert parse_options(["--timestamp", ts]).timestamp == ts
    for backend in ("", "kprobe", "kprobe-multi", "tracepoint"):
        assert parse_options(["--backend=" + backend]).backend == backend
    assert "--timestamp" in str(usage_error(["--timestamp", "wall"]))
    assert "--backend" in str(usage_error(["--backend", "fentry"]))


def test_filter_func_regex() -> None:
    assert parse_options(["--filter-func", "^(ip|tcp)_.*"]).filter_func == "^(ip|tcp)_.*"
    err = usage_error(["--filter-func", "ip_(rcv"])
    assert "--filter-func" in str(err) and "ip_(rcv" in str(err)


def test_unknown_and_abbreviated_flags() -> None:
    assert "--nope" in str(usage_error(["--nope"]))
    usage_error(["--output-j"])  # no abbreviations, as in pflag


def test_missing_value() -> None:
    assert "--kernel-btf" in str(usage_error(["--kernel-btf"]))


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pwru [options] [pcap-filter]")
    assert "  --output-meta " in out and "[OUTPUT_META]" not in out


# --- cilium/pwru v1.0.12 flags ------------------------------------------------------

# Every flag of cilium/pwru v1.0.12 (internal/pwru/types.go, SetFlags), as a user types it.
PWRU_V1012_FLAGS = [
    "--help", "--version", "--kernel-btf", "--kmods", "--all-kmods", "--filter-func",
    "--filter-non-skb-funcs", "--filter-netns", "--filter-mark", "--filter-track-skb",
    "--filter-track-skb-by-stackid", "--filter-trace-tc", "--filter-tunnel-pcap-l2",
    "--filter-tunnel-pcap-l3", "--filter-trace-xdp", "--filter-track-bpf-helpers",
    "--filter-ifname", "--filter-kprobe-batch", "--filter-skb-expr", "--filter-xdp-expr",
    "--timestamp", "--output-meta", "--output-netns-names", "--netns-names-max-length",
    "--output-tuple", "--output-skb", "--output-skb-shared-info", "--output-tunnel",
    "--output-stack", "--output-bpfmap", "--output-caller", "--output-limit-lines",
    "--output-skb-cb", "--output-tcp-flags", "--output-skb-metadata", "--output-xdp-metadata",
    "--output-file", "--output-file-max-size", "--output-file-max-backups",
    "--output-file-max-age", "--output-file-compress", "--output-json", "--ready-file",
    "--backend", "--set-percpu-buf", "--debug",
]  # fmt: skip


def test_every_pwru_flag_is_known_and_listed_in_help() -> None:
    parser = build_parser()
    known = {s for action in parser._actions for s in action.option_strings}
    assert set(PWRU_V1012_FLAGS) <= known
    listed = parser.format_help()
    hidden = {"--ready-file"}  # hidden in pwru's help too
    missing = [f for f in PWRU_V1012_FLAGS if not re.search(f" {f}(?![\\w-])", listed)]
    assert missing == sorted(hidden)


def test_new_flag_defaults_are_pwrus() -> None:
    opts = parse_options([])
    assert (opts.output_netns_names, opts.netns_names_max_length) == (False, 16)
    assert opts.output_skb_cb is False and opts.set_percpu_buf == 4096
    assert (opts.output_file_max_size, opts.output_file_max_backups) == (100, 0)
    assert (opts.output_file_max_age, opts.output_file_compress) == (0, False)


def test_rotation_flags() -> None:
    opts = parse_options(["--output-file", "t", "--output-file-max-size", "2",
                          "--output-file-max-backups=3", "--output-file-max-age", "7",
                          "--output-file-compress"])  # fmt: skip
    assert (opts.output_file_max_size, opts.output_file_max_backups) == (2, 3)
    assert (opts.output_file_max_age, opts.output_file_compress) == (7, True)
    assert parse_options(["--output-file-max-size", "0"]).output_file_max_size == 0  # = 100
    for flag in ("--output-file-max-size", "--output-file-max-backups", "--output-file-max-age"):
        assert flag in str(usage_error([flag, "-1"]))


def test_netns_name_length_is_raised_to_ten_with_a_note() -> None:
    assert parse_options(["--netns-names-max-length", "12"]).netns_names_max_length == 12
    opts = parse_options(["--netns-names-max-length", "5"])
    assert opts.netns_names_max_length == 10
    assert len(opts.notes) == 1 and "raised to the minimum, 10" in opts.notes[0]
    usage_error(["--netns-names-max-length", "256"])  # a uint8 in pwru


def test_percpu_buf_range() -> None:
    assert parse_options(["--set-percpu-buf", "8192"]).set_percpu_buf == 8192
    assert parse_options(["--set-percpu-buf", "65536"]).set_percpu_buf == 65536
    for bad in ("0", "65537", "big"):
        assert "--set-percpu-buf" in str(usage_error(["--set-percpu-buf", bad]))


def test_cb_shows_with_skb_cb_or_trace_tc_under_meta() -> None:
    assert parse_options(["--output-skb-cb"]).shows_cb
    assert parse_options(["--filter-trace-tc"]).shows_cb
    assert not parse_options(["--output-skb-cb", "--output-meta=false"]).shows_cb
    assert not parse_options([]).shows_cb


def test_help_lists_xdp_and_helper_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """The flags of the XDP expressions and BPF helper tracing, in pwru's words."""
    with pytest.raises(SystemExit):
        parse_options(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in (
        "--filter-xdp-expr EXPR filter xdp with simple C expression, like "
        "'xdp->rxq->dev->ifindex == 9'",
        '--output-xdp-metadata a,b print xdp metadata (e.g., "xdp->rxq->queue_index"), 4 at most',
        "--filter-track-bpf-helpers trace BPF helper functions",
        "--output-bpfmap print function arguments related to bpf maps",
    ):
        assert text in out, text


# --- legacy flags --------------------------------------------------------------


def test_legacy_filters_become_pcap() -> None:
    opts = parse_options(
        ["--filter-src-ip", "1.2.3.4", "--filter-dst-port", "80", "--filter-proto", "tcp"]
    )
    assert opts.pcap_filter == "src host 1.2.3.4 and dst port 80 and tcp"
    assert len(opts.notes) == 3
    assert all("legacy flag" in note and "\n" not in note for note in opts.notes)
    assert "pwru 'src host 1.2.3.4'" in opts.notes[0]


def test_legacy_filters_and_positional() -> None:
    opts = parse_options(["--filter-dst-ip", "2001:db8:0::1", "icmp6", "or", "udp",
                          "--filter-proto", "icmp6", "--filter-src-port", "53"])  # fmt: skip
    assert opts.pcap_filter == "dst host 2001:db8::1 and src port 53 and icmp6 and (icmp6 or udp)"


def test_legacy_port_and_pcap() -> None:
    opts = parse_options(["--filter-port", "443", "--filter-pcap", "host 1.1.1.1 or host 8.8.8.8"])
    assert opts.pcap_filter == "port 443 and (host 1.1.1.1 or host 8.8.8.8)"
    # as in old pwru, port 0 means "no port filter"
    assert parse_options(["--filter-src-port", "0"]).pcap_filter == ""


def test_legacy_relative_timestamp() -> None:
    opts = parse_options(["--output-relative-timestamp"])
    assert opts.timestamp == "relative"
    assert opts.notes == [
        "legacy flag --output-relative-timestamp: modern spelling: --timestamp=relative"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--filter-src-ip", "1.2.3"],
        ["--filter-dst-ip", "host"],
        ["--filter-src-port", "65536"],
        ["--filter-dst-port", "-1"],
        ["--filter-port", "http"],
        ["--filter-proto", "sctp"],
    ],
)
def test_legacy_errors(argv: list[str]) -> None:
    assert argv[0] in str(usage_error(argv))
