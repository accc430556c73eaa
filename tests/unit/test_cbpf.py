"""pwru.filter.cbpf: a broken libpcap install is one clear error, not a traceback."""

from __future__ import annotations

import sys

import pytest

from pwru.errors import EnvironmentProblem
from pwru.filter import cbpf


def test_missing_pcapy_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pcapy", None)  # the next import raises ImportError
    with pytest.raises(EnvironmentProblem, match="cannot load libpcap through pcapy-ng"):
        cbpf.compile_filter("tcp", cbpf.DLT_EN10MB)
