"""choose_skb_loads: which plain-load paths a run takes, from the planned programs and
the kernel's answers (faked here; tests/kernel/test_filter_diff.py asks the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from pwru.bpf import config as config_module
from pwru.bpf.abi import Config
from pwru.bpf.config import SKB_BTF_CAST_STUB, choose_skb_loads
from pwru.filter import ebpf
from pwru.kernel import features
from pwru.kernel.btf import Member

SKB, CAST, KFREE_TP, HEAD = 870, 65330, 4242, 192


class FakeBtf:
    """The four lookups choose_skb_loads makes; ``cast`` None: a kernel before 6.2."""

    def __init__(self, cast: int | None = CAST) -> None:
        self.ids = {"sk_buff": SKB, "bpf_rdonly_cast": cast, "btf_trace_kfree_skb": KFREE_TP}
        self.lookups = 0

    def find_type_id(self, name: str, kind: str) -> int | None:
        self.lookups += 1
        return self.ids[name]

    def struct_member(self, tid: int, name: str) -> Member:
        assert (tid, name) == (SKB, "head")
        return Member(HEAD * 8, 1, 0)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """What the fake kernel allows: the cast in kprobes, and direct packet loads."""
    allows = {"cast": True, "direct": True}

    def cast(cast_id: int, skb: int, head: int, direct: bool) -> features.Feature:
        assert (cast_id, skb, head) == (CAST, SKB, HEAD)
        return features.Feature(allows["cast"] and (allows["direct"] or not direct), "no")

    def direct(tracepoint: int, head: int) -> features.Feature:
        assert (tracepoint, head) == (KFREE_TP, HEAD)
        return features.Feature(allows["direct"], "no")

    monkeypatch.setattr(config_module.features, "kprobe_btf_cast", cast)
    monkeypatch.setattr(config_module.features, "skb_direct_loads", direct)
    return allows


def choose(btf: Any, programs: list[str], pcap_direct: bool) -> tuple[Config, dict[str, bytes]]:
    config = Config()
    return config, choose_skb_loads(config, btf, programs, pcap_direct)


def test_default_tracepoint_run_asks_nothing(kernel: dict[str, bool]) -> None:
    """No filter with direct bodies, no kprobe: not even a BTF lookup (start-up time)."""
    btf = FakeBtf()
    config, bodies = choose(btf, ["pwru_tp_skb0", "pwru_tp_kfree_skb"], pcap_direct=False)
    assert (bodies, config.kprobe_btf, config.filter_direct, btf.lookups) == ({}, 0, 0, 0)


def test_kprobes_get_the_cast_body(kernel: dict[str, bool]) -> None:
    config, bodies = choose(FakeBtf(), ["pwru_km_skb0", "pwru_km_kfree_reason"], True)
    assert (config.kprobe_btf, config.filter_direct) == (1, 1)
    listing = ebpf.disassemble(ebpf.decode(bodies[SKB_BTF_CAST_STUB]))
    assert [line.split(": ", 1)[1] for line in listing] == [
        f"r2 = {SKB}",
        f"call kfunc#{CAST}",
        "exit",
    ]


def test_before_6_2_kprobes_keep_the_helpers(kernel: dict[str, bool]) -> None:
    config, bodies = choose(FakeBtf(cast=None), ["pwru_kp_skb1"], True)
    assert (bodies, config.kprobe_btf, config.filter_direct) == ({}, 0, 0)


def test_direct_bodies_need_every_program_kind_to_allow_them(kernel: dict[str, bool]) -> None:
    """6.12: the cast works, packet bytes do not load directly; the tracepoints then
    keep the window body too, since one .rodata switch serves both."""
    kernel["direct"] = False
    config, bodies = choose(FakeBtf(), ["pwru_tp_skb0", "pwru_km_skb0"], True)
    assert (config.kprobe_btf, config.filter_direct) == (1, 0)
    assert SKB_BTF_CAST_STUB in bodies


def test_looping_filter_keeps_the_helper_bodies(kernel: dict[str, bool]) -> None:
    config, _ = choose(FakeBtf(), ["pwru_tp_skb0", "pwru_km_skb0"], pcap_direct=False)
    assert (config.kprobe_btf, config.filter_direct) == (1, 0)
