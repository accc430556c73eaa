"""The rotating --output-file: lumberjack's names, limits and pruning, whole events only."""

from __future__ import annotations

import gzip
import os
import re
import threading
import time
from pathlib import Path

import pytest

from pwru.output.rotate import (
    MEGABYTE,
    RotatingFile,
    Rotation,
    backup_name,
    backup_time,
    prune_and_compress,
    split_name,
)

STAMP = r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}"


def test_split_name_like_go_filepath_ext() -> None:
    assert split_name("/t/trace.json") == ("/t", "trace", ".json")
    assert split_name("/t/trace") == ("/t", "trace", "")
    assert split_name("/t/a.tar.gz") == ("/t", "a.tar", ".gz")
    assert split_name("/t/.hidden") == ("/t", "", ".hidden")


def test_backup_name_is_lumberjacks() -> None:
    when = time.mktime((2026, 7, 13, 14, 5, 3, 0, 0, -1)) + 0.042
    assert backup_name("/t/trace.json", when) == "/t/trace-2026-07-13T14-05-03.042.json"
    assert backup_name("/t/trace", when) == "/t/trace-2026-07-13T14-05-03.042"


def test_backup_time_parses_only_backups() -> None:
    path = "/t/trace.json"
    assert backup_time("trace-2026-07-13T14-05-03.042.json", path) is not None
    assert backup_time("trace-2026-07-13T14-05-03.042.json.gz", path) is not None
    assert backup_time("trace.json", path) is None
    assert backup_time("trace-2026-07-13T14-05-03.04.json", path) is None  # 3 digits
    assert backup_time("other-2026-07-13T14-05-03.042.json", path) is None
    assert backup_time("trace-2026-07-13T14-05-03.042.txt", path) is None


def events(count: int, size: int, tag: str = "e") -> list[str]:
    """``count`` events of ``size`` bytes with their newline, each spanning two lines."""
    body = "x" * (size - len(tag) - 12)
    return [f"{tag}{i:08d} {body}\n." for i in range(count)]


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


def test_rotates_between_events_at_the_limit(tmp_path: Path) -> None:
    out = RotatingFile(str(tmp_path / "trace.txt"), Rotation(max_mb=1))
    written = events(3500, 1000)  # 3.3 MiB, in batches like the printer's
    for start in range(0, len(written), 700):
        out.write_lines(written[start : start + 700])
    out.close()
    found = files(tmp_path)
    backups = [p for p in found if p.name != "trace.txt"]
    assert len(backups) == 3, found
    assert all(re.fullmatch(f"trace-{STAMP}.txt", p.name) for p in backups)
    read: list[str] = []
    for path in [*backups, tmp_path / "trace.txt"]:  # oldest first, as names sort
        text = path.read_text()
        assert os.path.getsize(path) <= MEGABYTE
        assert text.endswith("\n.\n")  # the last event is whole
        read += [ev + "\n." for ev in text.split("\n.\n")[:-1]]
    assert read == written


def test_appends_to_a_file_with_room_and_moves_a_full_one_aside(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("old\n")
    out = RotatingFile(str(path), Rotation(max_mb=1))
    out.write_lines(["new"])
    out.close()
    assert path.read_text() == "old\nnew\n" and len(files(tmp_path)) == 1
    path.write_bytes(b"y" * MEGABYTE)
    RotatingFile(str(path), Rotation(max_mb=1)).close()
    assert path.read_bytes() == b"" and len(files(tmp_path)) == 2


def test_an_event_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    out = RotatingFile(str(tmp_path / "t"), Rotation(max_mb=1))
    out.write_lines(["small"])
    out.write_lines(["big" + "z" * MEGABYTE, "after"])
    out.close()
    sizes = sorted(os.path.getsize(p) for p in files(tmp_path))
    assert sizes == [len("after\n"), len("small\n"), MEGABYTE + len("big\n")]


def test_rotations_within_a_millisecond_never_overwrite(tmp_path: Path) -> None:
    out = RotatingFile(str(tmp_path / "t.log"), Rotation(max_mb=1))
    for n in range(5):
        out.write_lines([f"file {n}"])
        out.rotate()
    out.close()
    assert sorted(p.read_text() for p in files(tmp_path)) == [""] + [
        f"file {n}\n" for n in range(5)
    ]


def make_backups(directory: Path, stamps: list[str], gz: bool = False) -> None:
    for stamp in stamps:
        name = f"trace-{stamp}.json" + (".gz" if gz else "")
        (directory / name).write_text(stamp)


def test_prune_by_count_counts_a_backup_and_its_gz_once(tmp_path: Path) -> None:
    (tmp_path / "trace.json").write_text("current")
    (tmp_path / "unrelated.json").write_text("x")
    make_backups(tmp_path, ["2026-07-13T10-00-00.000", "2026-07-13T11-00-00.000"])
    make_backups(tmp_path, ["2026-07-13T11-00-00.000", "2026-07-13T09-00-00.000"], gz=True)
    prune_and_compress(str(tmp_path / "trace.json"), Rotation(max_backups=2))
    assert [p.name for p in files(tmp_path)] == [
        "trace-2026-07-13T10-00-00.000.json",
        "trace-2026-07-13T11-00-00.000.json",
        "trace-2026-07-13T11-00-00.000.json.gz",
        "trace.json",
        "unrelated.json",
    ]


def test_prune_by_age(tmp_path: Path) -> None:
    recent = time.strftime("%Y-%m-%dT%H-%M-%S.000", time.localtime(time.time() - 3600))
    make_backups(tmp_path, ["2020-01-01T00-00-00.000", recent])
    make_backups(tmp_path, ["2020-01-02T00-00-00.000"], gz=True)
    prune_and_compress(str(tmp_path / "trace.json"), Rotation(max_age_days=1))
    assert [p.name for p in files(tmp_path)] == [f"trace-{recent}.json"]


def test_compress_replaces_backups_with_whole_gzip_files(tmp_path: Path) -> None:
    make_backups(tmp_path, ["2026-07-13T10-00-00.000"])
    make_backups(tmp_path, ["2026-07-13T09-00-00.000"], gz=True)
    prune_and_compress(str(tmp_path / "trace.json"), Rotation(compress=True))
    names = [p.name for p in files(tmp_path)]
    assert names == [
        "trace-2026-07-13T09-00-00.000.json.gz",
        "trace-2026-07-13T10-00-00.000.json.gz",
    ]
    assert gzip.decompress((tmp_path / names[1]).read_bytes()) == b"2026-07-13T10-00-00.000"


def test_close_waits_for_compression_and_pruning(tmp_path: Path) -> None:
    out = RotatingFile(str(tmp_path / "t.json"), Rotation(max_mb=1, max_backups=2, compress=True))
    written = events(4000, 1000)
    for start in range(0, len(written), 500):
        out.write_lines(written[start : start + 500])
    out.close()
    names = [p.name for p in files(tmp_path)]
    assert len(names) == 3 and names[-1] == "t.json", names
    assert all(re.fullmatch(f"t-{STAMP}.json.gz", n) for n in names[:2]), names
    kept = "".join(gzip.decompress(p.read_bytes()).decode() for p in files(tmp_path)[:2])
    kept += (tmp_path / "t.json").read_text()
    assert kept.endswith("\n.\n") and kept.split("\n.\n")[-2] + "\n." == written[-1]


def test_missing_directories_are_created(tmp_path: Path) -> None:
    out = RotatingFile(str(tmp_path / "a" / "b" / "t.txt"), Rotation())
    out.write_lines(["one"])
    out.close()
    assert (tmp_path / "a" / "b" / "t.txt").read_text() == "one\n"


def test_unwritable_path_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        RotatingFile(str(tmp_path / "file" / "t.txt"), Rotation())


def test_a_fifo_or_device_is_written_through_never_renamed(tmp_path: Path) -> None:
    """--output-file /dev/null must stay /dev/null: only regular files rotate (a FIFO
    stands in for the device here, so a regression cannot rename the real one)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = bytearray()

    def drain() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(1 << 16):
                got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out = RotatingFile(str(fifo), Rotation(max_mb=1))
    line = "x" * 999
    for _ in range(3):  # 3 MB through a 1 MB limit
        out.write_lines([line] * 1024)
    out.close()
    reader.join(timeout=10)
    assert len(got) == 3 * 1024 * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"] and fifo.is_fifo()
