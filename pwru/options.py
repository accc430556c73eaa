"""Command-line options, compatible with cilium/pwru's flags.

``parse_options(argv)`` returns an ``Options`` value or raises ``UsageError``;
argparse never exits by itself except for ``--help``. Flag names, defaults and
value syntax follow cilium/pwru (Go pflag):

* boolean flags take an optional ``=VALUE`` (``--output-meta=false``) but never a
  separate word, so ``pwru --output-meta tcp`` keeps ``tcp`` in the pcap filter;
* list flags are comma separated and may be repeated (``--kmods a,b --kmods c``);
* flags and pcap-filter words may be mixed in any order; all positional words are
  joined with spaces into ``Options.pcap_filter``; ``--`` ends the flags.

Flags of old pwru releases (``--filter-src-ip`` and friends) are still accepted:
they become an equivalent pcap expression and leave a note in ``Options.notes``
with the modern spelling, for the caller to print on stderr.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from pwru.bpf.abi import PWRU_MAX_CAPTURE, PWRU_MAX_SKB_METADATA, PWRU_MAX_SKB_TEXT
from pwru.errors import UsageError
from pwru.trace import BackendName

TIMESTAMPS = ("none", "current", "relative", "absolute")
BACKENDS = tuple(name.value for name in BackendName)
MAX_SKB_METADATA = PWRU_MAX_SKB_METADATA  # slots in struct pwru_event
KPROBE_BATCH = 10  # kprobes attached (and detached) at once
U32_MAX = 0xFFFFFFFF

# Ring buffer: 16 MiB by default, like the map definition in bpf/pwru.bpf.c. One
# event takes 224 bytes there (216 + 8 header), so 16 MiB absorbs a burst of ~75,000
# events (a few tenths of a second of a busy trace) while Python catches up, and
# stays small enough for memlock limits and small VMs. The kernel wants a power-of-two
# number of pages; we ask for a power-of-two number of MiB (1 MiB .. 1 GiB).
DEFAULT_RINGBUF_MB = 16
MAX_RINGBUF_MB = 1024

# --set-percpu-buf: bytes the kernel prints --output-skb / --output-skb-shared-info into
# (cilium/pwru's per-CPU buffer, 4096 by default); ours is the text's slot in the record.
DEFAULT_PERCPU_BUF = 4096
MAX_PERCPU_BUF = PWRU_MAX_SKB_TEXT  # the BPF side's cap (bpf/pwru.h)

# --output-netns-names: width of the NETNS NAME column (cilium/pwru: default 16, at
# least 10, a uint8)
DEFAULT_NETNS_NAME_LEN = 16
MIN_NETNS_NAME_LEN = 10
MAX_NETNS_NAME_LEN = 255

# --output-file rotation, as cilium/pwru (lumberjack): megabytes (MiB) per file,
# 0 = 100; backups kept (0 = all); days kept (0 = forever)
DEFAULT_OUTPUT_FILE_MB = 100

# Packet bytes captured per event with --output-pcap when --capture-bytes is not given:
# a full Ethernet frame of the usual 1500-byte MTU (see docs/output.md for the cost).
DEFAULT_CAPTURE_BYTES = 1514
MAX_CAPTURE_BYTES = PWRU_MAX_CAPTURE

_TRUE = frozenset(("1", "t", "true", "y", "yes", "on"))
_FALSE = frozenset(("0", "f", "false", "n", "no", "off"))

_LEGACY_PROTOS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmp6": "icmp6", "icmpv6": "icmp6"}


@dataclass
class Options:
    """Parsed command line. Defaults are cilium/pwru's."""

    version: bool = False
    debug: bool = False
    kernel_btf: str = ""
    kmods: list[str] = field(default_factory=list)
    all_kmods: bool = False
    # filters
    pcap_filter: str = ""
    filter_func: str = ""  # regex; the caller applies full-match semantics
    filter_non_skb_funcs: list[str] = field(default_factory=list)
    filter_netns: str = ""  # resolved by pwru.kernel.netns.resolve_netns
    filter_mark: int = 0
    filter_mark_mask: int = 0  # 0 = mark filter off
    filter_ifname: str = ""  # resolved by pwru.kernel.netns.resolve_ifindex
    filter_track_skb: bool = False
    filter_track_skb_by_stackid: bool = False
    filter_trace_tc: bool = False
    filter_trace_xdp: bool = False
    filter_track_bpf_helpers: bool = False
    filter_tunnel_pcap_l2: str = ""
    filter_tunnel_pcap_l3: str = ""
    filter_kprobe_batch: int = KPROBE_BATCH
    filter_skb_expr: str = ""
    filter_xdp_expr: str = ""
    # output
    timestamp: str = "none"
    output_meta: bool = True
    output_tuple: bool = True
    output_skb: bool = False
    output_skb_shared_info: bool = False
    output_stack: bool = False
    output_caller: bool = False
    output_limit_lines: int = 0  # 0 = unlimited
    output_tcp_flags: bool = False
    output_tunnel: bool = False
    output_skb_metadata: list[str] = field(default_factory=list)
    output_skb_cb: bool = False
    output_netns_names: bool = False
    netns_names_max_length: int = DEFAULT_NETNS_NAME_LEN
    set_percpu_buf: int = DEFAULT_PERCPU_BUF  # bytes of --output-skb(-shared-info) text
    output_xdp_metadata: list[str] = field(default_factory=list)
    output_bpfmap: bool = False
    output_file: str = ""
    output_file_max_size: int = DEFAULT_OUTPUT_FILE_MB  # MiB before rotation
    output_file_max_backups: int = 0  # 0 = keep all
    output_file_max_age: int = 0  # days; 0 = forever
    output_file_compress: bool = False
    output_json: bool = False
    summary: bool = False  # a drop report when pwru stops (pwru.diagnose)
    output_per_packet: bool = False  # one block per packet instead of a line per event
    ready_file: str = ""
    backend: str = ""  # "" = choose automatically
    ringbuf_size_bytes: int = DEFAULT_RINGBUF_MB << 20
    # saved traces and packet bytes
    output_pcap: str = ""  # pcapng file of the traced packets
    capture_bytes: int = 0  # 0 = DEFAULT_CAPTURE_BYTES with --output-pcap, else none
    read: str = ""  # re-render this saved trace (JSON or pcapng) instead of tracing
    # one line per legacy flag used, with its modern spelling
    notes: list[str] = field(default_factory=list)

    @property
    def shows_cb(self) -> bool:
        """skb->cb is a metadata column: with --output-skb-cb and, as in cilium/pwru,
        with --filter-trace-tc."""
        return self.output_meta and (self.output_skb_cb or self.filter_trace_tc)

    @property
    def capture_size(self) -> int:
        """Packet bytes the BPF side copies per event (0 = none): --capture-bytes, else
        DEFAULT_CAPTURE_BYTES when --output-pcap asks for packets."""
        if self.capture_bytes:
            return self.capture_bytes
        return DEFAULT_CAPTURE_BYTES if self.output_pcap else 0


# --- value types -------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """pflag/strconv.ParseBool spellings, plus yes/no/on/off."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use true or false)")


def parse_u32(text: str) -> int:
    """A decimal or 0x-hexadecimal number that fits in 32 bits."""
    s = text.strip()
    try:
        value = int(s[2:], 16) if s[:2].lower() == "0x" else int(s, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 <= value <= U32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit in 32 bits")
    return value


def parse_mark(text: str) -> tuple[int, int]:
    """``mark[/mask]`` -> (mark, mask). Mask omitted: exact match (0xffffffff),
    except a bare ``0``, which means "no mark filter" like pwru's default 0/0."""
    parts = text.split("/")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"invalid mark {text!r}: expected mark[/mask]")
    mark = parse_u32(parts[0])
    # without a mask: exact match, except that a bare 0 keeps the filter off
    mask = parse_u32(parts[1]) if len(parts) == 2 else (U32_MAX if mark else 0)
    if mark & ~mask & U32_MAX:
        raise argparse.ArgumentTypeError(
            f"mark {mark:#x} has bits outside mask {mask:#x}, so it can never match"
        )
    return mark, mask


def _parse_count(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = _parse_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None


def parse_percpu_buf(text: str) -> int:
    """--set-percpu-buf: 1 .. MAX_PERCPU_BUF bytes."""
    value = _parse_int(text)
    if not 1 <= value <= MAX_PERCPU_BUF:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and {MAX_PERCPU_BUF} bytes, got {value}"
        )
    return value


def parse_netns_name_length(text: str) -> int:
    """--netns-names-max-length: a uint8 like cilium/pwru's (raised to 10 later)."""
    value = _parse_int(text)
    if not 0 <= value <= MAX_NETNS_NAME_LEN:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_NETNS_NAME_LEN}, got {value}")
    return value


def parse_regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {err}") from None
    return text


def parse_ringbuf_mb(text: str) -> int:
    mb = _parse_count(1)(text)
    if mb & (mb - 1) or mb > MAX_RINGBUF_MB:
        raise argparse.ArgumentTypeError(
            f"ring buffer size must be a power of two between 1 and {MAX_RINGBUF_MB} MiB, got {mb}"
        )
    return int(mb)


def parse_capture_bytes(text: str) -> int:
    value = int(_parse_count(1)(text))
    if value > MAX_CAPTURE_BYTES:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_CAPTURE_BYTES} bytes per event can be captured, got {value}"
        )
    return value


def parse_ip(text: str) -> str:
    try:
        import ipaddress  # only for the flags that take an address

        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IP address {text!r}") from None


def parse_port(text: str) -> int:
    try:
        port = int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= port <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0..65535")
    return port


def parse_proto(text: str) -> str:
    proto = _LEGACY_PROTOS.get(text.strip().lower())
    if proto is None:
        raise argparse.ArgumentTypeError(f"unknown protocol {text!r} (use tcp, udp, icmp or icmp6)")
    return proto


# --- actions -----------------------------------------------------------------


class BoolFlag(argparse.Action):
    """A pflag-style boolean: ``--x`` means true, ``--x=VALUE`` sets VALUE.

    Declared with ``nargs="?"`` so that argparse accepts ``--x=VALUE``;
    ``_pflag_style`` rewrites a bare ``--x`` into ``--x=true`` before parsing,
    so argparse never takes the next word (a pcap-filter word) as the value.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", False)
        super().__init__(option_strings, dest, nargs="?", const=True, type=parse_bool, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


class ListFlag(argparse.Action):
    """A pflag string slice: comma separated, repeatable, appending."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.extend(item.strip() for item in str(values).split(",") if item.strip())
        setattr(namespace, self.dest, items)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows boolean flags as ``--x`` rather than ``--x [X]``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, BoolFlag):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as UsageError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see pwru --help)")


# --- parser ------------------------------------------------------------------

_DESCRIPTION = "Trace packets (struct sk_buff) through the Linux kernel."
_EPILOG = (
    'pcap-filter: a tcpdump expression, see "man 7 pcap-filter". '
    "Boolean flags take an optional value: --output-meta=false."
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pwru",
        usage="%(prog)s [options] [pcap-filter]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,  # pflag has no abbreviations; --output-s would be ambiguous
    )
    p.add_argument("pcap_words", nargs="*", metavar="pcap-filter", help=argparse.SUPPRESS)
    _add_general(p)
    filters = p.add_argument_group("filters")
    _add_filters(filters)
    _add_expression_filters(filters)
    output = p.add_argument_group("output")
    _add_output(output)
    _add_output_file(output)
    _add_evidence(p.add_argument_group("saved traces and packets"))
    _add_legacy(p.add_argument_group("legacy flags (old pwru releases; prefer a pcap-filter)"))
    return p


def _add_general(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("--version", action=BoolFlag, help="show pwru version and exit")
    add("--debug", action=BoolFlag, help="enable debug logging")
    add("--kernel-btf", default="", metavar="FILE", help="specify kernel BTF file")
    add(
        "--kmods",
        action=ListFlag,
        default=[],
        metavar="a,b",
        help="list of kernel modules names to attach to",
    )
    add("--all-kmods", action=BoolFlag, help="attach to all available kernel modules")
    add(
        "--backend",
        default="",
        choices=BACKENDS,
        help="tracing backend ('kprobe', 'kprobe-multi', 'tracepoint'); "
        "will auto-detect if not specified",
    )


def _add_filters(group: argparse._ArgumentGroup) -> None:
    fa = group.add_argument
    fa(
        "--filter-func",
        default="",
        type=parse_regex,
        metavar="REGEX",
        help="filter kernel functions to be probed by name (exact match, supports Python "
        "regular expressions)",
    )
    fa(
        "--filter-non-skb-funcs",
        action=ListFlag,
        default=[],
        metavar="a,b",
        help="filter non-skb kernel functions to be probed (--filter-track-skb-by-stackid "
        "will be enabled)",
    )
    fa(
        "--filter-netns",
        default="",
        metavar="SPEC",
        help='filter netns ("/proc/<pid>/ns/net", "/run/netns/NAME", "NAME", "inode:<inode>")',
    )
    fa(
        "--filter-mark",
        default=(0, 0),
        type=parse_mark,
        metavar="mark[/mask]",
        help="filter skb mark (format: mark[/mask], e.g., 0xa00/0xf00; default: 0/0; "
        "exact match if mask is omitted)",
    )
    fa(
        "--filter-ifname",
        default="",
        metavar="NAME",
        help="filter skb ifname in --filter-netns (if not specified, use current netns)",
    )
    fa(
        "--filter-track-skb",
        action=BoolFlag,
        help="trace a packet even if it does not match given filters (e.g., after NAT or "
        "tunnel decapsulation)",
    )
    fa(
        "--filter-track-skb-by-stackid",
        action=BoolFlag,
        help="also trace skbs the kernel makes on the stack of a matched one (ICMP errors, copies)",
    )
    fa("--filter-trace-tc", action=BoolFlag, help="trace tc BPF programs")
    fa("--filter-trace-xdp", action=BoolFlag, help="trace XDP BPF programs")
    fa(
        "--filter-track-bpf-helpers",
        action=BoolFlag,
        help="trace BPF helper functions (those the traced tc/XDP programs call)",
    )
    fa(
        "--filter-tunnel-pcap-l2",
        default="",
        metavar="EXPR",
        help="pcap expression for the inner packet of vxlan/geneve (l2)",
    )
    fa(
        "--filter-tunnel-pcap-l3",
        default="",
        metavar="EXPR",
        help="pcap expression for the inner packet of vxlan/geneve (l3)",
    )
    fa(
        "--filter-kprobe-batch",
        default=KPROBE_BATCH,
        type=_parse_count(1),
        metavar="N",
        help=f"batch size for kprobe attaching/detaching (default {KPROBE_BATCH})",
    )


def _add_expression_filters(group: argparse._ArgumentGroup) -> None:
    fa = group.add_argument
    fa(
        "--filter-skb-expr",
        default="",
        metavar="EXPR",
        help="filter skb with simple C expression, like 'skb->protocol == 0x0800'",
    )
    fa(
        "--filter-xdp-expr",
        default="",
        metavar="EXPR",
        help="filter xdp with simple C expression, like 'xdp->rxq->dev->ifindex == 9'",
    )


def _add_output(group: argparse._ArgumentGroup) -> None:
    oa = group.add_argument
    oa(
        "--timestamp",
        default="none",
        choices=TIMESTAMPS,
        help="print timestamp per skb: none, current, relative (to the skb's previous event), "
        "absolute (wall clock)",
    )
    oa("--output-meta", action=BoolFlag, default=True, help="print skb metadata (default true)")
    oa("--output-netns-names", action=BoolFlag, help="print network namespace names where known")
    oa(
        "--netns-names-max-length",
        default=DEFAULT_NETNS_NAME_LEN,
        type=parse_netns_name_length,
        metavar="N",
        help=f"characters of a netns name printed in text output "
        f"(default {DEFAULT_NETNS_NAME_LEN}, at least {MIN_NETNS_NAME_LEN})",
    )
    oa("--output-tuple", action=BoolFlag, default=True, help="print L4 tuple (default true)")
    oa("--output-skb", action=BoolFlag, help="print skb")
    oa("--output-skb-shared-info", action=BoolFlag, help="print skb shared info")
    oa("--output-stack", action=BoolFlag, help="print stack")
    oa("--output-bpfmap", action=BoolFlag, help="print function arguments related to bpf maps")
    oa("--output-caller", action=BoolFlag, help="print caller function name")
    oa(
        "--output-limit-lines",
        default=0,
        type=_parse_count(0),
        metavar="N",
        help="exit the program after the number of events has been received/printed "
        "(default 0 = unlimited)",
    )
    oa("--output-skb-cb", action=BoolFlag, help="print skb->cb (what tc programs see as cb[])")
    oa("--output-tcp-flags", action=BoolFlag, help="print TCP flags")
    oa("--output-tunnel", action=BoolFlag, help="print encapsulated tunnel header data")
    oa(
        "--output-skb-metadata",
        action=ListFlag,
        default=[],
        metavar="a,b",
        help=f'print skb metadata (e.g., "skb->mark", "skb->hash"), {MAX_SKB_METADATA} at most',
    )
    oa(
        "--output-xdp-metadata",
        action=ListFlag,
        default=[],
        metavar="a,b",
        help=f'print xdp metadata (e.g., "xdp->rxq->queue_index"), {MAX_SKB_METADATA} at most',
    )
    oa("--output-json", action=BoolFlag, help="output traces as JSON lines")
    oa(
        "--summary",
        action=BoolFlag,
        help="when pwru stops, report the drops: where, why, and what to check",
    )
    oa(
        "--output-per-packet",
        action=BoolFlag,
        help="one block per packet (its clones included): each hop, then its fate",
    )


def _add_output_file(group: argparse._ArgumentGroup) -> None:
    oa = group.add_argument
    oa(
        "--output-file",
        default="",
        metavar="PATH",
        help=f"write traces to PATH (rotated at {DEFAULT_OUTPUT_FILE_MB} MB by default)",
    )
    oa(
        "--output-file-max-size",
        default=DEFAULT_OUTPUT_FILE_MB,
        type=_parse_count(0),
        metavar="MB",
        help=f"rotate the output file at this many MB (default {DEFAULT_OUTPUT_FILE_MB})",
    )
    oa(
        "--output-file-max-backups",
        default=0,
        type=_parse_count(0),
        metavar="N",
        help="rotated files to keep (default 0 = all)",
    )
    oa(
        "--output-file-max-age",
        default=0,
        type=_parse_count(0),
        metavar="DAYS",
        help="days to keep rotated files (default 0 = forever)",
    )
    oa("--output-file-compress", action=BoolFlag, help="gzip rotated files")
    oa(
        "--set-percpu-buf",
        default=DEFAULT_PERCPU_BUF,
        type=parse_percpu_buf,
        metavar="BYTES",
        help=f"size of the buffer --output-skb and --output-skb-shared-info print into "
        f"(default {DEFAULT_PERCPU_BUF})",
    )
    oa("--ready-file", default="", metavar="PATH", help=argparse.SUPPRESS)
    oa(
        "--ringbuf-size",
        default=DEFAULT_RINGBUF_MB,
        type=parse_ringbuf_mb,
        metavar="MB",
        help=f"event ring buffer size in MiB, a power of two (default {DEFAULT_RINGBUF_MB})",
    )


def _add_evidence(group: argparse._ArgumentGroup) -> None:
    ea = group.add_argument
    ea(
        "--output-pcap",
        default="",
        metavar="FILE",
        help="also write the traced packets to FILE (pcapng: one packet per event, "
        "with the function and drop reason as its comment)",
    )
    ea(
        "--capture-bytes",
        default=0,
        type=parse_capture_bytes,
        metavar="N",
        help=f"packet bytes copied per event (default {DEFAULT_CAPTURE_BYTES} with "
        f"--output-pcap; at most {MAX_CAPTURE_BYTES}); with --output-json they are saved too",
    )
    ea(
        "--read",
        default="",
        metavar="FILE",
        help="show a saved trace (--output-json or --output-pcap file) instead of tracing; "
        "needs no privileges",
    )


def _add_legacy(group: argparse._ArgumentGroup) -> None:
    ga = group.add_argument
    ga("--filter-src-ip", type=parse_ip, metavar="IP", help="= 'src host IP'")
    ga("--filter-dst-ip", type=parse_ip, metavar="IP", help="= 'dst host IP'")
    ga("--filter-src-port", type=parse_port, metavar="PORT", help="= 'src port PORT'")
    ga("--filter-dst-port", type=parse_port, metavar="PORT", help="= 'dst port PORT'")
    ga("--filter-port", type=parse_port, metavar="PORT", help="= 'port PORT'")
    ga("--filter-proto", type=parse_proto, metavar="PROTO", help="tcp, udp, icmp or icmp6")
    ga("--filter-pcap", metavar="EXPR", help="= the pcap-filter argument")
    ga("--output-relative-timestamp", action=BoolFlag, help="= --timestamp=relative")


def _pflag_style(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Prepare ``argv`` for argparse so that it reads flags the way pflag does.

    A bare boolean ``--x`` becomes ``--x=true`` (see BoolFlag); ``--x VALUE`` becomes
    ``--x=VALUE`` so that a value may start with "-" (``--filter-func -x``). Returns
    the flags and words before ``--``, and the words after it (always positional;
    handled here because parse_intermixed_args mishandles ``--`` before 3.12).
    """
    bools: set[str] = set()
    takes_value: set[str] = set()
    for action in parser._actions:
        if isinstance(action, BoolFlag):
            bools.update(action.option_strings)
        elif action.nargs != 0:
            takes_value.update(s for s in action.option_strings if s.startswith("--"))
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return out, list(args)
        if arg in bools:
            out.append(arg + "=true")
        elif arg in takes_value:
            value = next(args, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out, []


def _legacy(ns: argparse.Namespace, opts: Options) -> None:
    """Turn legacy filter flags into a pcap expression and notes."""
    terms: list[tuple[str, str, str]] = []  # (flag, value, pcap term)
    if ns.filter_src_ip is not None:
        terms.append(("--filter-src-ip", ns.filter_src_ip, f"src host {ns.filter_src_ip}"))
    if ns.filter_dst_ip is not None:
        terms.append(("--filter-dst-ip", ns.filter_dst_ip, f"dst host {ns.filter_dst_ip}"))
    # As in old pwru, port 0 means "no port filter".
    for flag, port, word in (
        ("--filter-src-port", ns.filter_src_port, "src port"),
        ("--filter-dst-port", ns.filter_dst_port, "dst port"),
        ("--filter-port", ns.filter_port, "port"),
    ):
        if port:
            terms.append((flag, str(port), f"{word} {port}"))
    if ns.filter_proto is not None:
        terms.append(("--filter-proto", ns.filter_proto, ns.filter_proto))
    if ns.filter_pcap:
        terms.append(("--filter-pcap", ns.filter_pcap, f"({ns.filter_pcap})"))
    for flag, value, term in terms:
        opts.notes.append(
            f"legacy flag {flag} {value}: filtering on '{term}'; "
            f"modern spelling: pwru '{term.strip('()')}'"
        )
    if terms:
        legacy = " and ".join(term for _, _, term in terms)
        opts.pcap_filter = f"{legacy} and ({opts.pcap_filter})" if opts.pcap_filter else legacy
    if ns.output_relative_timestamp:
        opts.timestamp = "relative"
        opts.notes.append(
            "legacy flag --output-relative-timestamp: modern spelling: --timestamp=relative"
        )


# Options fields that parse_options computes rather than copies from argparse
_COMPUTED = frozenset(
    ("pcap_filter", "filter_mark", "filter_mark_mask", "ringbuf_size_bytes", "notes")
)


def _check_exprs(ns: argparse.Namespace | Options) -> None:
    """The skb/xdp expressions start where they must; XDP ones need XDP tracing."""
    for kind, example in (("skb", "skb->mark"), ("xdp", "xdp->rxq->queue_index")):
        fields = getattr(ns, f"output_{kind}_metadata")
        if len(fields) > MAX_SKB_METADATA:
            raise UsageError(
                f"--output-{kind}-metadata takes at most {MAX_SKB_METADATA} fields, "
                f"got {len(fields)}"
            )
        for expr in fields:
            if not expr.startswith(kind):
                raise UsageError(
                    f"--output-{kind}-metadata {expr!r} must start with {kind}, e.g. {example}"
                )
        expr = getattr(ns, f"filter_{kind}_expr")
        if expr and not expr.startswith(kind):
            raise UsageError(f"--filter-{kind}-expr {expr!r} must start with {kind}")
    if (ns.filter_xdp_expr or ns.output_xdp_metadata) and not ns.filter_trace_xdp:
        flag = "--filter-xdp-expr" if ns.filter_xdp_expr else "--output-xdp-metadata"
        raise UsageError(f"{flag} applies to XDP programs: add --filter-trace-xdp")


def _check_helpers(ns: argparse.Namespace | Options) -> None:
    """Helpers are shown for the packets of traced tc/XDP programs; map arguments for
    the helpers pwru traces."""
    if ns.filter_track_bpf_helpers and not (ns.filter_trace_tc or ns.filter_trace_xdp):
        raise UsageError(
            "--filter-track-bpf-helpers shows the helpers that traced tc/XDP programs "
            "call: add --filter-trace-tc and/or --filter-trace-xdp"
        )
    if ns.output_bpfmap and not ns.filter_track_bpf_helpers:
        raise UsageError(
            "--output-bpfmap prints map helpers' arguments: add --filter-track-bpf-helpers"
        )


_CHOICES: dict[str, tuple[str, ...]] = {"timestamp": TIMESTAMPS, "backend": ("", *BACKENDS)}


def options_from(**values: Any) -> Options:
    """Options for the Python API: ``Options`` fields by name, values as typed (a
    ``pcap_filter`` string, ``output_meta=False``, ``kmods=["nf_tables"]``); the same
    checks as the command line's. UsageError for an unknown name or a bad value."""
    defaults = Options()
    for name, value in values.items():
        if name not in vars(defaults) or name == "notes":
            import difflib  # only to suggest a name for a misspelt one

            close = difflib.get_close_matches(name, vars(defaults), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown option {name!r}{hint}")
        _check_type(name, value, getattr(defaults, name))
        if name in _CHOICES and value not in _CHOICES[name]:
            raise UsageError(f"option {name}={value!r}: use one of {', '.join(_CHOICES[name])}")
    options = Options(**values)
    _check_exprs(options)
    _check_helpers(options)
    if not 0 <= options.capture_bytes <= MAX_CAPTURE_BYTES:
        raise UsageError(f"option capture_bytes={options.capture_bytes}: 0..{MAX_CAPTURE_BYTES}")
    options.filter_track_skb_by_stackid |= bool(options.filter_non_skb_funcs)
    return options


def _check_type(name: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "list of str" if isinstance(default, list) else type(default).__name__
        raise UsageError(f"option {name}={value!r}: expected {kind}")


def unapplied_filters(options: Options) -> bool:
    """Whether filters were given (with --read they are not applied: a saved trace is
    shown whole)."""
    default = Options()
    names = [name for name in vars(default) if name.startswith("filter_") or name == "pcap_filter"]
    return any(getattr(options, name) != getattr(default, name) for name in names)


def parse_options(argv: Sequence[str]) -> Options:
    """Parse ``argv`` (without the program name). Raises UsageError."""
    parser = build_parser()
    args, tail = _pflag_style(parser, argv)
    ns = parser.parse_intermixed_args(args)
    _check_exprs(ns)
    _check_helpers(ns)
    # every other field has the name of its flag
    copied = {
        f.name: getattr(ns, f.name)
        for f in fields(Options)
        if f.name not in _COMPUTED and hasattr(ns, f.name)
    }
    mark, mask = ns.filter_mark
    opts = Options(
        **copied,
        pcap_filter=" ".join([*ns.pcap_words, *tail]),
        filter_mark=mark,
        filter_mark_mask=mask,
        ringbuf_size_bytes=ns.ringbuf_size << 20,
    )
    # as in pwru: tracing non-skb functions needs tracking by stack id
    opts.filter_track_skb_by_stackid |= bool(ns.filter_non_skb_funcs)
    if opts.netns_names_max_length < MIN_NETNS_NAME_LEN:
        opts.notes.append(
            f"--netns-names-max-length {opts.netns_names_max_length}: raised to the "
            f"minimum, {MIN_NETNS_NAME_LEN} (as cilium/pwru does)"
        )
        opts.netns_names_max_length = MIN_NETNS_NAME_LEN
    _legacy(ns, opts)
    return opts
