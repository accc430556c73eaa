"""--output-file: a trace file that rotates the way cilium/pwru's does (it uses lumberjack).

* The file is appended to when it exists and is smaller than the limit, else moved
  aside first. Parent directories are created.
* Before a write would take the file past ``--output-file-max-size`` MiB (0 = 100),
  it is closed and renamed ``<name>-<local time>.<ext>`` (``trace-2026-07-13T14-05-03.000.json``
  for ``trace.json``; the extension is what follows the name's last dot, if any), and
  a new file takes the original name.
* Rotation happens between events, never inside one: every file holds whole events
  (an event with --output-stack spans several lines). An event larger than the limit
  gets a file of its own (lumberjack would refuse the write).
* After each rotation, and once at start, a background thread prunes backups: only
  the newest ``--output-file-max-backups`` (0 = all), none whose name's time is more
  than ``--output-file-max-age`` days old (0 = forever); then it gzips the rest
  (``--output-file-compress``) to ``<backup>.gz.tmp``, renamed to ``<backup>.gz`` when
  complete, and removes the uncompressed file. ``close()`` waits for that thread.
* Only a regular file rotates: ``--output-file /dev/null`` (or a FIFO, a terminal) is
  written straight through and never renamed.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import queue
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

log = logging.getLogger("pwru")

MEGABYTE = 1 << 20  # lumberjack's megabyte
DEFAULT_MAX_MB = 100  # what a size of 0 means
GZ = ".gz"
_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"  # then .mmm: Go's 2006-01-02T15-04-05.000
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}")
_FILE_MODE = 0o644


@dataclass(frozen=True)
class Rotation:
    """When to rotate and what to keep (the --output-file-* flags)."""

    max_mb: int = DEFAULT_MAX_MB  # 0 = DEFAULT_MAX_MB
    max_backups: int = 0  # 0 = all
    max_age_days: int = 0  # 0 = forever
    compress: bool = False

    @property
    def max_bytes(self) -> int:
        return (self.max_mb or DEFAULT_MAX_MB) * MEGABYTE


def split_name(path: str) -> tuple[str, str, str]:
    """(directory, name before the extension, extension) the way Go's filepath.Ext
    splits: the extension starts at the last dot of the file name ("" without one)."""
    directory, base = os.path.split(os.path.abspath(path))
    dot = base.rfind(".")
    ext = base[dot:] if dot >= 0 else ""
    return directory, base[: len(base) - len(ext)], ext


def backup_name(path: str, when: float) -> str:
    """``<dir>/<name>-<local time>.<ext>`` for a file rotated at ``when``."""
    directory, prefix, ext = split_name(path)
    millis = int(when * 1000) % 1000
    stamp = time.strftime(_TIME_FORMAT, time.localtime(when)) + f".{millis:03d}"
    return os.path.join(directory, f"{prefix}-{stamp}{ext}")


def backup_time(file_name: str, path: str) -> datetime | None:
    """The rotation time in the name of one of ``path``'s backups (plain or .gz), or
    None when ``file_name`` is not one."""
    _, prefix, ext = split_name(path)
    for suffix in (ext, ext + GZ):
        stamp = file_name[len(prefix) + 1 : len(file_name) - len(suffix)]
        if (
            file_name.startswith(prefix + "-")
            and file_name.endswith(suffix)
            and _STAMP.fullmatch(stamp)
        ):
            return datetime.strptime(stamp, _TIME_FORMAT + ".%f")
    return None


class RotatingFile:
    """The --output-file writer: whole events in, files rotated between them."""

    def __init__(self, path: str, rotation: Rotation) -> None:
        self.path = path
        self.rotation = rotation
        self._mill = _Mill(lambda: prune_and_compress(path, rotation))
        self._fd = -1
        self._size = 0
        self.rotates = True  # False for a device or FIFO (see the module docstring)
        self._open()
        if self.rotates:
            self._mill.request()

    def _open(self) -> None:
        """Append to the file if it has room, else move it aside first (as lumberjack)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), 0o755, exist_ok=True)
        try:
            st = os.stat(self.path)
            size = st.st_size
        except FileNotFoundError:
            size = -1
        else:
            if not stat.S_ISREG(st.st_mode):
                self._fd = os.open(self.path, os.O_WRONLY)
                self.rotates = False
                return
        if size >= self.rotation.max_bytes:
            self._move_aside()
            size = -1
        if size < 0:
            self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, _FILE_MODE)
            self._size = 0
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._size = size

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write events (each may span lines; a newline is added to each)."""
        data = ("\n".join(lines) + "\n").encode()
        if not self.rotates or self._size + len(data) <= self.rotation.max_bytes:
            self._write(data)
            return
        for line in lines:  # a rotation falls in this batch: event by event
            event = (line + "\n").encode()
            if self._size and self._size + len(event) > self.rotation.max_bytes:
                self.rotate()
            self._write(event)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def rotate(self) -> None:
        """Close the file, rename it to a backup, start a new one, prune in the background."""
        mode = os.fstat(self._fd).st_mode & 0o7777
        os.close(self._fd)
        self._fd = -1
        self._move_aside()
        self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
        self._size = 0
        self._mill.request()

    def _move_aside(self) -> None:
        when = time.time()
        name = backup_name(self.path, when)
        while os.path.exists(name) or os.path.exists(name + GZ):
            when += 0.001  # two rotations within a millisecond: never overwrite a backup
            name = backup_name(self.path, when)
        os.rename(self.path, name)

    def close(self) -> None:
        """Close the file and wait for pruning and compression to finish."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._mill.close()


def prune_and_compress(path: str, rotation: Rotation) -> None:
    """Remove the backups past the count and age limits, gzip the others."""
    if not (rotation.max_backups or rotation.max_age_days or rotation.compress):
        return
    directory = os.path.dirname(os.path.abspath(path))
    backups: list[tuple[datetime, str]] = []
    for entry in os.scandir(directory):
        stamp = backup_time(entry.name, path) if entry.is_file() else None
        if stamp is not None:
            backups.append((stamp, entry.name))
    backups.sort(reverse=True)  # newest first
    keep: list[str] = []
    seen: set[str] = set()  # a backup and its .gz count once
    cutoff = datetime.now() - timedelta(days=rotation.max_age_days)
    for stamp, name in backups:
        seen.add(name.removesuffix(GZ))
        too_many = rotation.max_backups and len(seen) > rotation.max_backups
        too_old = rotation.max_age_days and stamp < cutoff
        if too_many or too_old:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
        else:
            keep.append(name)
    if rotation.compress:
        for name in keep:
            if not name.endswith(GZ):
                gzip_file(os.path.join(directory, name))


def gzip_file(src: str) -> None:
    """``src`` -> ``src.gz``, which appears only once complete; then ``src`` goes."""
    tmp = src + GZ + ".tmp"
    mode = os.stat(src).st_mode & 0o777
    try:
        with open(src, "rb") as plain, open(
            os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode), "wb"
        ) as out:
            with gzip.GzipFile(os.path.basename(src), "wb", 6, out) as packed:
                shutil.copyfileobj(plain, packed, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, src + GZ)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.remove(src)


class _Mill:
    """One background thread that runs ``work`` when asked; requests made while it
    runs fold into one more run (like lumberjack's mill goroutine)."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._requests: queue.Queue[bool] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pwru-rotate", daemon=True)
            self._thread.start()
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait(True)

    def _run(self) -> None:
        while self._requests.get():
            try:
                self._work()
            except Exception as error:  # best effort, as in lumberjack: the trace goes on
                log.warning("cannot prune or compress rotated output files: %s", error)

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(False)  # after any pending request
            self._thread.join()
            self._thread = None
