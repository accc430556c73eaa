"""One pwru run, from options to the last printed line.

The stages follow the design notes: options -> capabilities -> probe discovery
-> filter compilation -> program preparation -> attach -> events -> rendering.
Everything that gets loaded or attached is released in ``Session.close()``,
which runs on every exit path (normal end, Ctrl-C, SIGTERM, errors mid-attach).
Closing file descriptors is what detaches BPF links, so even a killed pwru
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import struct
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Callable

from pwru.bpf import loader
from pwru.bpf.abi import (
    EVENT_SIZE,
    PWRU_EVENT_HAS_STACK,
    PWRU_EVENT_KPROBE,
    PWRU_EVENT_KPROBE_MULTI,
    PWRU_MAX_STACK_FRAMES,
    Config,
)
from pwru.bpf.libbpf import RingBuffer
from pwru.errors import EnvironmentProblem, UsageError
from pwru.filter.pcap import compile_filters
from pwru.filter.skbexpr import FILTER_STUB, METADATA_STUB, skb_expr_bodies
from pwru.kernel import features
from pwru.kernel.btf import KernelBtf
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options
from pwru.output.decode import Event, decode_event
from pwru.output.names import SystemNames, resolve_ifindex, resolve_netns
from pwru.output.render import Renderer, make_renderer
from pwru.trace import backend, tcxdp
from pwru.trace.probes import ProbeTable

log = logging.getLogger("pwru")

POLL_MS = 100


class Stop(Exception):
    """Ends the run: a stop signal was seen, or the line limit was reached."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopFlag:
    """Set by SIGINT/SIGTERM/SIGHUP; checked between steps.

    The handler only records the signal: an exception raised from a signal
    handler could land inside a ctypes callback, where ctypes would swallow it.
    """

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name

    def check(self) -> None:
        if self.signal:
            raise Stop(self.signal)


def note(message: str) -> None:
    """A one-line remark for the user on stderr (not an error)."""
    print(f"pwru: {message}", file=sys.stderr, flush=True)


STACK_FRAMES_FOR_CALLER = 8  # enough to step over tracing frames to the caller
SKB_TEXT_LEN = 4096  # bytes of bpf_snprintf_btf output per event (cilium/pwru's default)


def build_config(options: Options) -> Config:
    """Meta filters and output switches, as the BPF side reads them from .rodata."""
    config = Config()
    if options.filter_netns:
        config.netns = resolve_netns(options.filter_netns)
    if options.filter_ifname:
        config.ifindex = resolve_ifindex(options.filter_ifname, options.filter_netns)
    config.mark = options.filter_mark
    config.mark_mask = options.filter_mark_mask
    config.output_meta = int(options.output_meta)
    config.output_tuple = int(options.output_tuple)
    # stack owners are tracked skbs (parse_options turns by-stackid on for non-skb funcs)
    config.track_skb_by_stackid = int(options.filter_track_skb_by_stackid)
    config.track_skb = int(options.filter_track_skb or options.filter_track_skb_by_stackid)
    config.output_tunnel = int(options.output_tunnel)
    if options.output_stack:
        config.stack_frames = PWRU_MAX_STACK_FRAMES
    elif options.output_caller:
        config.stack_frames = STACK_FRAMES_FOR_CALLER
    config.skb_text_len = SKB_TEXT_LEN if options.output_skb else 0
    config.shinfo_text_len = SKB_TEXT_LEN if options.output_skb_shared_info else 0
    return config


# Frames that belong to the tracing machinery, not to the traced code path.
_TRACING_FRAMES = (
    "bpf_",
    "__bpf_",
    "__traceiter_",
    "trace_",
    "perf_",
    "kprobe",
    "ftrace",
    "fprobe",
)


def caller_of(event: Event, frames: list[int], ksyms: Kallsyms) -> int:
    """The address pwru shows as CALLER: for a kprobe, the return address into the
    function that called the probed one; for a tracepoint, the first frame past the
    tracing machinery (the function that hit the tracepoint)."""
    names = [(ip, ksyms.name_at(ip) or "") for ip in frames]
    if event.type in (PWRU_EVENT_KPROBE, PWRU_EVENT_KPROBE_MULTI):
        probed = names[0][1] if names else ""
        for ip, name in names[1:]:
            if name != probed and not name.startswith(_TRACING_FRAMES):
                return ip
        return 0
    for ip, name in names:
        if not name.startswith(_TRACING_FRAMES):
            return ip
    return 0


def func_matcher(options: Options) -> Callable[[str], bool]:
    """--filter-func is a full-match regular expression over probe names."""
    if not options.filter_func:
        return lambda _name: True
    pattern = re.compile(options.filter_func)
    return lambda name: pattern.fullmatch(name) is not None


class Session:
    """Loads, attaches, reads and prints; close() undoes everything."""

    def __init__(self, options: Options, stop: StopFlag) -> None:
        self.options = options
        self.stop = stop
        self.held = backend.Attachments(batch=options.filter_kprobe_batch)
        self.targets: tcxdp.Targets | None = None
        self.obj: loader.ProbeObject | None = None
        self.ring: RingBuffer | None = None
        self.out: IO[str] | None = None
        self.printed = 0
        self.table = ProbeTable()
        self._ksyms: Kallsyms | None = None
        self.stack_frames = 0
        self.skb_text_len = 0
        self.shinfo_text_len = 0

    def ksyms(self) -> Kallsyms:
        """/proc/kallsyms, read once and only when something needs it."""
        if self._ksyms is None:
            self._ksyms = Kallsyms.load()
        return self._ksyms

    # -- setup -----------------------------------------------------------------

    def setup(self) -> None:
        options = self.options
        # usage errors first: a bad expression is reported even without privileges
        compiled = compile_filters(
            options.pcap_filter, options.filter_tunnel_pcap_l2, options.filter_tunnel_pcap_l3
        )
        kernel_btf = KernelBtf.load(options.kernel_btf or features.KERNEL_BTF)
        skb_bodies, self.metadata_fields = skb_expr_bodies(options, kernel_btf)
        features.check_privileges()
        features.raise_fd_limit()
        config = build_config(options)
        config.have_skb_expr = int(FILTER_STUB in skb_bodies)
        config.output_skb_metadata = int(METADATA_STUB in skb_bodies)
        config.have_pcap_filter = int(compiled.pcap)
        config.have_tunnel_filter = int(compiled.tunnel)
        self.stack_frames = config.stack_frames
        self.skb_text_len = config.skb_text_len
        self.shinfo_text_len = config.shinfo_text_len
        if compiled.bodies:
            log.debug("filters compiled and translated in %.1f ms", compiled.seconds * 1000)
        self.out = self._open_output()

        self.drop_reasons = kernel_btf.drop_reasons()
        # tp_btf programs attach by the running kernel's own BTF ids
        running_btf = (
            kernel_btf if not options.kernel_btf else KernelBtf.load(features.KERNEL_BTF)
        )
        name = backend.requested(options, note)
        chosen = backend.plan(
            options, name, kernel_btf, running_btf, self.ksyms, self.table, func_matcher(options)
        )
        self.targets = chosen.targets
        for line in chosen.notes:
            note(line)

        self.stop.check()
        self.obj = loader.load(
            config,
            chosen.requests,
            filters={**compiled.bodies, **skb_bodies},
            ringbuf_bytes=options.ringbuf_size_bytes,
            btf_custom_path=options.kernel_btf or None,
        )
        self.stop.check()
        backend.attach(options, chosen, self.obj, self.held, note, lambda: bool(self.stop.signal))
        self.stop.check()

        names = SystemNames(
            probe_name=lambda ev: self.table.name(ev.probe_id),
            drop_reasons=self.drop_reasons,
            ksyms=self.ksyms,
        )
        self.renderer: Renderer = make_renderer(options, names, metadata=self.metadata_fields)
        self.ring = RingBuffer(self.obj.events.fd, self._on_sample)
        self.pending: list[str] = []
        if options.ready_file:
            try:
                Path(options.ready_file).touch()
            except OSError as error:
                raise EnvironmentProblem(
                    f"cannot create --ready-file {options.ready_file}: {error.strerror}"
                ) from None
        header = self.renderer.header()
        if header is not None:
            self.pending.append(header)
        self._flush()

    def _open_output(self) -> IO[str]:
        """Open --output-file before anything is loaded, so a bad path costs nothing."""
        if not self.options.output_file:
            return sys.stdout
        try:
            # closed in close(), which every exit path runs
            return open(self.options.output_file, "w")  # noqa: SIM115
        except OSError as error:
            raise UsageError(
                f"cannot write --output-file {self.options.output_file}: {error.strerror}"
            ) from None

    # -- events ----------------------------------------------------------------

    def _on_sample(self, data: bytes) -> None:
        event: Event = decode_event(data)
        if len(data) > EVENT_SIZE:
            self.pending.append(self._render_with_extras(event, data))
        else:
            self.pending.append(self.renderer.render(event))
        self.printed += 1
        limit = self.options.output_limit_lines
        if limit and self.printed >= limit:
            raise Stop("output limit reached")

    def _render_with_extras(self, event: Event, data: bytes) -> str:
        """Events followed by a stack and/or BTF-printed skb text (see bpf/pwru.h)."""
        offset = EVENT_SIZE
        stack: list[str] = []
        if self.stack_frames:
            frames: list[int] = []
            if event.flags & PWRU_EVENT_HAS_STACK:
                raw = struct.unpack_from(f"{self.stack_frames}Q", data, offset)
                frames = [ip for ip in raw if ip]
            offset += self.stack_frames * 8
            if self.options.output_caller:
                event = event._replace(caller_ip=caller_of(event, frames, self.ksyms()))
            if self.options.output_stack:
                stack = [self.renderer.names.symbol(ip) for ip in frames]  # cached
                while stack and stack[0].startswith(_TRACING_FRAMES):
                    stack.pop(0)  # pwru's own program and the trace/kprobe glue
        texts = {}
        for what, length in (("skb", self.skb_text_len), ("shinfo", self.shinfo_text_len)):
            if length:
                texts[what] = (
                    data[offset : offset + length].split(b"\0", 1)[0].decode(errors="replace")
                )
                offset += length
        return self.renderer.render(
            event, stack, skb_text=texts.get("skb", ""), shinfo_text=texts.get("shinfo", "")
        )

    def _flush(self) -> None:
        if self.pending and self.out is not None:
            self.out.write("\n".join(self.pending) + "\n")
            self.out.flush()
            self.pending.clear()

    def run(self) -> None:
        assert self.ring is not None
        while True:
            self.ring.poll(POLL_MS)
            self._flush()
            self.stop.check()

    # -- teardown --------------------------------------------------------------

    def drain(self) -> None:
        """Print what was already in the ring when tracing stopped (detach first)."""
        if self.ring is None or self.out is None:
            return
        limit = self.options.output_limit_lines
        if not (limit and self.printed >= limit):
            with contextlib.suppress(Stop):
                self.ring.consume()
        self._flush()

    def close(self, drain: bool) -> None:
        """Detach and unload everything; report events the kernel could not deliver.

        ``drain``: print what was still in the ring (a normal stop, not an error).
        """
        log.debug("detached in %.2f s", self.held.close())
        if self.targets is not None:
            self.targets.close()
        if drain:
            with contextlib.suppress(OSError, Stop):
                self.drain()
        lost = 0
        if self.obj is not None:
            with contextlib.suppress(OSError):
                lost = self.obj.lost_events()
        if self.ring is not None:
            self.ring.close()
        if self.obj is not None:
            self.obj.close()
        if self.out is not None and self.out is not sys.stdout:
            self.out.close()
        if lost:
            note(f"{lost} events lost: the ring buffer was full (a larger --ringbuf-size helps)")


def run(options: Options) -> int:
    """Trace until a signal or the line limit; returns the exit code."""
    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    session = Session(options, stop)
    started = time.monotonic()
    stopped_normally = False
    try:
        session.setup()
        log.debug("ready after %.3f s", time.monotonic() - started)
        session.run()
    except (Stop, KeyboardInterrupt):
        stopped_normally = True
    except OSError:
        if stop.signal is None:
            raise  # a real failure; a stop signal may interrupt a syscall: that is a stop
        stopped_normally = True
    finally:
        session.close(drain=stopped_normally)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
