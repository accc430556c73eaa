"""pwru.kernel.features answers that need no privileges: module BTF, and what a refused
kprobe-multi test link means."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pwru.bpf.libbpf import LibbpfError
from pwru.errors import EnvironmentProblem
from pwru.kernel import features


def machine(tmp_path: Path, modules: list[str], btf: list[str]) -> tuple[str, str]:
    (tmp_path / "btf").mkdir()
    for name in ["vmlinux", *btf]:
        (tmp_path / "btf" / name).write_bytes(b"")
    listing = "".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in modules)
    (tmp_path / "modules").write_text(listing)
    return str(tmp_path / "btf"), str(tmp_path / "modules")


def test_module_btf_missing_on_5_10(tmp_path: Path) -> None:
    """Modules loaded and none has BTF: the kernel has no module BTF (before 5.11)."""
    btf_dir, modules = machine(tmp_path, ["veth", "nf_tables"], [])
    answer = features.module_btf(btf_dir, modules)
    assert not answer
    assert "no BTF for modules (2 loaded" in answer.why_not
    assert "Linux 5.11+ with CONFIG_DEBUG_INFO_BTF_MODULES" in answer.why_not
    with pytest.raises(EnvironmentProblem, match=r"^--kmods cannot work here: this kernel"):
        answer.require("--kmods")


@pytest.mark.parametrize(
    ("modules", "btf"), [(["veth"], ["veth"]), ([], []), (["veth", "tun"], ["tun"])]
)
def test_module_btf_present_or_unknown(tmp_path: Path, modules: list[str], btf: list[str]) -> None:
    btf_dir, listing = machine(tmp_path, modules, btf)
    assert features.module_btf(btf_dir, listing)


def test_kprobe_multi_refusals_name_config_fprobe() -> None:
    """6.1 (FPROBE off) answers EOPNOTSUPP, 5.10 (no such link type) EINVAL: both
    messages say what is missing; other errors are passed on."""
    off = features._why_no_kprobe_multi(LibbpfError("attach", -errno.EOPNOTSUPP))
    old = features._why_no_kprobe_multi(LibbpfError("attach", -errno.EINVAL))
    assert off == "this kernel has no kprobe-multi (CONFIG_FPROBE is off)"
    assert old.startswith("this kernel has no kprobe-multi (") and "CONFIG_FPROBE" in old
    assert "5.18" in old
    other = features._why_no_kprobe_multi(LibbpfError("attach", -errno.EBUSY))
    assert other.startswith("kprobe-multi attach failed") and "CONFIG_FPROBE" not in other
