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
from pwru.kernel.btf import VMLINUX

_KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"
_RETURN_0 = bytes.fromhex("b7000000000000009500000000000000")  # r0 = 0; exit

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

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
        if error.errno == errno.EOPNOTSUPP:
            return Feature(False, "this kernel has no kprobe-multi (CONFIG_FPROBE is off)")
        return Feature(False, f"kprobe-multi attach failed: {error}")
    finally:
        os.close(fd)
    return YES


@functools.cache
def fexit(attach_btf_id: int) -> Feature:
    """fexit programs on the kernel function with this BTF id (some kernels refuse
    every fentry/fexit program with EPERM)."""
    try:
        fd = libbpf.prog_load(
            libbpf.BPF_PROG_TYPE_TRACING,
            "pwru_fexit_test",
            _RETURN_0,
            expected_attach_type=libbpf.BPF_TRACE_FEXIT,
            attach_btf_id=attach_btf_id,
            log_size=4096,
        )
    except LibbpfError as error:
        return Feature(False, f"the kernel refuses fexit: {os.strerror(error.errno or 0)}")
    os.close(fd)
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
