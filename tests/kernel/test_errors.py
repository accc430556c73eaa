"""Bad input and unusable environments: one line on stderr, the right exit code,
no traceback, and nothing left loaded in the kernel."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from netlab import Lab, PwruRun, pwru_command, pwru_programs_left


def pwru(
    *args: str, env: dict[str, str] | None = None, no_caps: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [*pwru_command(), *args]
    if no_caps:  # root, but with every capability dropped
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("pwru: error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert result.stdout == ""
    assert pwru_programs_left() == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--filter-func", "(unclosed"], ["--filter-func"]),
        (["--filter-mark", "0xzz"], ["--filter-mark"]),
        (["--filter-mark", "0x1/0x2/0x3"], ["--filter-mark"]),
        (["--timestamp", "yesterday"], ["--timestamp"]),
        (["--output-limit-lines", "-1"], ["--output-limit-lines"]),
        (["--backend", "ebpf-magic"], ["--backend"]),
        (["--filter-netns", "/run/netns/pwru-no-such-netns"], ["pwru-no-such-netns"]),
        (["--filter-netns", "inode:notanumber"], ["inode:notanumber"]),
        (["--filter-ifname", "pwru-no-if0"], ["pwru-no-if0"]),
        (["--filter-src-ip", "300.1.1.1"], ["300.1.1.1"]),
        (["--filter-dst-port", "70000"], ["70000"]),
        (["--filter-proto", "sctpx"], ["sctpx"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_usage_errors_exit_2(args: list[str], words: list[str]) -> None:
    assert_one_line_error(pwru(*args), 2, *words)


def test_filter_func_matching_nothing_is_a_usage_error() -> None:
    assert_one_line_error(pwru("--filter-func", "no_such_probe_.*"), 2, "no_such_probe_")


def test_without_capabilities() -> None:
    assert_one_line_error(pwru(no_caps=True), 1, "root", "CAP_BPF")


def test_unwritable_output_file(tmp_path: Path) -> None:
    # missing directories are created, as cilium/pwru does; a file in the way is an error
    (tmp_path / "file").write_text("")
    assert_one_line_error(
        pwru("--output-file", str(tmp_path / "file" / "out")), 2, "--output-file"
    )


def test_missing_btf() -> None:
    assert_one_line_error(pwru("--kernel-btf", "/nonexistent/vmlinux"), 1, "/nonexistent/vmlinux")


def test_libbpf_missing() -> None:
    result = pwru(env={"PWRU_LIBBPF": "/nonexistent/libbpf.so.1"})
    assert_one_line_error(result, 1, "libbpf")


def test_libbpf_too_old(tmp_path: Path) -> None:
    """A library that reports version 0.8 is refused before anything is loaded."""
    source = tmp_path / "old.c"
    source.write_text(
        "unsigned libbpf_major_version(void) { return 0; }\n"
        "unsigned libbpf_minor_version(void) { return 8; }\n"
    )
    lib = tmp_path / "libbpf-old.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    assert_one_line_error(pwru(env={"PWRU_LIBBPF": str(lib)}), 1, "0.8", "1.0")


def test_kprobe_backend_names_missing_feature() -> None:
    """This kernel has no kprobes: asking for them says which kernel option is missing."""
    for backend in ("kprobe", "kprobe-multi"):
        assert_one_line_error(pwru("--backend", backend), 1, backend, "CONFIG_KPROBES")


def test_error_after_attach_leaves_nothing(lab: Lab, workdir: Path) -> None:
    """The ready file is written after every probe is attached; failing there must
    still detach and unload everything."""
    result = pwru(
        "--filter-netns", lab.b.netns_path, "--ready-file", str(workdir / "no-dir" / "ready")
    )
    assert_one_line_error(result, 1, "ready")


def test_notes_for_legacy_flags(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--filter-netns", lab.b.netns_path, "--output-relative-timestamp"], workdir)
    assert run.stop() == 0
    notes = [ln for ln in run.stderr.splitlines() if "--output-relative-timestamp" in ln]
    assert len(notes) == 1 and "--timestamp" in notes[0], run.stderr
    assert "TIMESTAMP" in run.lines()[0]


def test_verifier_rejection_shows_log_tail() -> None:
    """A filter too complex for the verifier: one error line, then the log's tail."""
    expr = " or ".join(f"ip6 protochain {p}" for p in range(1, 90))
    result = pwru("--filter-func", "kfree_skb", expr)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("pwru: error:")]
    assert len(errors) == 1 and "rejected BPF program" in errors[0], result.stderr
    tail = result.stderr.split("verifier log (last lines):\n", 1)[1].splitlines()
    assert 3 <= len(tail) <= 12, tail
    assert any("processed" in ln or "too complex" in ln or "too large" in ln for ln in tail), tail
    assert pwru_programs_left() == []


def test_debug_prints_filter_programs(lab: Lab, workdir: Path) -> None:
    run = PwruRun(["--debug", "--filter-netns", lab.b.netns_path, "udp port 7777"], workdir)
    assert run.stop() == 0
    err = run.stderr
    assert "filter_pcap_l2 for 'udp port 7777', L2 (DLT_EN10MB)" in err, err
    assert "filter_pcap_l3 for 'udp port 7777', L3 (DLT_RAW)" in err
    assert "cbpf  (000) ldh      [12]" in err  # tcpdump -d style
    assert re.search(r"ebpf\s+.*call (bpf_probe_read_kernel|113)", err), err
