"""Fixtures shared by the suites that send real packets (tests/kernel, tests/packaging)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netlab import Lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Two network namespaces on a veth pair, removed after the test (also on failure)."""
    lab = Lab.create()
    try:
        yield lab
    finally:
        lab.close()
