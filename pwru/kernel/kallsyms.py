"""Kernel symbols from ``/proc/kallsyms``: function addresses by name, names by address.

Each line of ``/proc/kallsyms`` is ``<address> <type> <name>``, followed by a tab
and ``[module]`` for module symbols (and for the pseudo-modules ``[bpf]``,
``[__builtin__ftrace]``, ...). Only text symbols are kept: types ``t``/``T``
(local/global functions) and ``w``/``W`` (weak ones; ``nm`` marks weak objects
``v``/``V``). The kernel lists its own symbols first, sorted by address, then
those of modules.

A name can occur more than once: static functions of the same name in several
files, or one in vmlinux and one in a module. ``address()`` refuses to guess
(None); ``addresses()`` lists them all.

Several names can share one address (aliases). Like the kernel's own lookup
(``kallsyms_lookup``, which ``%ps`` and ``available_filter_functions`` use), the
one listed first names the address.

Without the right privileges every address reads as 0 (``kernel.kptr_restrict``);
``Kallsyms.load`` says so instead of returning a useless table.

Speed: about 120k lines here; the kernel takes ~40 ms to produce them and
parsing ~60 ms more: the lines are split in one ``str.split``, the addresses
decoded in one ``bytes.fromhex``. Lookups by address bisect an ``array('Q')``
(~1.5 us). The name index behind ``address()`` costs ~70 ms and is built on first
use; ``find()`` answers a batch of names in one ~20 ms pass without it.
"""

from __future__ import annotations

import operator
import os
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import compress, islice
from typing import NamedTuple

from pwru.errors import EnvironmentProblem

KALLSYMS = "/proc/kallsyms"

_TEXT_TYPES = frozenset("tTwW")
_READ_CHUNK = 1 << 16


class Symbol(NamedTuple):
    """One text symbol."""

    addr: int
    name: str
    module: str  # "" for vmlinux


class Kallsyms:
    """The text symbols of the running kernel and its modules, sorted by address."""

    def __init__(self, addrs: array[int], names: list[str], modules: list[str]) -> None:
        """``addrs`` ascending; ``names`` and ``modules`` ("" for vmlinux) parallel to it."""
        if not len(addrs) == len(names) == len(modules):
            raise ValueError("addrs, names and modules differ in length")
        self._addrs = addrs
        self._names = names
        self._modules = modules
        self._by_name: dict[str, int] | None = None  # name -> index, for unique names
        self._repeated: dict[str, list[int]] = {}  # name -> indexes, for repeated names

    @classmethod
    def load(cls, path: str = KALLSYMS) -> Kallsyms:
        """Read and index a kallsyms file; EnvironmentProblem if it cannot be read or
        hides its addresses."""
        try:
            data = _read(path)
        except OSError as err:
            raise EnvironmentProblem(f"cannot read {path}: {err.strerror}") from None
        try:
            return cls.parse(data.decode("ascii", "replace"))
        except ValueError as err:
            raise EnvironmentProblem(f"{path}: {err}") from None

    @classmethod
    def parse(cls, text: str) -> Kallsyms:
        """Index the text of a kallsyms file; ValueError if it is malformed, has no text
        symbols, or shows every address as 0."""
        # The kernel's own symbols come first, sorted, without "\t[module]": they are
        # split in one go. The rest (modules, BPF programs, trampolines) is small.
        tab = text.find("\t")
        core_end = len(text) if tab < 0 else text.rfind("\n", 0, tab) + 1
        tokens = text[:core_end].split()
        if len(tokens) % 3:
            raise ValueError("malformed line (expected '<address> <type> <name>')")
        names = tokens[2::3]
        core = _section(tokens[0::3], tokens[1::3], names, [""] * len(names))
        rest = _section(*_parse_lines(text[core_end:]))
        addrs, names, modules = _merge(core, rest)
        if not names:
            raise ValueError("no function symbols")
        if not any(addrs):
            raise ValueError(
                "every address reads as 0: the kernel hides them (run as root; "
                "sysctl kernel.kptr_restrict=2 hides them from root too)"
            )
        return cls(addrs, names, modules)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<Kallsyms {len(self)} text symbols>"

    # ---- by name ---------------------------------------------------------------

    def _index(self) -> dict[str, int]:
        """name -> index for names that occur once; fills ``_repeated`` for the others."""
        if self._by_name is None:
            names = self._names
            last = dict(zip(names, range(len(names))))
            if len(last) < len(names):
                # Names seen at an index other than their last one, all in C.
                not_last = map(operator.ne, map(last.__getitem__, names), range(len(names)))
                repeated = set(compress(names, not_last))
                for i in compress(range(len(names)), map(repeated.__contains__, names)):
                    self._repeated.setdefault(names[i], []).append(i)
                for name in repeated:
                    del last[name]
            self._by_name = last
        return self._by_name

    def _indexes(self, name: str, module: str | None) -> list[int]:
        one = self._index().get(name)
        found = [one] if one is not None else self._repeated.get(name, [])
        if module is None:
            return found
        return [i for i in found if self._modules[i] == module]

    def addresses(self, name: str, module: str | None = None) -> list[int]:
        """Addresses of every text symbol called ``name``, ascending; only those of
        ``module`` ("" for vmlinux) when it is given."""
        return [self._addrs[i] for i in self._indexes(name, module)]

    def address(self, name: str, module: str | None = None) -> int | None:
        """Address of the text symbol ``name`` (in ``module`` when given); None if
        there is none or more than one."""
        found = self._indexes(name, module)
        return self._addrs[found[0]] if len(found) == 1 else None

    def module(self, name: str) -> str | None:
        """Module of the text symbol ``name``: "" for vmlinux, None if there is no such
        symbol; for a repeated name, the module of the copy at the lowest address."""
        found = self._indexes(name, None)
        return self._modules[found[0]] if found else None

    def find(self, names: Iterable[str]) -> dict[str, list[Symbol]]:
        """Every text symbol whose name is in ``names``, by name, in address order.
        One pass over the table: for a few thousand names this is several times
        cheaper than the full name index that ``address()`` builds on first use."""
        wanted = set(names)
        found: dict[str, list[Symbol]] = {}
        all_names, addrs, modules = self._names, self._addrs, self._modules
        hits = compress(range(len(all_names)), map(wanted.__contains__, all_names))
        for i in hits:
            symbol = Symbol(addrs[i], all_names[i], modules[i])
            found.setdefault(symbol.name, []).append(symbol)
        return found

    # ---- by address ------------------------------------------------------------

    def symbol_at(self, addr: int) -> Symbol | None:
        """The text symbol containing ``addr``: the nearest one at or below it (so
        ``func+4`` after an IBT ``endbr64`` is still ``func``). Of aliases at one
        address, the first listed wins, as in the kernel. None below the first symbol."""
        i = bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        start = self._addrs[i]
        while i and self._addrs[i - 1] == start:
            i -= 1
        return Symbol(start, self._names[i], self._modules[i])

    def name_at(self, addr: int) -> str | None:
        """Name of the function containing ``addr`` (see ``symbol_at``)."""
        sym = self.symbol_at(addr)
        return sym.name if sym is not None else None

    def symbolize(self, addr: int) -> str:
        """``name+0x1c``, ``name`` at offset 0, ``name+0x1c [module]`` for modules, or
        the address in hex when no symbol contains it."""
        sym = self.symbol_at(addr)
        if sym is None:
            return f"0x{addr:x}"
        text = sym.name if addr == sym.addr else f"{sym.name}+0x{addr - sym.addr:x}"
        return f"{text} [{sym.module}]" if sym.module else text


_Section = tuple["array[int]", list[str], list[str]]  # addresses (ascending), names, modules


def _section(
    addrs_hex: list[str], types: list[str], names: list[str], modules: list[str]
) -> _Section:
    """The text symbols among these lines, sorted by address (ties keep their order)."""
    joined = "".join(types)
    if len(joined) != len(types) or sum(map(joined.count, "tTwW")) != len(types):
        keep = list(map(_TEXT_TYPES.__contains__, types))
        addrs_hex = list(compress(addrs_hex, keep))
        names = list(compress(names, keep))
        modules = list(compress(modules, keep))
    addrs = _decode_addresses(addrs_hex)
    if not all(map(operator.le, addrs, islice(addrs, 1, None))):
        order = sorted(range(len(addrs)), key=addrs.__getitem__)  # stable
        addrs = array("Q", map(addrs.__getitem__, order))
        names = list(map(names.__getitem__, order))
        modules = list(map(modules.__getitem__, order))
    return addrs, names, modules


def _merge(big: _Section, small: _Section) -> _Section:
    """Merge two sorted sections; ``small`` (modules) usually lands in one gap of
    ``big`` (vmlinux), so it is inserted run by run. On equal addresses ``big`` comes
    first, as the kernel lists its own symbols first."""
    big_addrs, big_names, big_modules = big
    small_addrs, small_names, small_modules = small
    addrs: array[int] = array("Q")
    names: list[str] = []
    modules: list[str] = []
    done = 0  # items of big already copied
    start = 0  # first item of small not yet copied
    while start < len(small_addrs):
        at = bisect_right(big_addrs, small_addrs[start], done)
        # big_addrs[at] > small_addrs[start], so at least one item of small moves.
        end = len(small_addrs)
        if at < len(big_addrs):
            end = bisect_left(small_addrs, big_addrs[at], start)
        addrs += big_addrs[done:at] + small_addrs[start:end]
        names += big_names[done:at] + small_names[start:end]
        modules += big_modules[done:at] + small_modules[start:end]
        done, start = at, end
    addrs += big_addrs[done:]
    names += big_names[done:]
    modules += big_modules[done:]
    return addrs, names, modules


def _read(path: str) -> bytes:
    """The whole file; procfs hands out one page per read whatever the buffer size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _parse_lines(text: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(addresses, types, names, modules) of lines with or without ``\\t[module]``."""
    addrs: list[str] = []
    types: list[str] = []
    names: list[str] = []
    modules: list[str] = []
    tokens = text.split()
    lines = text.count("\n") + (not text.endswith("\n"))
    if len(tokens) == 4 * lines and text.count("\t[") == lines:  # all module lines
        addrs, types, names = tokens[0::4], tokens[1::4], tokens[2::4]
        modules = [module[1:-1] for module in tokens[3::4]]
        return addrs, types, names, modules
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (3, 4):
            raise ValueError(f"malformed line {line!r}")
        addrs.append(fields[0])
        types.append(fields[1])
        names.append(fields[2])
        modules.append(fields[3].strip("[]") if len(fields) == 4 else "")
    return addrs, types, names, modules


def _decode_addresses(hex_addrs: list[str]) -> array[int]:
    """Hex strings -> unsigned 64-bit array; one ``bytes.fromhex`` when they all have the
    fixed width the kernel prints (16 digits, or 8 on 32-bit kernels)."""
    width = len(hex_addrs[0]) if hex_addrs else 0
    try:
        if width in (8, 16) and set(map(len, hex_addrs)) == {width}:
            raw = bytes.fromhex("".join(hex_addrs))
            if width == 16:
                addrs = array("Q")
                addrs.frombytes(raw)
                if sys.byteorder == "little":
                    addrs.byteswap()
                return addrs
            words = array("I")
            words.frombytes(raw)
            if sys.byteorder == "little":
                words.byteswap()
            return array("Q", words)
        return array("Q", [int(a, 16) for a in hex_addrs])
    except (ValueError, OverflowError):
        raise ValueError("malformed address (expected hexadecimal)") from None
