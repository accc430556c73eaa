"""Fixtures for tests that load BPF programs into this kernel and send real packets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session", autouse=True)
def _need_root() -> None:
    # Kernel tests are the point of this suite: without root they must fail, not skip.
    assert os.geteuid() == 0, (
        "kernel tests load BPF programs and create namespaces: run them as root"
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
