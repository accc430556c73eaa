"""What this machine lets pwru do, asked cheaply and explained in one line.

Each check answers from the kernel's own interfaces (procfs, sysfs), never
from version numbers, so that backported or disabled features are seen as
they are.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from pwru.errors import EnvironmentProblem

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
_KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


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


FD_LIMIT = 1 << 16  # kprobes hold two fds each; ~2,400 functions and tc copies need more than 1024


def raise_fd_limit() -> None:
    """Lift the open-file limit: the default 1024 is too few for one kprobe per function."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= FD_LIMIT:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(hard, FD_LIMIT)))
    except (ValueError, OSError):  # not allowed to raise the hard limit: go as far as it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True)
class Backends:
    """Which tracing backends can work here, and why not where they cannot."""

    kprobe: bool
    kprobe_reason: str

    @classmethod
    def probe(cls) -> Backends:
        if os.path.exists(_KPROBE_PMU):
            return cls(True, "")
        return cls(False, "this kernel has no kprobes (CONFIG_KPROBES/CONFIG_KPROBE_EVENTS off)")
