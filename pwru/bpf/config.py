"""The run-time configuration the BPF programs read from .rodata, built in one place.

``struct pwru_config`` (pwru.bpf.abi.Config) holds the meta filters (netns, mark,
interface), which optional filters were spliced in, what each event carries, and
what follows it in the ring record. The verifier sees these values as constants
and prunes the code of everything switched off.
"""

from __future__ import annotations

import ctypes
from collections.abc import Collection
from dataclasses import dataclass

from pwru.bpf.abi import (
    EVENT_SIZE,
    PWRU_CAPTURE_MASK,
    PWRU_MAX_STACK_FRAMES,
    PWRU_SCRATCH_SIZE,
    PWRU_SKB_CB_LEN,
    Config,
    RawBpfmap,
    RawPacket,
)
from pwru.errors import UsageError
from pwru.filter import ebpf
from pwru.kernel import features
from pwru.kernel.btf import KernelBtf
from pwru.kernel.directmap import NO_DIRECT_MAP, DirectMap
from pwru.kernel.netns import resolve_ifindex, resolve_netns
from pwru.options import Options

STACK_FRAMES_FOR_CALLER = 8
SKB_BTF_CAST_STUB = "skb_btf_cast"  # enough to step over tracing frames to the caller


@dataclass(frozen=True)
class Spliced:
    """Which optional filter stubs get a body (the rest accept everything)."""

    pcap: bool = False
    tunnel: bool = False
    skb_expr: bool = False
    skb_metadata: bool = False
    xdp_expr: bool = False
    xdp_metadata: bool = False
    loops: bool = False  # a pcap filter body loops (libpcap's protochain)


def build_config(
    options: Options, spliced: Spliced, direct_map: DirectMap = NO_DIRECT_MAP
) -> Config:
    """Meta filters and output switches for ``options``; resolves --filter-netns and
    --filter-ifname (UsageError when they name nothing). ``direct_map``: where page
    fragments are read from (packet bytes past the linear area)."""
    config = Config()
    if options.filter_netns:
        config.netns = resolve_netns(options.filter_netns)
    if options.filter_ifname:
        config.ifindex = resolve_ifindex(options.filter_ifname, options.filter_netns)
    config.mark = options.filter_mark
    config.mark_mask = options.filter_mark_mask
    # as cilium/pwru: netns names need the netns, which comes with the metadata
    config.output_meta = int(options.output_meta or options.output_netns_names)
    config.output_tuple = int(options.output_tuple)
    # stack owners are tracked skbs (parse_options turns by-stackid on for non-skb funcs)
    config.track_skb_by_stackid = int(options.filter_track_skb_by_stackid)
    config.track_skb = int(options.filter_track_skb or options.filter_track_skb_by_stackid)
    config.output_tunnel = int(options.output_tunnel)
    if options.output_stack:
        config.stack_frames = PWRU_MAX_STACK_FRAMES
    elif options.output_caller:
        config.stack_frames = STACK_FRAMES_FOR_CALLER
    # --set-percpu-buf: bytes of bpf_snprintf_btf output per event
    config.skb_text_len = options.set_percpu_buf if options.output_skb else 0
    config.shinfo_text_len = options.set_percpu_buf if options.output_skb_shared_info else 0
    config.output_cb = int(options.shows_cb)
    config.have_pcap_filter = int(spliced.pcap)
    config.have_tunnel_filter = int(spliced.tunnel)
    config.filter_loops = int(spliced.loops)
    config.have_skb_expr = int(spliced.skb_expr)
    config.output_skb_metadata = int(spliced.skb_metadata)
    config.have_xdp_expr = int(spliced.xdp_expr)
    config.output_xdp_metadata = int(spliced.xdp_metadata)
    config.track_bpf_helpers = int(options.filter_track_bpf_helpers)
    set_kprobe_helpers(config)
    # the drop summary and the per-packet view want nf_hook_slow's hook and clone births
    config.diagnose = int(options.summary or options.output_per_packet)
    _set_capture(config, options.capture_size, direct_map, bpfmap=options.output_bpfmap)
    return config


def choose_skb_loads(
    config: Config, btf: KernelBtf, programs: Collection[str], pcap_direct: bool
) -> dict[str, bytes]:
    """How the planned ``programs`` read the skb, each way feature-probed, set in
    ``config``; returns the stub bodies that go with it.

    * config.kprobe_btf: kprobes turn their skb address into a BTF-typed pointer
      (``bpf_rdonly_cast``) and load its fields directly, as tp_btf programs do;
    * config.filter_direct: the pcap filter loads packet bytes directly too
      (``pcap_direct``: it has such bodies; 6.18+ kernels allow it), set only when
      every kind of planned program may.
    """
    kprobes = any(p.startswith(("pwru_kp_", "pwru_km_")) for p in programs)
    tracepoints = any(p.startswith("pwru_tp_") for p in programs)
    if not kprobes and not (pcap_direct and tracepoints):
        return {}  # nothing to ask (the BTF lookups cost a few ms of the start)
    ids = _SkbIds.find(btf)
    if ids is None:
        return {}
    bodies: dict[str, bytes] = {}
    if kprobes and ids.cast_ok(direct=False):
        config.kprobe_btf = 1
        bodies[SKB_BTF_CAST_STUB] = ids.cast_body()
    if pcap_direct and (tracepoints or config.kprobe_btf):
        tracepoints_ok = not tracepoints or ids.tracepoint_direct_ok()
        kprobes_ok = not config.kprobe_btf or ids.cast_ok(direct=True)
        config.filter_direct = int(tracepoints_ok and kprobes_ok)
    return bodies


@dataclass(frozen=True)
class _SkbIds:
    """The BTF ids and offset the skb-access probes and the cast stub need."""

    skb: int  # struct sk_buff
    head_offset: int  # of skb->head, bytes
    cast: int | None  # FUNC bpf_rdonly_cast (6.2+)
    kfree_tracepoint: int | None  # typedef btf_trace_kfree_skb

    @classmethod
    def find(cls, btf: KernelBtf) -> _SkbIds | None:
        skb = btf.find_type_id("sk_buff", "struct")
        head = btf.struct_member(skb, "head") if skb is not None else None
        if skb is None or head is None:
            return None
        cast = btf.find_type_id("bpf_rdonly_cast", "func")
        tracepoint = btf.find_type_id("btf_trace_kfree_skb", "typedef")
        return cls(skb, head.offset_bits // 8, cast, tracepoint)

    def cast_ok(self, direct: bool) -> bool:
        return self.cast is not None and bool(
            features.kprobe_btf_cast(self.cast, self.skb, self.head_offset, direct)
        )

    def tracepoint_direct_ok(self) -> bool:
        tracepoint = self.kfree_tracepoint
        return tracepoint is not None and bool(
            features.skb_direct_loads(tracepoint, self.head_offset)
        )

    def cast_body(self) -> bytes:
        """skb_btf_cast's body: return bpf_rdonly_cast(r1, <struct sk_buff>)."""
        assert self.cast is not None
        insns = [ebpf.mov64_imm(ebpf.R2, self.skb), ebpf.call_kfunc(self.cast), ebpf.exit_insn()]
        return ebpf.encode(insns)


def set_kprobe_helpers(config: Config) -> None:
    """Which helpers kprobes may call: the verifier of a kernel without them (5.10)
    rejects a program that calls them, unless .rodata switches the call off."""
    if features.kprobes():
        config.kprobe_cookie = int(bool(features.attach_cookies()))
        config.kprobe_func_ip = int(bool(features.kprobe_func_ip()))


def record_size(config: Config) -> int:
    """Bytes of a record before its packet bytes (struct pwru_event and the extras)."""
    stack: int = config.stack_frames * 8
    texts: int = config.skb_text_len + config.shinfo_text_len
    return EVENT_SIZE + stack + texts + (PWRU_SKB_CB_LEN if config.output_cb else 0)


def _set_capture(config: Config, capture: int, direct_map: DirectMap, bpfmap: bool) -> None:
    """Packet bytes per event; the record must leave room in the BPF side's scratch
    buffer for what the verifier lets a copy reach (see PWRU_SCRATCH_SIZE in bpf/pwru.h)
    and, with --output-bpfmap, for a map helper's struct pwru_bpfmap after the packet."""
    if not capture:
        return
    reach = ctypes.sizeof(RawPacket) + 2 * (PWRU_CAPTURE_MASK + 1)
    if bpfmap:
        reach += ctypes.sizeof(RawBpfmap)
    if record_size(config) + reach > PWRU_SCRATCH_SIZE:
        raise UsageError(
            "packet bytes do not fit beside the other outputs asked for "
            f"({record_size(config)} bytes of event, stack and skb texts)"
        )
    config.capture_bytes = capture
    config.page_offset_base, config.vmemmap_base, config.page_shift = direct_map
