"""Kernel BTF queries: which functions and tracepoints take a ``struct sk_buff *``.

BTF (the kernel's Documentation/bpf/btf.rst) is a header, a section of
variable-length type records and a string table. Type ids are implicit: the n-th
record is type n, and id 0 is ``void``. Module BTF is "split": its type ids
continue after vmlinux's and its string offsets after vmlinux's string table, so
it is loaded on top of a base ``KernelBtf``.

pwru must be ready in well under a second, so nothing is decoded up front: one
pass over the ~126k records notes where each starts, grouped by its ``info`` word
(which holds the kind), and every query then reads 32-bit words on demand.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import chain
from typing import NamedTuple

from pwru.errors import EnvironmentProblem

VMLINUX = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F
_HEADER = struct.Struct("HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len
_TRACE_PREFIX = "btf_trace_"
_MAX_FUNC_SKB_ARG = 5  # pwru's kprobes read the sk_buff from one of the first five args


class BtfError(EnvironmentProblem):
    """The BTF file is missing, unreadable or malformed (one line, for the user)."""


class Kind(IntEnum):
    """BTF_KIND_* from include/uapi/linux/btf.h; VOID is only ever type id 0."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Extra 32-bit words after the 3-word struct btf_type: (fixed, per vlen item).
_LAYOUT = {
    Kind.INT: (1, 0),  # encoding | offset | bits
    Kind.PTR: (0, 0),
    Kind.ARRAY: (3, 0),  # elem type, index type, nelems
    Kind.STRUCT: (0, 3),  # name, type, offset
    Kind.UNION: (0, 3),
    Kind.ENUM: (0, 2),  # name, val
    Kind.FWD: (0, 0),
    Kind.TYPEDEF: (0, 0),
    Kind.VOLATILE: (0, 0),
    Kind.CONST: (0, 0),
    Kind.RESTRICT: (0, 0),
    Kind.FUNC: (0, 0),
    Kind.FUNC_PROTO: (0, 2),  # name, type
    Kind.VAR: (1, 0),  # linkage
    Kind.DATASEC: (0, 3),  # type, offset, size
    Kind.FLOAT: (0, 0),
    Kind.DECL_TAG: (1, 0),  # component_idx
    Kind.TYPE_TAG: (0, 0),
    Kind.ENUM64: (0, 3),  # name, val_lo32, val_hi32
}
# Kinds that only name or qualify another type; resolve() looks through them.
TRANSPARENT_KINDS = (Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG)
# Kinds whose third word is a type id (the others hold a size, or nothing).
_REFERS = frozenset(
    TRANSPARENT_KINDS + (Kind.PTR, Kind.FUNC, Kind.VAR, Kind.DECL_TAG, Kind.FUNC_PROTO)
)
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT})
_VOID_RECORD: tuple[Sequence[int], int, int] = ((0, 0, 0), 0, 0)  # words, offset, info of id 0


def _kind(info: int) -> int:
    return info >> 24 & 0x1F


@dataclass(frozen=True)
class SkbTracepoint:
    """A tracepoint with a ``struct sk_buff *`` argument (a tp_btf attach target)."""

    name: str  # "kfree_skb"
    skb_arg: int  # position among the tracepoint's own args (not counting void *__data)
    nargs: int  # number of tracepoint args, again without __data
    btf_id: int  # id of the typedef btf_trace_<name>


@dataclass(frozen=True)
class SkbFunction:
    """A kernel function with a ``struct sk_buff *`` among its first five parameters."""

    name: str
    skb_arg: int  # 0-based parameter index, 0..4
    btf_id: int  # id of the FUNC


class Member(NamedTuple):
    """Where a struct/union member lives, relative to the start of the outer type."""

    offset_bits: int
    type_id: int
    bitfield_bits: int  # 0 unless the member is a bitfield


class _Groups(dict[int, tuple[int, "array[int]"]]):
    """info word -> (record length in words, offsets of the records with that word).

    Only a few hundred distinct info words occur, so caching the length per word
    keeps the indexing loop to one dict lookup per type. Offsets are kept in arrays
    of 32-bit words: 1 MB for 126k types, where lists of ints took 6 MB.
    """

    def __missing__(self, info: int) -> tuple[int, array[int]]:
        if _kind(info) not in _LAYOUT:
            raise BtfError(f"unsupported BTF type kind {_kind(info)} (newer kernel than pwru?)")
        fixed, per_item = _LAYOUT[Kind(_kind(info))]
        entry = (3 + fixed + (info & 0xFFFF) * per_item, array("I"))
        self[info] = entry
        return entry


def _index(words: Sequence[int]) -> tuple[array[int], _Groups]:
    """One pass over the type section: the word offset of every record, in id order,
    and the same offsets grouped by info word."""
    groups = _Groups()
    offsets = array("I")
    append = offsets.append
    pos, end = 0, len(words)
    try:
        while pos < end:
            append(pos)
            length, group = groups[words[pos + 1]]
            group.append(pos)
            pos += length
    except IndexError:
        pos = end + 1
    if pos != end:
        raise BtfError("type section is truncated")
    return offsets, groups


def _read(path: str) -> bytes | mmap.mmap:
    """The file's bytes; mapped when possible (vmlinux BTF since 6.16), which saves
    copying 6 MB out of the kernel."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        except (OSError, ValueError):  # sysfs before 6.16, empty file
            chunks = []
            while chunk := os.read(fd, 1 << 22):
                chunks.append(chunk)
            return b"".join(chunks)
    finally:
        os.close(fd)


def _sections(data: bytes | mmap.mmap) -> tuple[Sequence[int], bytes]:
    """Check the header; return the type section as 32-bit words, and the strings."""
    if len(data) < _HEADER.size:
        raise BtfError(f"file is truncated ({len(data)} bytes, no complete header)")
    magic = int.from_bytes(data[:2], "little")
    if magic not in (_MAGIC, 0x9FEB):
        raise BtfError(f"not a raw BTF file (bad magic 0x{magic:04x})")
    order = "<" if magic == _MAGIC else ">"
    _, version, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + _HEADER.format, data
    )
    if version != 1:
        raise BtfError(f"unsupported BTF version {version}")
    needed = hdr_len + max(type_off + type_len, str_off + str_len)
    if hdr_len < _HEADER.size or len(data) < needed:
        raise BtfError(f"file is truncated ({len(data)} bytes, header says {needed})")
    if type_off % 4 or type_len % 4:
        raise BtfError("type section is not made of 4-byte words")
    types = memoryview(data)[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = bytes(memoryview(data)[hdr_len + str_off : hdr_len + str_off + str_len])
    if (order == "<") == (sys.byteorder == "little"):
        return types.cast("I"), strings  # no copy
    swapped = array("I")
    swapped.frombytes(types)
    swapped.byteswap()
    return swapped, strings


class KernelBtf:
    """Raw BTF of vmlinux, or of a module (split BTF) on top of ``base``."""

    _start_id: int  # id of the first own type: 1, or the one after the base's last
    _str_start: int  # string offset of the own string table: 0, or after the base's
    _w: Sequence[int]  # the type section as 32-bit words
    _strs: bytes
    _offsets: array[int]  # word offset of each own record, in id order
    _groups: _Groups

    def __init__(self, data: bytes | mmap.mmap, source: str, base: KernelBtf | None = None) -> None:
        """Index ``data``, a whole raw BTF file; ``source`` names it in errors."""
        self._source = source
        self._base = base
        self._start_id = 1 if base is None else base._start_id + len(base._offsets)
        self._str_start = 0 if base is None else base._str_start + len(base._strs)
        try:
            self._w, self._strs = _sections(data)
            if base is None and self._strs[:1] != b"\0":
                raise BtfError("this is split (module) BTF; load it with vmlinux BTF as base")
            self._offsets, self._groups = _index(self._w)
        except BtfError as err:
            raise self._error(str(err)) from None
        self._by_kind: dict[tuple[int, ...], list[int]] = {}
        self._skb: tuple[frozenset[int], frozenset[int]] | None = None

    @classmethod
    def load(cls, path: str = VMLINUX, base: KernelBtf | None = None) -> KernelBtf:
        """Read a raw BTF file; module BTF (/sys/kernel/btf/<module>) needs vmlinux's
        KernelBtf as ``base``."""
        try:
            data = _read(path)
        except OSError as err:
            hint = " (is CONFIG_DEBUG_INFO_BTF enabled?)" if err.errno == errno.ENOENT else ""
            raise BtfError(f"cannot read kernel BTF {path}: {err.strerror}{hint}") from None
        return cls(data, path, base)

    def release(self) -> None:
        """Forget the parsed types and the file's bytes (~3 MB, or ~9 MB where the file
        cannot be mapped): a tracing run needs none of them once every probe is
        attached. Any query afterwards fails with "no type with id"."""
        self._w, self._strs = (), b""
        self._offsets, self._groups = array("I"), _Groups()
        self._by_kind.clear()
        self._skb = None

    def __repr__(self) -> str:
        last = self._start_id + len(self._offsets) - 1
        return f"<KernelBtf {self._source} ids {self._start_id}..{last}>"

    # ---- raw access ------------------------------------------------------------

    def _error(self, message: str) -> BtfError:
        return BtfError(f"kernel BTF {self._source}: {message}")

    def _record(self, tid: int) -> tuple[Sequence[int], int, int]:
        """(words, word offset of the record, info word) of a type here or in a base."""
        if tid == 0:
            return _VOID_RECORD
        btf = self
        while tid < btf._start_id and btf._base is not None:
            btf = btf._base
        index = tid - btf._start_id
        if not 0 <= index < len(btf._offsets):
            raise self._error(f"no type with id {tid}")
        pos = btf._offsets[index]
        return btf._w, pos, btf._w[pos + 1]

    def _id_at(self, pos: int) -> int:
        """Id of the own record at word offset ``pos``."""
        return self._start_id + bisect_left(self._offsets, pos)

    def _str(self, off: int) -> str:
        btf = self
        while off < btf._str_start and btf._base is not None:
            btf = btf._base
        local = off - btf._str_start
        end = btf._strs.find(b"\0", local)
        if end < 0:
            raise self._error(f"string offset {off} out of range")
        return btf._strs[local:end].decode("utf-8", "replace")

    def _positions(self, *kinds: int) -> list[int]:
        """Word offsets of the own records of these kinds, in id order."""
        positions = self._by_kind.get(kinds)
        if positions is None:
            runs = (g for info, (_, g) in self._groups.items() if _kind(info) in kinds)
            positions = self._by_kind[kinds] = sorted(chain.from_iterable(runs))
        return positions

    def _occurrences(self, needle: bytes) -> Iterator[int]:
        """String offsets, here and in the bases, at which ``needle`` occurs (for a
        split BTF's table, also its start when the table begins with ``needle``
        minus a leading NUL: such tables need no NUL first)."""
        btf: KernelBtf | None = self
        while btf is not None:
            if needle[:1] == b"\0" and btf._strs.startswith(needle[1:]):
                yield btf._str_start - 1
            pos = btf._strs.find(needle)
            while pos >= 0:
                yield btf._str_start + pos
                pos = btf._strs.find(needle, pos + 1)
            btf = btf._base

    def _name_offsets(self, name: str) -> set[int]:
        """Every string offset, here or in a base, at which ``name`` can be read."""
        return set(self._occurrences(name.encode() + b"\0"))

    def _prefix_offsets(self, prefix: str) -> set[int]:
        """Every string offset, here or in a base, of a string that starts with
        ``prefix``: typedefs are then picked by one set lookup, not by decoding
        each of their names."""
        return {at + 1 for at in self._occurrences(b"\0" + prefix.encode())}

    def _find_all(self, name_offsets: set[int], kind: int) -> list[int]:
        """Ids, base first, of the types of ``kind`` named at one of ``name_offsets``."""
        found = self._base._find_all(name_offsets, kind) if self._base is not None else []
        words = self._w
        found += [self._id_at(p) for p in self._positions(kind) if words[p] in name_offsets]
        return found

    # ---- type walking ----------------------------------------------------------

    def kind(self, tid: int) -> Kind:
        return Kind(_kind(self._record(tid)[2]))

    def type_name(self, tid: int) -> str:
        """The type's own name: "" for anonymous types, "void" for id 0."""
        words, pos, _ = self._record(tid)
        return self._str(words[pos]) if tid else "void"

    def find_type_id(self, name: str, kind: str | Kind) -> int | None:
        """Lowest id (base first, like libbpf) of a type with this name and kind
        ("struct", "typedef", "func", "enum", ...); None if there is none."""
        try:
            wanted = kind if isinstance(kind, Kind) else Kind[kind.upper()]
        except KeyError:
            raise ValueError(f"unknown BTF kind {kind!r}") from None
        offsets = self._name_offsets(name) if name else set()
        found = self._find_all(offsets, wanted) if offsets else []
        return found[0] if found else None

    def target(self, tid: int) -> int:
        """The type this one refers to: pointee, aliased or qualified type, array
        element, a FUNC's prototype, a FUNC_PROTO's return type, a VAR's type."""
        words, pos, info = self._record(tid)
        if _kind(info) in _REFERS:
            return words[pos + 2]
        if _kind(info) == Kind.ARRAY:
            return words[pos + 3]
        raise self._error(f"type {tid} ({Kind(_kind(info)).name}) refers to no type")

    def resolve(self, tid: int) -> int:
        """Skip typedefs and const/volatile/restrict/type_tag qualifiers."""
        for _ in range(64):
            words, pos, info = self._record(tid)
            if _kind(info) not in TRANSPARENT_KINDS:
                return tid
            tid = words[pos + 2]
        raise self._error(f"typedef/qualifier loop at type {tid}")

    def type_size(self, tid: int) -> int:
        """Size in bytes, looking through typedefs, qualifiers and arrays."""
        tid = self.resolve(tid)
        words, pos, info = self._record(tid)
        if _kind(info) in _SIZED:
            return words[pos + 2]
        if _kind(info) == Kind.PTR:
            return struct.calcsize("P")  # the BTF is the running kernel's
        if _kind(info) == Kind.ARRAY:
            return words[pos + 5] * self.type_size(words[pos + 3])
        raise self._error(f"type {tid} ({Kind(_kind(info)).name}) has no size")

    def is_signed(self, tid: int) -> bool:
        """True for signed integers and signed enums (after resolve())."""
        words, pos, info = self._record(self.resolve(tid))
        if _kind(info) == Kind.INT:
            return bool(words[pos + 3] >> 24 & 1)  # BTF_INT_SIGNED
        return _kind(info) in (Kind.ENUM, Kind.ENUM64) and bool(info >> 31)

    def struct_member(self, tid: int, name: str) -> Member | None:
        """Member ``name`` of a struct or union (or a typedef of one), also found inside
        anonymous struct/union members as C does; None if there is none."""
        tid = self.resolve(tid)
        words, pos, info = self._record(tid)
        if _kind(info) not in (Kind.STRUCT, Kind.UNION):
            raise self._error(f"type {tid} ({Kind(_kind(info)).name}) is not a struct or union")
        kind_flag = info >> 31
        for item in range(pos + 3, pos + 3 + 3 * (info & 0xFFFF), 3):
            mname, mtype, moffset = self._str(words[item]), words[item + 1], words[item + 2]
            bits, offset = (moffset >> 24, moffset & 0xFFFFFF) if kind_flag else (0, moffset)
            if mname == name:
                if not kind_flag:
                    bits, offset = self._int_bitfield(mtype, offset)
                return Member(offset, mtype, bits)
            if not mname and self.kind(self.resolve(mtype)) in (Kind.STRUCT, Kind.UNION):
                inner = self.struct_member(mtype, name)
                if inner is not None:
                    return inner._replace(offset_bits=offset + inner.offset_bits)
        return None

    def _int_bitfield(self, mtype: int, offset: int) -> tuple[int, int]:
        """Without the kind flag, a bitfield is an INT whose bit count is not its size."""
        words, pos, info = self._record(self.resolve(mtype))
        if _kind(info) != Kind.INT:
            return 0, offset
        encoding = words[pos + 3]
        nbits, shift = encoding & 0xFF, encoding >> 16 & 0xFF
        if shift == 0 and nbits == 8 * words[pos + 2]:
            return 0, offset
        return nbits, offset + shift

    def func_params(self, tid: int) -> list[tuple[str, int]]:
        """(name, type id) of each parameter of a FUNC or FUNC_PROTO; a variadic
        prototype ends with ("", 0)."""
        words, pos, info = self._record(tid)
        if _kind(info) == Kind.FUNC:
            words, pos, info = self._record(words[pos + 2])
        if _kind(info) != Kind.FUNC_PROTO:
            raise self._error(f"type {tid} is not a function")
        items = range(pos + 3, pos + 3 + 2 * (info & 0xFFFF), 2)
        return [(self._str(words[i]), words[i + 1]) for i in items]

    def _param_types(self, proto: int) -> Sequence[int]:
        """Type ids of a FUNC_PROTO's parameters; empty for any other kind."""
        words, pos, info = self._record(proto)
        if _kind(info) != Kind.FUNC_PROTO:
            return ()
        return words[pos + 4 : pos + 4 + 2 * (info & 0xFFFF) : 2]

    # ---- pwru's questions ------------------------------------------------------

    def enum_values(self, name: str) -> dict[str, int]:
        """Enumerators of enum ``name`` (ENUM or ENUM64); {} if there is none."""
        tid = self.find_type_id(name, Kind.ENUM) or self.find_type_id(name, Kind.ENUM64)
        return {} if tid is None else dict(self.enumerators(tid))

    def enumerators(self, tid: int) -> list[tuple[str, int]]:
        """(name, value) of each enumerator of the ENUM/ENUM64 ``tid``, signed as declared."""
        words, pos, info = self._record(self.resolve(tid))
        signed, count = info >> 31, info & 0xFFFF
        out: list[tuple[str, int]] = []
        if _kind(info) == Kind.ENUM:
            for item in range(pos + 3, pos + 3 + 2 * count, 2):
                value = int(words[item + 1])
                out.append((self._str(words[item]), value - (signed and value >> 31) * (1 << 32)))
        else:
            for item in range(pos + 3, pos + 3 + 3 * count, 3):
                value = int(words[item + 2]) << 32 | int(words[item + 1])
                out.append((self._str(words[item]), value - (signed and value >> 63) * (1 << 64)))
        return out

    def enum_ids(self) -> Iterator[int]:
        """Ids of every ENUM and ENUM64, base BTF first."""
        if self._base is not None:
            yield from self._base.enum_ids()
        for pos in self._positions(Kind.ENUM, Kind.ENUM64):
            yield self._id_at(pos)

    def int_encoding(self, tid: int) -> int:
        """BTF_INT_ENCODING bits (signed, char, bool) of an INT type."""
        words, pos, _ = self._record(self.resolve(tid))
        return int(words[pos + 3]) >> 24 & 0xF

    def member_names(self, tid: int) -> list[str]:
        """Names reachable as members of a struct/union, through anonymous members."""
        words, pos, info = self._record(self.resolve(tid))
        names: list[str] = []
        for item in range(pos + 3, pos + 3 + 3 * (info & 0xFFFF), 3):
            name, mtype = self._str(words[item]), int(words[item + 1])
            if name:
                names.append(name)
            elif self.kind(self.resolve(mtype)) in (Kind.STRUCT, Kind.UNION):
                names += self.member_names(mtype)
        return names

    def drop_reasons(self) -> dict[int, str]:
        """enum skb_drop_reason as value -> name (first name wins); {} before 5.17."""
        reasons: dict[int, str] = {}
        for name, value in self.enum_values("skb_drop_reason").items():
            reasons.setdefault(value, name)
        return reasons

    def _skb_types(self) -> tuple[frozenset[int], frozenset[int]]:
        """Ids of (struct sk_buff, pointers to it), each with every typedef and qualifier
        of them, here and in the base. Computed once, so that a parameter is checked
        with one set lookup."""
        if self._skb is None:
            structs: set[int] = set()
            pointers: set[int] = set()
            if self._base is not None:
                structs.update(self._base._skb_types()[0])
                pointers.update(self._base._skb_types()[1])
            words = self._w
            named = self._name_offsets("sk_buff")
            own_structs = self._positions(Kind.STRUCT)
            structs.update(self._id_at(p) for p in own_structs if words[p] in named)
            self._add_aliases(structs)
            ptrs = self._positions(Kind.PTR)
            pointers.update(self._id_at(p) for p in ptrs if words[p + 2] in structs)
            self._add_aliases(pointers)
            self._skb = (frozenset(structs), frozenset(pointers))
        return self._skb

    def _add_aliases(self, ids: set[int]) -> None:
        """Add to ``ids`` every own typedef/qualifier that resolves to one of them."""
        words = self._w
        pending = self._positions(*TRANSPARENT_KINDS)
        while True:
            hits = [p for p in pending if words[p + 2] in ids]
            if not hits:
                return
            ids.update(map(self._id_at, hits))
            done = set(hits)
            pending = [p for p in pending if p not in done]

    def skb_tracepoints(self) -> list[SkbTracepoint]:
        """Tracepoints (typedefs btf_trace_<name> of a pointer to a prototype) with a
        ``struct sk_buff *`` argument, first one wins, sorted by name."""
        skb_pointers = self._skb_types()[1]
        found: list[SkbTracepoint] = []
        words = self._w
        traces = self._prefix_offsets(_TRACE_PREFIX)
        for pos in self._positions(Kind.TYPEDEF):
            if words[pos] not in traces:  # named btf_trace_<name>
                continue
            ptr_words, ptr_pos, ptr_info = self._record(self.resolve(words[pos + 2]))
            if _kind(ptr_info) != Kind.PTR:
                continue
            # The prototype's first parameter is the tracepoint's void *__data.
            args = self._param_types(self.resolve(ptr_words[ptr_pos + 2]))[1:]
            position = _first_in(args, skb_pointers)
            if position >= 0:
                name = self._str(words[pos])[len(_TRACE_PREFIX) :]
                found.append(SkbTracepoint(name, position, len(args), self._id_at(pos)))
        return sorted(found, key=lambda tp: tp.name)

    def skb_functions(self) -> list[SkbFunction]:
        """Functions of this BTF (not of its base) with a ``struct sk_buff *`` among
        their first five parameters, sorted by name; the first wins, both among the
        parameters and among functions of the same name (static ones in two files)."""
        skb_pointers = self._skb_types()[1]
        words = self._w
        by_proto: dict[int, int] = {}
        found: dict[str, SkbFunction] = {}
        for pos in self._positions(Kind.FUNC):
            proto = words[pos + 2]
            position = by_proto.get(proto)
            if position is None:
                args = self._param_types(proto)[:_MAX_FUNC_SKB_ARG]
                position = by_proto[proto] = _first_in(args, skb_pointers)
            if position >= 0:
                name = self._str(words[pos])
                if name not in found:
                    found[name] = SkbFunction(name, position, self._id_at(pos))
        return sorted(found.values(), key=lambda fn: fn.name)


def _first_in(items: Iterable[int], wanted: frozenset[int]) -> int:
    """Index of the first item in ``wanted``, or -1."""
    for index, item in enumerate(items):
        if item in wanted:
            return index
    return -1
