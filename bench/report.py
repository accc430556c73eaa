"""The goals of issue #12 as one table of ratios per run (docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Goal:
    """One row: what was measured against what issue #12 asks for."""

    name: str
    measured: str  # "n/a" when not measured
    goal: str
    ok: bool | None  # None: nothing to judge
    detail: str


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "-"


def at_least(name: str, value: float | None, goal: float, detail: str) -> Goal:
    if value is None:
        return Goal(name, "n/a", f"≥ {goal}×", None, detail)
    return Goal(name, f"{value:.2f}×", f"≥ {goal}×", value >= goal, detail)


def drain_goals(d: Mapping[str, Any]) -> list[Goal]:
    c_runs = d["runs"]["c"]
    c_lost = sum(r["lost"] for r in c_runs)
    saturated = (
        "the C consumer lost events (saturated)"
        if c_lost
        else ("the C consumer lost nothing: it kept up with the flood, so its rate is the flood's")
    )
    goals = []
    for output, goal in (("text", 0.8), ("json", 0.7), ("pcap", 0.5)):
        ratio = d.get(f"{output}_ratio")
        if ratio is None:
            detail = "pwru --help lists no --output-pcap yet"
        else:
            detail = (
                f"{d[f'{output}_events_per_s'] / 1000:.0f}k vs C {d['c_events_per_s'] / 1000:.0f}k "
                f"events/s; rounds {spread(d[f'{output}_ratio_rounds'])}; per CPU-second of "
                f"the consumer {d[f'{output}_events_per_cpu_s'] / 1000:.0f}k vs C "
                f"{d['c_events_per_cpu_s'] / 1000:.0f}k"
            )
            if output == "text":
                detail += f"; {saturated}"
        goals.append(at_least(f"drain: {output} to a file / C consumer", ratio, goal, detail))
    return goals


def burst_rows(b: Mapping[str, Any]) -> list[Goal]:
    """Drain capacity with the CPUs to itself (no goal in the issue: context for the above)."""
    c = b["c"]
    rows = []
    for output in ("text", "json", "pcap"):
        if f"{output}_ratio" in b:
            rows.append(
                Goal(
                    f"burst: {output}, emptying a full ring",
                    f"{b[f'{output}_events_per_s'] / 1000:.0f}k/s",
                    "(info)",
                    None,
                    f"{b[output]['events']} events of a full {b['ring_mb']} MiB ring in "
                    f"{b[output]['seconds']:.1f} s, the flood stopped; C: {c['events']} in "
                    f"{c['seconds'] * 1000:.0f} ms (wake-up included)",
                )
            )
    return rows


def loss_goals(no_loss: Mapping[str, Any] | None, acct: Mapping[str, Any] | None) -> list[Goal]:
    goals = []
    if no_loss is not None:
        goals.append(
            Goal(
                f"no loss at {no_loss['offered_events_per_s'] / 1000:.0f}k events/s",
                f"{no_loss['lost_printed']} lost",
                "0 lost",
                bool(no_loss["no_loss"]),
                f"{no_loss['written']} written of {no_loss['offered_events']} offered "
                f"(independent count) in {no_loss['seconds']:.0f} s",
            )
        )
    if acct is not None:
        exact = acct["printed_equals_map"] and acct["written_plus_lost_equals_offered"]
        goals.append(
            Goal(
                "lost printed = kernel's count (overload)",
                f"{acct['lost_printed']} printed",
                "exact",
                bool(exact),
                f"lost_events map {acct['lost_in_map']}; written {acct['written']} + lost = "
                f"{acct['written'] + acct['lost_printed']} vs offered {acct['offered_events']}",
            )
        )
    return goals


def overhead_goal(o: Mapping[str, Any], prefix: str, name: str, goal: float) -> Goal:
    pps = {who: o[f"{prefix}_{who}_pps"] / 1000 for who in ("pwru", "floor", "untraced")}
    cpu = f"{prefix}_cpu_pwru_vs_floor"
    detail = (
        f"pwru {pps['pwru']:.1f}k, floor {pps['floor']:.1f}k, untraced {pps['untraced']:.1f}k "
        f"pps; rounds {spread(o[f'{prefix}_pwru_vs_floor_rounds'])}; floor/untraced "
        f"{o[f'{prefix}_floor_vs_untraced']:.2f}, pwru/untraced "
        f"{o[f'{prefix}_pwru_vs_untraced']:.2f}; per CPU-second: pwru/floor {o[cpu]:.2f} "
        f"(rounds {spread(o[f'{cpu}_rounds'])}), floor/untraced "
        f"{o[f'{prefix}_cpu_floor_vs_untraced']:.2f}"
    )
    return at_least(name, o[f"{prefix}_pwru_vs_floor"], goal, detail)


def bpf_cost_row(c: Mapping[str, Any]) -> Goal:
    """Not a goal of its own: the BPF side of the row above, in nanoseconds per hit."""
    pwru, floor = c["pwru"], c["floor"]
    return Goal(
        "  BPF run time per probe hit, pwru / floor",
        f"{pwru['ns_per_run']:.0f} / {floor['ns_per_run']:.0f} ns",
        "-",
        None,
        f"kernel.bpf_stats_enabled; {pwru['runs_per_packet']:.1f} hits per packet; pwru's own "
        f"work {c['pwru_minus_floor_ns']:.0f} ns per hit",
    )


def host_goals(r: Mapping[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    if "drain" in r:
        goals += drain_goals(r["drain"])
    if "burst" in r:
        goals += burst_rows(r["burst"])
    goals += loss_goals(r.get("no_loss"), r.get("lost_accounting"))
    if "overhead" in r:
        goals.append(
            overhead_goal(r["overhead"], "tp", "non-matching filter, tracepoints / floor", 0.9)
        )
    if "bpf_cost" in r:
        goals.append(bpf_cost_row(r["bpf_cost"]))
    if "ready" in r:
        ready = r["ready"]
        goals.append(
            Goal(
                "time to ready (host, tracepoints)",
                f"{ready['ready_median_s']:.3f} s",
                "≤ 0.3 s",
                ready["ready_median_s"] <= 0.3,
                f"median of {ready['rounds']}; {ready['ready_min_s']:.3f}–"
                f"{ready['ready_max_s']:.3f} s",
            )
        )
    if "memory" in r:
        m = r["memory"]
        goals.append(
            Goal(
                f"RSS at {m['events_per_s_offered'] / 1000:.0f}k events/s",
                f"{m['rss_max_mib']:.1f} MiB max",
                "≤ 60 MB, ±5%",
                m["rss_max_mib"] * 1.048576 <= 60 and m["rss_widest_pct"] <= 5,
                f"{m['soak_seconds']:.0f} s: start {m['rss_start_mib']:.1f}, end "
                f"{m['rss_end_mib']:.1f} MiB, drift {m['rss_drift_pct']:+.1f}% (widest "
                f"{m['rss_widest_pct']:.1f}%), ready {m['rss_ready_mib']:.1f} MiB "
                f"(of it the ring buffer's mapping: {m.get('rss_ring_mib', 0):.1f}), "
                f"lost {m['lost']}",
            )
        )
    return goals


def guest_goals(g: Mapping[str, Any]) -> list[Goal]:
    goals = []
    for prefix, backend in (("kprobe_multi", "kprobe-multi"), ("kprobe", "kprobe")):
        name = f"non-matching filter, {backend} / floor ({g.get('functions')} fn)"
        if f"{prefix}_pwru_vs_floor" in g:
            goals.append(overhead_goal(g, prefix, name, 0.8))
        elif f"{prefix}_error" in g:
            goals.append(Goal(name, "failed", "≥ 0.8×", None, g[f"{prefix}_error"]))
    starts = g.get("kprobe_multi_pwru_starts") or []
    setups = [s["setup_before_attach_s"] for s in starts if "setup_before_attach_s" in s]
    if setups:
        walls = [s["ready_wall_s"] for s in starts]
        goals.append(
            Goal(
                "guest: pwru set-up before attaching",
                f"{min(setups):.1f} s",
                "≤ 4 s",
                min(setups) <= 4,
                f"runs {spread(setups)} s (ready after − attach, kprobe-multi); "
                f"command to ready file {spread(walls)} s",
            )
        )
    return goals


def print_table(goals: Sequence[Goal], title: str) -> None:
    verdict = {True: "ok", False: "MISS", None: "-"}
    print(f"\n{title}")
    rows = [(g.name, g.measured, g.goal, verdict[g.ok], g.detail) for g in goals]
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
