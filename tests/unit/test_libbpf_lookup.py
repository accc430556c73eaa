"""pwru.bpf.libbpf: which libbpf is loaded ($PWRU_LIBBPF, bundled, system) and how it is named.

Uses the system's libbpf.so.1 (make setup installs libbpf1), copied where a wheel
would put its own; loading a library needs no privileges.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

from pwru.bpf import libbpf
from pwru.errors import PwruError


def system_file() -> Path:
    found = libbpf._describe(libbpf._Lib(ctypes.CDLL("libbpf.so.1")), "system")
    return Path(found.path)


@pytest.fixture
def bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PWRU_LIBBPF", raising=False)
    monkeypatch.setattr(libbpf, "BUNDLED_DIR", tmp_path)
    return tmp_path


def describe() -> libbpf.LibraryInfo:
    cdll, origin = libbpf._open_library()
    return libbpf._describe(libbpf._Lib(cdll), origin)


def test_system_library_when_nothing_is_bundled(bundled: Path) -> None:
    found = describe()
    assert found.origin == "system"
    assert found.path == str(system_file())
    assert found.version == system_file().name.removeprefix("libbpf.so.")


def test_bundled_library_comes_before_the_system_one(bundled: Path) -> None:
    copy = bundled / system_file().name  # libbpf.so.1.1.2, as a wheel names its own
    shutil.copy(system_file(), copy)
    found = describe()
    assert (found.origin, found.path) == ("bundled", str(copy))
    assert found.version == copy.name.removeprefix("libbpf.so.")


def test_pwru_libbpf_comes_first(bundled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(system_file(), bundled / "libbpf.so.1.99.0")
    monkeypatch.setenv("PWRU_LIBBPF", str(system_file()))
    found = describe()
    assert (found.origin, found.path) == ("PWRU_LIBBPF", str(system_file()))


def test_version_from_the_api_when_the_file_name_disagrees(bundled: Path) -> None:
    shutil.copy(system_file(), bundled / "libbpf.so.9.9.9")
    found = describe()
    assert found.origin == "bundled"
    assert found.version.count(".") == 1  # major.minor from libbpf_*_version()


def test_unloadable_bundled_library_falls_back_to_the_system(
    bundled: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (bundled / "libbpf.so.1.5.0").write_bytes(b"not an ELF file")
    assert describe().origin == "system"
    assert "cannot load the bundled libbpf" in caplog.text


def test_bad_pwru_libbpf_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PWRU_LIBBPF", "/nonexistent/libbpf.so.1")
    with pytest.raises(PwruError, match="cannot load libbpf from PWRU_LIBBPF=/nonexistent"):
        libbpf._open_library()


def test_missing_optional_function_is_reported_by_has() -> None:
    """An older libbpf without a newer API (consume_n came in 1.4) must answer has() with
    False so callers take their fallback; using it anyway is one clear error."""

    class OldLibbpf:
        ring_buffer__poll = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)

    loaded = libbpf._Lib(OldLibbpf())  # type: ignore[arg-type]
    assert loaded.has("ring_buffer__poll")
    assert not loaded.has("ring_buffer__consume_n")
    with pytest.raises(libbpf.LibbpfMissing, match="lacks ring_buffer__consume_n"):
        loaded.ring_buffer__consume_n()
