"""What this machine lets pwru do, each asked once by trying the smallest thing.

Every check answers from the kernel itself (a file it exports, or a two-instruction
program it loads or refuses), never from a version number, so backported or disabled
features are seen as they are. Answers are memoised for the life of the process and
carry a one-line reason when the answer is no; auto-selection, error messages and
tests that need a feature all ask here.

Privileges and the open-file limit are process matters rather than kernel features,
but they decide the same question — can pwru run as asked — so they live here too.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
from dataclasses import dataclass

from pwru.bpf import libbpf
from pwru.bpf.libbpf import LibbpfError
from pwru.errors import EnvironmentProblem
from pwru.filter import ebpf
from pwru.filter.opcodes import AluOp
from pwru.kernel.btf import VMLINUX

_KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"
_RETURN_0 = bytes.fromhex("b7000000000000009500000000000000")  # r0 = 0; exit

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

BPF_FUNC_GET_FUNC_IP = 173
BPF_FUNC_GET_ATTACH_COOKIE = 174
NO_KPROBE_MULTI = "this kernel has no kprobe-multi (CONFIG_FPROBE is off)"

FD_LIMIT = 1 << 16  # kprobes hold two fds each; ~2,400 functions and tc copies need more than 1024


@dataclass(frozen=True)
class Feature:
    """One answer: ``ok``, or why not in words a user can act on."""

    ok: bool
    why_not: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def require(self, what: str) -> None:
        """Raise EnvironmentProblem naming ``what`` (e.g. a flag) when the answer is no."""
        if not self.ok:
            raise EnvironmentProblem(f"{what} cannot work here: {self.why_not}")


YES = Feature(True)


@functools.cache
def btf(path: str = VMLINUX) -> Feature:
    """Kernel BTF, which CO-RE, tp_btf and discovery all need."""
    if os.access(path, os.R_OK):
        return YES
    return Feature(False, f"no kernel BTF at {path} (is CONFIG_DEBUG_INFO_BTF enabled?)")


@functools.cache
def kprobes() -> Feature:
    """kprobes (the perf kprobe PMU, which libbpf attaches through)."""
    if os.path.exists(_KPROBE_PMU):
        return YES
    return Feature(False, "this kernel has no kprobes (CONFIG_KPROBES/CONFIG_KPROBE_EVENTS off)")


@functools.cache
def kprobe_multi(addr: int) -> Feature:
    """kprobe-multi links (CONFIG_FPROBE, 5.18+): a no-op program attached at ``addr``."""
    try:
        fd = libbpf.prog_load(
            libbpf.BPF_PROG_TYPE_KPROBE,
            "pwru_feature",
            _RETURN_0,
            expected_attach_type=libbpf.BPF_TRACE_KPROBE_MULTI,
        )
    except LibbpfError as error:
        return Feature(False, f"kprobe-multi programs do not load: {error}")
    try:
        os.close(libbpf.link_create_kprobe_multi(fd, [addr]))
    except LibbpfError as error:
        return Feature(False, _why_no_kprobe_multi(error))
    finally:
        os.close(fd)
    return YES


def _why_no_kprobe_multi(error: LibbpfError) -> str:
    """EOPNOTSUPP: the kernel knows kprobe-multi links but was built without FPROBE;
    EINVAL: it does not know the attach type at all (before 5.18)."""
    if error.errno == errno.EOPNOTSUPP:
        return NO_KPROBE_MULTI
    if error.errno == errno.EINVAL:
        return (
            "this kernel has no kprobe-multi (it does not know the link type: "
            "Linux 5.18+ with CONFIG_FPROBE needed)"
        )
    return f"kprobe-multi attach failed: {error}"


@functools.cache
def attach_cookies() -> Feature:
    """BPF cookies in kprobes (bpf_get_attach_cookie, 5.15+): each event names its probe."""
    return _kprobe_helper(BPF_FUNC_GET_ATTACH_COOKIE, "bpf_get_attach_cookie")


@functools.cache
def kprobe_func_ip() -> Feature:
    """bpf_get_func_ip in kprobes (5.15+): the probed address without register arithmetic."""
    return _kprobe_helper(BPF_FUNC_GET_FUNC_IP, "bpf_get_func_ip")


def _kprobe_helper(helper_id: int, name: str) -> Feature:
    try:
        if libbpf.probe_helper(libbpf.BPF_PROG_TYPE_KPROBE, helper_id):
            return YES
    except LibbpfError as error:
        return Feature(False, f"cannot probe {name} in kprobes: {error}")
    return Feature(False, f"kprobes cannot call {name} here (Linux 5.15+ needed)")


@functools.cache
def module_btf(btf_dir: str = "/sys/kernel/btf", modules: str = "/proc/modules") -> Feature:
    """BTF of kernel modules (5.11+, CONFIG_DEBUG_INFO_BTF_MODULES): with modules loaded
    and none of them in ``btf_dir``, the kernel has none."""
    try:
        with open(modules) as f:
            loaded = [line.split(maxsplit=1)[0] for line in f if line.strip()]
        listed = set(os.listdir(btf_dir)) - {"vmlinux"}
    except OSError:
        return YES  # cannot tell: the per-module check says what is missing
    if loaded and not listed:
        return Feature(
            False,
            f"this kernel has no BTF for modules ({len(loaded)} loaded, none in {btf_dir}: "
            "Linux 5.11+ with CONFIG_DEBUG_INFO_BTF_MODULES needed)",
        )
    return YES


def _refusal(
    prog_type: int, name: str, insns: bytes, expected_attach_type: int = 0, attach_btf_id: int = 0
) -> LibbpfError | None:
    """Load a test program and close it: None if the kernel took it, else its refusal."""
    try:
        fd = libbpf.prog_load(
            prog_type,
            name,
            insns,
            expected_attach_type=expected_attach_type,
            attach_btf_id=attach_btf_id,
            log_size=4096,
        )
    except LibbpfError as error:
        return error
    os.close(fd)
    return None


@functools.cache
def fexit(attach_btf_id: int) -> Feature:
    """fexit programs on the kernel function with this BTF id (some kernels refuse
    every fentry/fexit program with EPERM)."""
    error = _refusal(
        libbpf.BPF_PROG_TYPE_TRACING,
        "pwru_fexit_test",
        _RETURN_0,
        expected_attach_type=libbpf.BPF_TRACE_FEXIT,
        attach_btf_id=attach_btf_id,
    )
    if error:
        return Feature(False, f"the kernel refuses fexit: {os.strerror(error.errno or 0)}")
    return YES


@functools.cache
def skb_direct_loads(attach_btf_id: int, head_offset: int) -> Feature:
    """Plain loads from a tp_btf program's ``skb->head`` (6.18+ types it as read-only
    untrusted memory; older kernels as a number): the pcap filter's fast path.
    ``attach_btf_id``: a tracepoint whose first argument is the skb."""
    insns = ebpf.encode([
        ebpf.ldx_mem(8, ebpf.R2, ebpf.R1, 0),  # the skb
        ebpf.ldx_mem(8, ebpf.R3, ebpf.R2, head_offset),  # skb->head
        ebpf.ldx_mem(1, ebpf.R4, ebpf.R3, 0),  # a byte at a constant offset ...
        ebpf.alu64_reg(AluOp.ADD, ebpf.R3, ebpf.R4),
        ebpf.ldx_mem(2, ebpf.R0, ebpf.R3, 1),  # ... and at a variable one
        ebpf.mov64_imm(ebpf.R0, 0),
        ebpf.exit_insn(),
    ])  # fmt: skip
    error = _refusal(
        libbpf.BPF_PROG_TYPE_TRACING,
        "pwru_direct",
        insns,
        expected_attach_type=libbpf.BPF_TRACE_RAW_TP,
        attach_btf_id=attach_btf_id,
    )
    if error:
        return Feature(False, f"plain loads from skb->head are refused: {error}")
    return YES


@functools.cache
def kprobe_btf_cast(cast_id: int, skb_id: int, head_offset: int, direct: bool) -> Feature:
    """kprobes calling ``bpf_rdonly_cast`` (FUNC id ``cast_id``) on their skb address,
    to load its fields with plain loads; with ``direct``, also packet bytes from
    ``skb->head`` (as tp_btf programs do on 6.18+)."""
    insns = [
        ebpf.ldx_mem(8, ebpf.R1, ebpf.R1, 0),  # a register of the probed function
        ebpf.mov64_imm(ebpf.R2, skb_id),
        ebpf.call_kfunc(cast_id),
        ebpf.ldx_mem(8, ebpf.R3, ebpf.R0, head_offset),  # skb->head
    ]
    if direct:
        insns.append(ebpf.ldx_mem(1, ebpf.R4, ebpf.R3, 0))
    insns += [ebpf.mov64_imm(ebpf.R0, 0), ebpf.exit_insn()]
    error = _refusal(libbpf.BPF_PROG_TYPE_KPROBE, "pwru_kp_btf", ebpf.encode(insns))
    if error:
        return Feature(False, f"kprobes cannot read the skb through bpf_rdonly_cast: {error}")
    return YES


@functools.cache
def ringbuf() -> Feature:
    """BPF ring buffers (5.8+), which carry every event."""
    if libbpf.probe_map_type(libbpf.BPF_MAP_TYPE_RINGBUF):
        return YES
    return Feature(False, "this kernel has no BPF ring buffer (Linux 5.8+ needed)")


def _effective_capabilities() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_privileges() -> None:
    """pwru loads tracing programs: root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN).

    Asks the effective capability set, not the uid: root in a container or
    under a cleared bounding set cannot load programs either.
    """
    caps = _effective_capabilities()
    has_bpf = caps & (1 << CAP_BPF) or caps & (1 << CAP_SYS_ADMIN)
    has_perfmon = caps & (1 << CAP_PERFMON) or caps & (1 << CAP_SYS_ADMIN)
    if not (has_bpf and has_perfmon):
        raise EnvironmentProblem("pwru needs root (or CAP_BPF and CAP_PERFMON): run it with sudo")


def raise_fd_limit() -> None:
    """Lift the open-file limit: the default 1024 is too few for one kprobe per function."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= FD_LIMIT:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(hard, FD_LIMIT)))
    except (ValueError, OSError):  # not allowed to raise the hard limit: go as far as it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
