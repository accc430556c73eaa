"""One pwru run, from options to the last printed line: the stages in order.

options -> filters compiled -> kernel and privileges checked -> BPF config ->
backends chosen and planned -> object loaded -> probes attached -> records read
and printed -> everything released. Each stage lives in its subpackage; this
module only calls them in order and owns what must be released.
``Session.close()`` runs on every exit path (normal end, Ctrl-C, SIGTERM, errors
mid-attach); closing file descriptors is what detaches BPF links, so even a
killed pwru leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Callable

from pwru.bpf import loader
from pwru.bpf.abi import Config
from pwru.bpf.config import Spliced, build_config, choose_skb_loads
from pwru.bpf.ringbuf import Ring, open_ring
from pwru.errors import EnvironmentProblem, UsageError
from pwru.filter.pcap import compile_filters
from pwru.filter.skbexpr import compile_skb_exprs
from pwru.kernel import features
from pwru.kernel.btf import VMLINUX, KernelBtf
from pwru.kernel.directmap import NO_DIRECT_MAP, direct_map
from pwru.kernel.kallsyms import Kallsyms
from pwru.options import Options, unapplied_filters
from pwru.output.decode import RecordLayout
from pwru.output.names import SystemNames
from pwru.output.printer import LimitReached, Output, Printer, check_writable, open_output
from pwru.output.render import make_renderer
from pwru.output.sinks import make_sinks
from pwru.trace import select
from pwru.trace.backend import Backend, TraceContext
from pwru.trace.probes import ProbeTable

log = logging.getLogger("pwru")

POLL_MS = 100
REPLAY_BATCH = 1000  # lines written at once when a saved trace is read back
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """Ends the run: a stop signal was seen."""


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


def func_matcher(options: Options) -> Callable[[str], bool]:
    """--filter-func is a full-match regular expression over probe names."""
    if not options.filter_func:
        return lambda _name: True
    pattern = re.compile(options.filter_func)
    return lambda name: pattern.fullmatch(name) is not None


class Session:
    """Loads, attaches, reads and prints; close() undoes everything."""

    def __init__(
        self, options: Options, stop: StopFlag, printer_class: type[Printer] = Printer
    ) -> None:
        self.options = options
        self.stop = stop
        self.printer_class = printer_class  # the Python API's collects events instead
        self.table = ProbeTable()
        self.parts: list[Backend] = []
        self.obj: loader.ProbeObject | None = None
        self.ring: Ring | None = None
        self.out: Output | None = None
        self.printer: Printer | None = None
        self._ksyms: Kallsyms | None = None

    def ksyms(self) -> Kallsyms:
        """/proc/kallsyms, read once and only when something needs it."""
        if self._ksyms is None:
            self._ksyms = Kallsyms.load()
        return self._ksyms

    def setup(self) -> None:
        options = self.options
        # usage errors first: a bad expression is reported even without privileges
        pcap = compile_filters(
            options.pcap_filter, options.filter_tunnel_pcap_l2, options.filter_tunnel_pcap_l3
        )
        kernel_btf = KernelBtf.load(options.kernel_btf or VMLINUX)
        skb = compile_skb_exprs(options, kernel_btf)
        features.check_privileges()
        features.raise_fd_limit()
        features.ringbuf().require("pwru")
        # tp_btf programs attach by the running kernel's own BTF ids
        running_btf = KernelBtf.load(VMLINUX) if options.kernel_btf else kernel_btf
        config = build_config(
            options,
            Spliced(
                pcap.pcap,
                pcap.tunnel,
                skb.has_filter,
                skb.has_metadata,
                skb.has_xdp_filter,
                skb.has_xdp_metadata,
                pcap.loops,
            ),  # fmt: skip
            direct_map() if options.capture_size else NO_DIRECT_MAP,
        )
        if pcap.bodies:
            log.debug("filters compiled and translated in %.1f ms", pcap.seconds * 1000)
        self.out = open_output(options)
        check_writable(options.output_pcap, "--output-pcap")
        wanted = func_matcher(options)
        self._plan(TraceContext(options, kernel_btf, running_btf, self.ksyms, wanted))
        skb_loads = self._choose_skb_loads(config, running_btf, pcap.direct)
        self.stop.check()
        self.obj = loader.load(
            config,
            self.requests,
            filters={**pcap.bodies, **skb.bodies, **skb_loads},
            ringbuf_bytes=options.ringbuf_size_bytes,
            btf_custom_path=options.kernel_btf or None,
        )
        self.stop.check()
        names = SystemNames(
            probe_name=lambda ev: self.table.event_name(ev.probe_id, ev.func_ip),
            drop_reasons=kernel_btf.drop_reasons(),
            ksyms=self.ksyms,
        )
        self.printer = self.printer_class(
            make_renderer(options, names, metadata=skb.fields, xdp_metadata=skb.xdp_fields),
            self.out,
            RecordLayout.of(config),
            limit=options.output_limit_lines,
            name_at=lambda addr: self.ksyms().name_at(addr),
            lines=not options.output_per_packet,
        )
        # before attaching: what sinks do to set up (the drop summary reads firewall
        # counters with iptables-save/nft) is not traced
        self.printer.sinks = make_sinks(options, self.printer, names, self.table)
        self.printer.use_line_cache()
        self._attach()
        self.stop.check()
        self.ring = open_ring(
            self.obj.events.fd, options.ringbuf_size_bytes, self.printer.on_record
        )
        self._signal_ready()
        for parsed in (kernel_btf, running_btf):
            parsed.release()  # nothing reads types once every probe is attached
        self.printer.flush()

    def _plan(self, ctx: TraceContext) -> None:
        """Choose the backends and number every probe; their notes go to stderr."""
        self.parts = select.choose(ctx, note)
        self.requests = [r for part in self.parts for r in part.plan(self.table)]
        for part in self.parts:
            for line in part.notes:
                note(line)

    def _choose_skb_loads(
        self, config: Config, btf: KernelBtf, pcap_direct: bool
    ) -> dict[str, bytes]:
        """Plain loads of skb fields and packet bytes where the kernel allows them."""
        bodies = choose_skb_loads(config, btf, [r.program for r in self.requests], pcap_direct)
        log.debug(
            "kprobes read the skb %s; the pcap filter reads packets with %s",
            "with plain loads (bpf_rdonly_cast)" if config.kprobe_btf else "with helpers",
            "plain loads" if config.filter_direct else "bpf_probe_read_kernel",
        )
        return bodies

    def _attach(self) -> None:
        assert self.obj is not None
        started = time.monotonic()
        fragments = [part.attach(self.obj, lambda: bool(self.stop.signal)) for part in self.parts]
        summary = ", ".join(f for f in fragments if f)
        note(f"{summary} in {time.monotonic() - started:.2f} s")

    def _signal_ready(self) -> None:
        """--ready-file: created once every probe is attached (for scripts and tests)."""
        if self.options.ready_file:
            try:
                Path(self.options.ready_file).touch()
            except OSError as error:
                raise EnvironmentProblem(
                    f"cannot create --ready-file {self.options.ready_file}: {error.strerror}"
                ) from None

    def run(self) -> None:
        """Read and print until a stop signal or the line limit."""
        assert self.ring is not None and self.printer is not None
        while True:
            self.ring.poll(POLL_MS)
            self.printer.flush()
            self.stop.check()

    def close(self, drain: bool) -> None:
        """Detach and unload everything; report events the kernel could not deliver.

        ``drain``: print what was still in the ring (a normal stop, not an error).
        """
        detached = sum(part.close() for part in self.parts)
        log.debug("detached in %.2f s", detached)
        if drain and self.ring is not None and self.printer and not self.printer.full:
            with contextlib.suppress(OSError, LimitReached):
                self.ring.consume()
        lost = 0
        if self.obj is not None:
            with contextlib.suppress(OSError):
                lost = self.obj.lost_events()
        if self.ring is not None:
            self.ring.close()
        if self.obj is not None:
            self.obj.close()
        if self.printer is not None:
            with contextlib.suppress(OSError):
                self.printer.close(flush=drain)
        elif self.out is not None:
            self.out.close()
        if lost:
            note(f"{lost} events lost: the ring buffer was full (a larger --ringbuf-size helps)")


def replay(options: Options) -> int:
    """--read: show a saved trace with the usual outputs; no privileges, no BPF."""
    from pwru.output.readback import open_trace  # only --read needs them
    from pwru.output.savedtrace import reading_options

    trace = open_trace(options.read)
    shown = reading_options(trace.header.options, options)
    if shown.output_pcap and not trace.header.options.capture_bytes:
        trace.close()
        raise UsageError(
            f"{options.read} holds no packet bytes for --output-pcap "
            "(it was recorded without --output-pcap or --capture-bytes)"
        )
    if unapplied_filters(options):
        note("--read shows the whole trace: filters given with it are not applied")
    try:
        out = open_output(shown)
    except UsageError:
        trace.close()
        raise
    renderer = make_renderer(
        shown,
        trace.names,
        wall_offset_ns=trace.header.wall_offset_ns,
        metadata=trace.header.metadata,
    )
    printer = Printer(
        renderer,
        out,
        RecordLayout(),
        limit=shown.output_limit_lines,
        lines=not shown.output_per_packet,
    )
    try:
        printer.sinks = make_sinks(shown, printer, trace.names)
        for event, extras in trace.events():
            printer.add(event, extras)
            if len(printer.pending) >= REPLAY_BATCH:
                printer.flush()
    except LimitReached:
        pass
    finally:
        trace.close()
        printer.close(flush=True)  # what was read before any damage is shown
    return 0


def settle() -> None:
    """Once ready, free what setting up left behind and keep what remains out of every
    later garbage collection: while tracing, the command then holds less memory and
    spends no time scanning its own modules (the Python API leaves the caller's
    collector alone)."""
    gc.collect()
    gc.freeze()
    gc.enable()  # the command disables collections while setting up (cli.main)


def run(options: Options) -> int:
    """Trace until a signal or the line limit; returns the exit code."""
    if options.read:
        gc.enable()  # a long trace is read with the collector on, as before
        return replay(options)
    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    session = Session(options, stop)
    started = time.monotonic()
    stopped_normally = False
    try:
        session.setup()
        log.debug("ready after %.3f s", time.monotonic() - started)
        settle()
        session.run()
    except (Stop, LimitReached, KeyboardInterrupt):
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
