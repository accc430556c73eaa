"""docs/python.md's read_trace examples run, on a trace made like a live run's."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.unit.test_readback import CONTENT, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_read_trace_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "trace.json").write_text(render(["--output-json", *CONTENT]))
    examples = [b for b in code_blocks() if "read_trace" in b and "Tracer" not in b]
    assert len(examples) == 2
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, object] = {}
        exec(examples[0], scope)  # drops(): prints them
        assert "kfree_skb SKB_DROP_REASON_NETFILTER_DROP" in capsys.readouterr().out
        exec(examples[1], scope)  # path_of()
        steps = scope["path_of"]("trace.json", 0xFFFF888012345678)  # type: ignore[operator]
        assert steps[0] == ("ip_local_out", 0) and len(steps) > 3
    finally:
        os.chdir(cwd)
