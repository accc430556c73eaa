"""--filter-track-bpf-helpers: kprobes on the kernel functions traced tc/XDP programs call.

Which functions: the verifier leaves every call of a loaded program in its translated
instructions (what ``bpftool prog dump xlated`` shows) as ``call imm``, with the callee
at ``__bpf_call_base + imm``: helpers (``bpf_skb_load_bytes``), and the map operations
it calls directly (``htab_map_update_elem``, ``__htab_map_lookup_elem``). Reading those
needs no instruction decoder of the CPU (cilium/pwru disassembles the JIT's x86 code).

Attribution: the traced programs' fentry marks the packet they handle on this CPU
and their fexit unmarks it (bpf/pwru.bpf.c); a helper kprobe reports the marked
packet. With --output-bpfmap, functions whose first parameter is the map and whose
name ends in ``_update_elem``, ``_delete_elem`` or ``_lookup_elem`` get programs that
also copy the map's id, name, key and value (lookups: the value when they return).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pwru.bpf import libbpf
from pwru.bpf.loader import LoadRequest, ProbeObject
from pwru.filter import ebpf
from pwru.filter.opcodes import CallSrc, Class, JmpOp
from pwru.kernel import features
from pwru.kernel.btf import KernelBtf, Kind
from pwru.kernel.kallsyms import Kallsyms
from pwru.trace.backend import ProbeSet, Stopped, TraceContext
from pwru.trace.kprobe import attach_keeping
from pwru.trace.probes import Probe, ProbeKind, ProbeTable
from pwru.trace.tcxdp import TcXdpPrograms

log = logging.getLogger("pwru")

CALL_BASE = "__bpf_call_base"
HELPER_PROGRAM = "pwru_kp_helper"
LOOKUP_RETURN = "pwru_krp_map_lookup"
ELEM_LOOKUP = "__htab_map_lookup_elem"  # returns its struct htab_elem, not the value
MAP_PROGRAMS = {
    "_update_elem": "pwru_kp_map_update",
    "_delete_elem": "pwru_kp_map_delete",
    "_lookup_elem": "pwru_kp_map_lookup",
}
BATCH = 4
NAMES_SHOWN = 6  # in the note; the rest are counted


@dataclass(frozen=True)
class Callee:
    """A kernel function a traced program calls."""

    name: str
    addr: int


def called_addresses(code: bytes, call_base: int) -> Iterator[int]:
    """Addresses of the kernel functions that translated instructions call: helpers and
    kfuncs (BPF-to-BPF calls are the program's own)."""
    call = Class.JMP | JmpOp.CALL
    for insn in ebpf.decode(code):
        if insn.code == call and insn.src in (CallSrc.HELPER, CallSrc.KFUNC) and insn.imm:
            yield call_base + insn.imm


def callees(programs: Iterable[bytes], ksyms: Kallsyms) -> list[Callee]:
    """The functions the programs call, each once, by name; addresses that are not the
    start of a kernel function (a kfunc call still named by BTF id) are left out."""
    base = ksyms.address(CALL_BASE)
    if base is None:
        return []
    found: dict[str, Callee] = {}
    for code in programs:
        for addr in called_addresses(code, base):
            symbol = ksyms.symbol_at(addr)
            if symbol is not None and symbol.addr == addr and symbol.module != "bpf":
                found.setdefault(symbol.name, Callee(symbol.name, addr))
    return sorted(found.values(), key=lambda c: c.name)


def takes_map(btf: KernelBtf, name: str) -> bool:
    """The function's first parameter is the map: ``struct bpf_map *``, or a ``u64 map``
    (helpers defined with BPF_CALL_x take u64 arguments)."""
    tid = btf.find_type_id(name, Kind.FUNC)
    if tid is None:
        return False
    params = btf.func_params(tid)
    if not params or not params[0][1]:
        return False
    pname, ptype = params[0]
    real = btf.resolve(ptype)
    if btf.kind(real) == Kind.PTR:
        pointee = btf.resolve(btf.target(real))
        return btf.kind(pointee) == Kind.STRUCT and btf.type_name(pointee) == "bpf_map"
    return pname == "map" and btf.kind(real) == Kind.INT


def program_for(btf: KernelBtf, name: str, bpfmap: bool) -> str:
    """The kprobe program for a callee: a map program with --output-bpfmap, else the
    plain helper program."""
    if bpfmap:
        for suffix, program in MAP_PROGRAMS.items():
            if name.endswith(suffix) and takes_map(btf, name):
                return program + ("_htab" if name == ELEM_LOOKUP else "")
    return HELPER_PROGRAM


class BpfHelperProbes(ProbeSet):
    """A kprobe on each function the traced tc/XDP programs call (and a kretprobe on
    each map lookup, with --output-bpfmap)."""

    def __init__(self, ctx: TraceContext, programs: TcXdpPrograms) -> None:
        super().__init__(ctx)
        self.programs = programs  # planned first: its targets are the traced programs
        self.lookups: list[Probe] = []

    def plan(self, table: ProbeTable) -> list[LoadRequest]:
        features.kprobes().require("--filter-track-bpf-helpers")
        codes = [libbpf.xlated_code(t.fd) for t in self.programs.targets]
        found = callees(codes, self.ctx.ksyms())
        bpfmap = self.ctx.options.output_bpfmap
        for callee in found:
            program = program_for(self.ctx.kernel_btf, callee.name, bpfmap)
            probe = table.add(callee.name, ProbeKind.KPROBE, program, addr=callee.addr)
            self.probes.append(probe)
            if program.startswith(MAP_PROGRAMS["_lookup_elem"]):
                self.lookups.append(probe)
        self.notes.append(self._note(found))
        requests = {p.program for p in self.probes} | ({LOOKUP_RETURN} if self.lookups else set())
        return [LoadRequest(name) for name in sorted(requests)]

    @staticmethod
    def _note(found: list[Callee]) -> str:
        if not found:
            return "the traced programs call no BPF helper"
        names = ", ".join(c.name for c in found[:NAMES_SHOWN])
        more = f" and {len(found) - NAMES_SHOWN} more" if len(found) > NAMES_SHOWN else ""
        return f"{len(found)} BPF helpers the traced programs call: {names}{more}"

    def attach(self, obj: ProbeObject, stopped: Stopped) -> str:
        def failed(probe: Probe, error: OSError) -> None:
            log.warning("--filter-track-bpf-helpers: cannot probe %s: %s", probe.name, error)

        attached = attach_keeping(obj, self.probes, BATCH, stopped, self.held, failed)
        returns = obj.program(LOOKUP_RETURN) if self.lookups else None
        for probe in self.lookups:
            assert returns is not None
            try:
                self.held.links.append(returns.attach_kprobe_addr(probe.addr, retprobe=True))
            except OSError as error:
                log.warning("--output-bpfmap: no values for %s: %s", probe.name, error)
        return f"{attached} BPF helpers"
