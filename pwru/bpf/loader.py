"""Prepare and load pwru's BPF object.

The object ships precompiled (CO-RE) inside the package. Loading it goes:
open -> write the run-time config into .rodata -> choose which programs load
-> libbpf relocates -> our prepare-load hook splices the pcap filters into the
stubs and patches the probe id -> the kernel verifies.

Programs live in pwru's own SEC() names so that libbpf hands them to our hook.
The hook also keeps each program's final instructions, so further copies for
more attach points (one per tracepoint, one per tc/XDP program) are loaded
straight with bpf_prog_load, without reopening the object.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pwru.bpf import libbpf
from pwru.bpf.abi import CONFIG_SIZE, PWRU_SCRATCH_LEVELS, Config
from pwru.bpf.splice import Program, has_probe_id, patch_probe_id, replace_functions
from pwru.errors import EnvironmentProblem
from pwru.trace.probes import Probe

log = logging.getLogger("pwru")

OBJECT_DIR = Path(__file__).parent

# SEC() prefix -> (program type, expected attach type)
SECTIONS: dict[str, tuple[int, int]] = {
    "pwru_tp": (libbpf.BPF_PROG_TYPE_TRACING, libbpf.BPF_TRACE_RAW_TP),
    "pwru_kprobe": (libbpf.BPF_PROG_TYPE_KPROBE, 0),
    "pwru_kprobe_multi": (libbpf.BPF_PROG_TYPE_KPROBE, libbpf.BPF_TRACE_KPROBE_MULTI),
    "pwru_kretprobe": (libbpf.BPF_PROG_TYPE_KPROBE, 0),
    "pwru_fentry": (libbpf.BPF_PROG_TYPE_TRACING, libbpf.BPF_TRACE_FENTRY),
    "pwru_fexit": (libbpf.BPF_PROG_TYPE_TRACING, libbpf.BPF_TRACE_FEXIT),
    # tc programs never attached: tests run the spliced filters with BPF_PROG_TEST_RUN
    "pwru_selftest": (libbpf.BPF_PROG_TYPE_SCHED_CLS, 0),
}


def object_path(machine: str | None = None) -> Path:
    """The packaged BPF object for this CPU architecture."""
    arch = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm64", "arm64": "arm64"}.get(
        (machine or os.uname().machine).lower()
    )
    if arch is None:
        raise EnvironmentProblem(
            f"unsupported CPU architecture {os.uname().machine} (x86_64 and arm64 only)"
        )
    path = OBJECT_DIR / f"pwru_{arch}.bpf.o"
    if not path.is_file():
        raise EnvironmentProblem(
            f"BPF object {path} is missing: the package was built without `make bpf`"
        )
    return path


@dataclass
class LoadRequest:
    """Load one program of the object.

    ``probe_id`` is patched in for programs that carry the probe-id marker
    (tracepoints: one load per attach point); kprobe programs leave it None and
    learn the probe from the BPF cookie given at attach time.
    """

    program: str
    probe_id: int | None = None
    attach_btf_id: int = 0
    attach_prog_fd: int = 0  # fentry/fexit on a BPF program: that program's fd


def first_load_requests(probes: list[Probe]) -> list[LoadRequest]:
    """libbpf loads each program once, bound to the first probe that uses it; the
    others get copies at attach time (ProbeObject.program_fds)."""
    first: dict[str, Probe] = {}
    for probe in probes:
        first.setdefault(probe.program, probe)
    return [
        LoadRequest(p.program, p.id, p.attach_btf_id, attach_prog_fd=p.target_fd)
        for p in first.values()
    ]


@dataclass
class Prepared:
    """A program exactly as it went to the kernel, minus its probe id."""

    prog_type: int
    expected_attach_type: int
    code: bytes
    func_info: tuple[bytes, int]
    line_info: tuple[bytes, int]
    prog_btf_fd: int
    numbered: bool  # carries the probe-id marker: each copy gets its probe's id


@dataclass
class _LoadContext:
    obj: libbpf.BpfObject
    requests: Mapping[str, LoadRequest]
    filters: Mapping[str, bytes]
    prepared: dict[str, Prepared] = field(default_factory=dict)
    splice_seconds: float = 0.0


_active: _LoadContext | None = None
_handlers: list[libbpf.ProgHandler] = []


def _make_hook(prog_type: int, attach_type: int) -> libbpf.PrepareHook:
    def hook(prog: libbpf.BpfProgram, attrs: libbpf.LoadAttrs) -> None:
        ctx = _active
        if ctx is None or prog.name not in ctx.requests:
            return
        request = ctx.requests[prog.name]
        program = Program(prog.insns(), *attrs.func_info, *attrs.line_info)
        if ctx.filters:
            started = time.perf_counter()
            program = replace_functions(
                program, ctx.filters, lambda tid: ctx.obj.btf_name(tid).name
            )
            ctx.splice_seconds += time.perf_counter() - started
            attrs.set_func_info(program.func_info, program.func_info_rec_size)
            attrs.set_line_info(program.line_info, program.line_info_rec_size)
        numbered = request.probe_id is not None and has_probe_id(program.code)
        ctx.prepared[prog.name] = Prepared(
            prog_type,
            attach_type,
            program.code,
            (program.func_info, program.func_info_rec_size),
            (program.line_info, program.line_info_rec_size),
            attrs.prog_btf_fd,
            numbered,
        )
        if numbered and request.probe_id is not None:
            prog.set_insns(patch_probe_id(program.code, request.probe_id))
        elif ctx.filters:
            prog.set_insns(program.code)
        if request.attach_btf_id:
            attrs.attach_btf_id = request.attach_btf_id
        if request.attach_prog_fd:
            attrs.attach_prog_fd = request.attach_prog_fd

    return hook


def _register_handlers() -> None:
    """libbpf matches SEC() names at open time, so handlers exist before any open."""
    if not _handlers:
        for section, (prog_type, attach_type) in SECTIONS.items():
            hook = _make_hook(prog_type, attach_type)
            _handlers.append(libbpf.ProgHandler(section + "+", prog_type, attach_type, hook))


class ProbeObject:
    """The loaded pwru object: its maps, its programs, and copies made from them."""

    def __init__(
        self, obj: libbpf.BpfObject, prepared: dict[str, Prepared], splice_seconds: float = 0.0
    ) -> None:
        self._bpf = obj
        self.prepared = prepared
        self.splice_seconds = splice_seconds  # time spent editing instructions
        self.events = obj.map("events")
        self._lost = obj.map("lost_events")

    def program(self, name: str) -> libbpf.BpfProgram:
        """A program of the object, as libbpf loaded it."""
        return self._bpf.program(name)

    def program_fd(self, name: str) -> int:
        return self._bpf.program(name).fd

    def load_copy(
        self, program: str, probe_id: int, attach_btf_id: int = 0, attach_prog_fd: int = 0
    ) -> int:
        """Load another copy of ``program`` for one more attach point; returns its fd."""
        p = self.prepared[program]
        return libbpf.prog_load(
            p.prog_type,
            program,
            patch_probe_id(p.code, probe_id) if p.numbered else p.code,
            expected_attach_type=p.expected_attach_type,
            attach_btf_id=attach_btf_id,
            attach_prog_fd=attach_prog_fd,
            prog_btf_fd=p.prog_btf_fd,
            func_info=p.func_info,
            line_info=p.line_info,
        )

    def program_fds(self, probes: list[Probe], fds: list[int]) -> Iterator[tuple[Probe, int]]:
        """Each probe with the program fd that serves it: libbpf's load for the first
        probe of each program, a fresh copy for the others (added to ``fds`` at once,
        so the caller releases it whatever happens next)."""
        loaded_by_libbpf: set[str] = set()
        copied: list[Probe] = []
        for probe in probes:
            if probe.program in loaded_by_libbpf:
                copied.append(probe)
            loaded_by_libbpf.add(probe.program)
        copies = iter(self._load_copies(copied, fds))
        loaded_by_libbpf.clear()
        for probe in probes:
            if probe.program not in loaded_by_libbpf:
                loaded_by_libbpf.add(probe.program)
                yield probe, self.program_fd(probe.program)
            else:
                yield probe, next(copies)

    def _load_copies(self, probes: list[Probe], fds: list[int]) -> list[int]:
        """A copy per probe, loaded on every CPU at once: the kernel verifies each copy
        again (~3 ms here, far longer in a slow guest), and ctypes lets other threads
        run meanwhile. Each fd goes to ``fds`` as soon as it exists (list.append is
        atomic); the first failure, in probe order, is raised once all loads ended."""

        def one(probe: Probe) -> int:
            fd = self.load_copy(probe.program, probe.id, probe.attach_btf_id, probe.target_fd)
            fds.append(fd)
            return fd

        workers = min(len(probes), os.cpu_count() or 1, 8)
        if workers < 2:
            return [one(probe) for probe in probes]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, probe) for probe in probes]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def attach_raw(self, probes: list[Probe], fds: list[int]) -> None:
        """Attach tp_btf/fentry/fexit probes (BPF_RAW_TRACEPOINT_OPEN; the attach point
        was fixed at load). Each fd goes to ``fds`` as soon as it exists, so the caller
        can release everything if a later step fails."""
        for probe, prog_fd in self.program_fds(probes, fds):
            fds.append(libbpf.raw_tracepoint_open(prog_fd))
            log.debug("attached %s to %s %s", probe.program, probe.kind.value, probe.name)

    def lost_events(self) -> int:
        """Events the BPF side could not put into the ring buffer, over all CPUs."""
        return sum(self._lost.lookup_percpu_u64(0))

    def close(self) -> None:
        self._bpf.close()


def load(
    config: Config,
    requests: list[LoadRequest],
    filters: Mapping[str, bytes],
    ringbuf_bytes: int,
    btf_custom_path: str | None = None,
    path: Path | None = None,
) -> ProbeObject:
    """Open the object, configure it, and load the requested programs."""
    global _active
    _register_handlers()
    obj = libbpf.BpfObject.open_file(str(path or object_path()), btf_custom_path=btf_custom_path)
    try:
        rodata = obj.map(".rodata")
        if rodata.initial_size() != CONFIG_SIZE:
            raise EnvironmentProblem(
                f"BPF object .rodata is {rodata.initial_size()} bytes, expected {CONFIG_SIZE}: "
                "object and package are out of step (rebuild with `make bpf`)"
            )
        rodata.set_initial_value(bytes(config))
        obj.map("events").set_max_entries(ringbuf_bytes)
        scratch = obj.map("scratch")  # records with packet bytes: one per CPU and level
        if config.capture_bytes:
            scratch.set_max_entries(libbpf.possible_cpus() * PWRU_SCRATCH_LEVELS)
        else:
            scratch.set_max_entries(1)
            scratch.set_value_size(8)
        wanted = {r.program: r for r in requests}
        for prog in obj.programs():
            prog.set_autoload(prog.name in wanted)
        ctx = _LoadContext(obj, wanted, filters)
        _active = ctx
        try:
            obj.load()
        finally:
            _active = None
            for handler in _handlers:
                handler.keep.clear()  # the kernel has copied func/line info
                handler.reraise()
        return ProbeObject(obj, ctx.prepared, ctx.splice_seconds)
    except BaseException:
        obj.close()
        raise
