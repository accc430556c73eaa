"""The caller pwru shows and the frames of a stack worth showing."""

from __future__ import annotations

from pwru.bpf import abi
from pwru.output.stack import caller_of, shown_frames
from tests.unit.test_render import EV

SYMBOLS = {
    1: "bpf_prog_0123456789abcdef_pwru_tp_skb0",
    2: "bpf_trace_run3",
    3: "__bpf_trace_net_dev_xmit",
    4: "dev_hard_start_xmit",
    5: "__dev_queue_xmit",
    6: "ip_finish_output2",
    7: "kprobe_ftrace_handler",
}


def name_at(addr: int) -> str | None:
    return SYMBOLS.get(addr)


TRACEPOINT = EV._replace(type=abi.PWRU_EVENT_TRACEPOINT, caller_ip=0)


def test_tracepoint_caller_is_below_the_function_that_hit_it() -> None:
    assert caller_of(TRACEPOINT, [1, 2, 3, 4, 5, 6], name_at) == 5
    assert caller_of(TRACEPOINT, [1, 2, 3, 4], name_at) == 0  # no frame below it


def test_caller_given_by_the_probe_wins() -> None:
    # kfree_skb / consume_skb: the BPF side put the tracepoint's location argument there
    assert caller_of(TRACEPOINT._replace(caller_ip=0x99), [1, 2, 3, 4, 5], name_at) == 0x99


def test_kprobe_caller_is_the_first_other_function() -> None:
    kprobe = EV._replace(type=abi.PWRU_EVENT_KPROBE, caller_ip=0)
    assert caller_of(kprobe, [4, 7, 4, 5, 6], name_at) == 5
    multi = kprobe._replace(type=abi.PWRU_EVENT_KPROBE_MULTI)
    assert caller_of(multi, [4, 5], name_at) == 5


def test_tc_caller_is_the_first_frame_past_the_machinery() -> None:
    tc = EV._replace(type=abi.PWRU_EVENT_TC, caller_ip=0)
    assert caller_of(tc, [1, 2, 4, 5], name_at) == 4


def test_shown_frames_skip_the_machinery_on_top() -> None:
    symbol = lambda addr: SYMBOLS.get(addr, f"{addr:#x}")  # noqa: E731
    assert shown_frames([1, 2, 3, 4, 5], symbol) == ["dev_hard_start_xmit", "__dev_queue_xmit"]
