"""The one place that talks to libbpf (bundled in the wheel, or the system's), through ctypes.

Every libbpf function pwru uses is declared once below with its argument and
return types. Failures become Python exceptions carrying errno text;
libbpf's own log goes to the ``pwru.libbpf`` logger (quiet unless --debug).
No other module imports ctypes to reach libbpf.

libbpf >= 1.0 is required: it reports errors the 1.0 way (negative error
codes / NULL + errno) and has the custom SEC() handler API that lets pwru
splice filters into programs just before they are loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import select
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pwru.errors import EnvironmentProblem, PwruError

log = logging.getLogger("pwru.libbpf")

MIN_VERSION = (1, 0)

# enum bpf_prog_type / bpf_attach_type values (include/uapi/linux/bpf.h)
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_TRACE_KPROBE_MULTI = 42
BPF_MAP_TYPE_RINGBUF = 27

# enum libbpf_print_level
_LIBBPF_WARN, _LIBBPF_INFO, _LIBBPF_DEBUG = 0, 1, 2
_LEVELS = {_LIBBPF_WARN: logging.WARNING, _LIBBPF_INFO: logging.INFO, _LIBBPF_DEBUG: logging.DEBUG}


class LibbpfError(PwruError, OSError):
    """A libbpf call failed; ``errno`` and the message say which and why."""

    exit_code = 1

    def __init__(self, what: str, err: int) -> None:
        err = abs(err)
        OSError.__init__(self, err, f"{what}: {os.strerror(err)}")
        self.what = what

    def __str__(self) -> str:
        return f"{self.what}: {os.strerror(self.errno or 0)}"


class VerifierError(LibbpfError):
    """The kernel rejected a program; ``log`` is the verifier's output."""

    def __init__(self, what: str, err: int, verifier_log: str) -> None:
        super().__init__(what, err)
        self.log = verifier_log

    def tail(self, lines: int = 12) -> str:
        """The last lines of the verifier log, which usually name the problem."""
        kept = [ln for ln in self.log.splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])


class LibbpfMissing(EnvironmentProblem):
    """libbpf is not installed or too old."""


# --------------------------------------------------------------------------
# C structures (libbpf 1.1 layouts; later versions only append fields, and
# every struct starts with its own size so libbpf knows which fields we set)


class BpfObjectOpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class BpfProgLoadOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p),
        ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_void_p),
    ]


class BpfTestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class BpfKprobeMultiOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("syms", ctypes.POINTER(ctypes.c_char_p)),
        ("addrs", ctypes.POINTER(ctypes.c_ulong)),
        ("cookies", ctypes.POINTER(ctypes.c_uint64)),
        ("cnt", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class BpfKprobeOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
        ("attach_mode", ctypes.c_int),
    ]


class BpfLinkCreateKprobeMulti(ctypes.Structure):
    """The kprobe_multi member of struct bpf_link_create_opts' union."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("cnt", ctypes.c_uint32),
        ("syms", ctypes.POINTER(ctypes.c_char_p)),
        ("addrs", ctypes.POINTER(ctypes.c_ulong)),
        ("cookies", ctypes.POINTER(ctypes.c_uint64)),
    ]


class BpfLinkCreateOpts(ctypes.Structure):
    """struct bpf_link_create_opts (libbpf 1.x) with the one union member pwru uses."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
        ("kprobe_multi", BpfLinkCreateKprobeMulti),  # the union starts here
    ]


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to nr_line_info (the kernel fills what we ask for)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
    ]


class BtfTypeHeader(ctypes.Structure):
    """struct btf_type: enough to read a type's name and kind."""

    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size_or_type", ctypes.c_uint32),
    ]


_PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_PrepareLoadFn = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(BpfProgLoadOpts), ctypes.c_long
)
_RingBufferSampleFn = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)


class LibbpfProgHandlerOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("cookie", ctypes.c_long),
        ("prog_setup_fn", ctypes.c_void_p),
        ("prog_prepare_load_fn", _PrepareLoadFn),
        ("prog_attach_fn", ctypes.c_void_p),
    ]


# --------------------------------------------------------------------------
# Loading the library and declaring its functions

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_SZ = ctypes.c_size_t

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (_U32, []),
    "libbpf_minor_version": (_U32, []),
    "libbpf_set_print": (_P, [_PrintFn]),
    "libbpf_num_possible_cpus": (_I, []),
    "libbpf_register_prog_handler": (_I, [_S, _I, _I, ctypes.POINTER(LibbpfProgHandlerOpts)]),
    "libbpf_unregister_prog_handler": (_I, [_I]),
    "bpf_object__open_file": (_P, [_S, ctypes.POINTER(BpfObjectOpenOpts)]),
    "bpf_object__load": (_I, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__find_program_by_name": (_P, [_P, _S]),
    "bpf_object__find_map_by_name": (_P, [_P, _S]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_program__name": (_S, [_P]),
    "bpf_program__section_name": (_S, [_P]),
    "bpf_program__fd": (_I, [_P]),
    "bpf_program__set_autoload": (_I, [_P, ctypes.c_bool]),
    "bpf_program__autoload": (ctypes.c_bool, [_P]),
    "bpf_program__insns": (_P, [_P]),
    "bpf_program__insn_cnt": (_SZ, [_P]),
    "bpf_program__set_insns": (_I, [_P, _P, _SZ]),
    "bpf_program__type": (_I, [_P]),
    "bpf_program__attach_kprobe_multi_opts": (_P, [_P, _S, ctypes.POINTER(BpfKprobeMultiOpts)]),
    "bpf_program__attach_kprobe_opts": (_P, [_P, _S, ctypes.POINTER(BpfKprobeOpts)]),
    "bpf_link__destroy": (_I, [_P]),
    "bpf_link__fd": (_I, [_P]),
    "bpf_map__fd": (_I, [_P]),
    "bpf_map__set_max_entries": (_I, [_P, _U32]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(_SZ)]),
    "bpf_map__value_size": (_U32, [_P]),
    "bpf_map__set_value_size": (_I, [_P, _U32]),
    "bpf_map_lookup_elem": (_I, [_I, _P, _P]),
    "bpf_map_update_elem": (_I, [_I, _P, _P, ctypes.c_uint64]),
    "bpf_map_delete_elem": (_I, [_I, _P]),
    "bpf_prog_load": (_I, [_I, _S, _S, _P, _SZ, ctypes.POINTER(BpfProgLoadOpts)]),
    "bpf_prog_test_run_opts": (_I, [_I, ctypes.POINTER(BpfTestRunOpts)]),
    "bpf_raw_tracepoint_open": (_I, [_S, _I]),
    "bpf_link_create": (_I, [_I, _I, _I, ctypes.POINTER(BpfLinkCreateOpts)]),
    "libbpf_probe_bpf_map_type": (_I, [_I, _P]),
    "libbpf_probe_bpf_helper": (_I, [_I, _I, _P]),
    "btf__type_by_id": (ctypes.POINTER(BtfTypeHeader), [_P, _U32]),
    "btf__load_from_kernel_by_id": (_P, [_U32]),
    "btf__free": (None, [_P]),
    "bpf_prog_get_next_id": (_I, [_U32, ctypes.POINTER(_U32)]),
    "bpf_prog_get_fd_by_id": (_I, [_U32]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
    "btf__name_by_offset": (_S, [_P, _U32]),
    "ring_buffer__new": (_P, [_I, _RingBufferSampleFn, _P, _P]),
    "ring_buffer__poll": (_I, [_P, _I]),
    "ring_buffer__consume": (_I, [_P]),
    "ring_buffer__consume_n": (_I, [_P, _SZ]),  # libbpf 1.4+
    "ring_buffer__epoll_fd": (_I, [_P]),
    "ring_buffer__free": (None, [_P]),
}


class _Lib:
    """The loaded shared library with every used function declared."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        self.cdll = cdll
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(cdll, name, None)
            if fn is None:
                continue  # newer optional APIs: callers check has()
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def has(self, name: str) -> bool:
        # not hasattr(): __getattr__ raises LibbpfMissing, which hasattr() lets through
        return name in self.__dict__

    def __getattr__(self, name: str) -> Any:  # only reached for missing symbols
        raise LibbpfMissing(f"the loaded libbpf lacks {name}(); pwru needs libbpf >= 1.0")


_lib: _Lib | None = None
_lib_lock = threading.Lock()


# A platform wheel ships its own libbpf here (packaging/build-wheels.sh); the pure
# sdist does not, and then the system's is used.
BUNDLED_DIR = Path(__file__).parent / "lib"


@dataclass(frozen=True)
class LibraryInfo:
    """Which libbpf was loaded: for --version, --debug and bug reports."""

    path: str  # the file actually mapped, symlinks resolved
    origin: str  # "PWRU_LIBBPF", "bundled" or "system"
    version: str  # "1.5.0" when the file name carries it, else "1.5"


_info: LibraryInfo | None = None


def _open_library() -> tuple[ctypes.CDLL, str]:
    """$PWRU_LIBBPF (a custom build), else the bundled libbpf, else the system's."""
    override = os.environ.get("PWRU_LIBBPF")
    if override:
        try:
            return ctypes.CDLL(override, use_errno=True), "PWRU_LIBBPF"
        except OSError as error:
            raise LibbpfMissing(
                f"cannot load libbpf from PWRU_LIBBPF={override}: {error}"
            ) from None
    for bundled in sorted(BUNDLED_DIR.glob("libbpf.so.*"))[-1:]:
        try:
            return ctypes.CDLL(str(bundled), use_errno=True), "bundled"
        except OSError as error:  # e.g. a glibc older than the wheel's baseline
            logging.getLogger("pwru").warning(
                "cannot load the bundled libbpf (%s); trying the system's", error
            )
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libbpf.so.1", use_errno=True), "system"
    from ctypes.util import find_library  # runs ldconfig: only when the soname fails

    found = find_library("bpf")
    if found:
        with contextlib.suppress(OSError):
            return ctypes.CDLL(found, use_errno=True), "system"
    raise LibbpfMissing(
        "libbpf not found: install libbpf >= 1.0 (Debian/Ubuntu: apt-get install libbpf1)"
    )


def _mapped_file(address: int) -> str:
    """The file this process has mapped at ``address`` (finds a library loaded by name)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, high = (int(part, 16) for part in fields[0].split("-"))
                if low <= address < high and len(fields) == 6:
                    return fields[5].strip()
    except OSError:  # no /proc: pwru cannot trace, but --version still answers
        pass
    return "?"


def _describe(loaded: _Lib, origin: str) -> LibraryInfo:
    major, minor = loaded.libbpf_major_version(), loaded.libbpf_minor_version()
    address = ctypes.cast(loaded.libbpf_major_version, ctypes.c_void_p).value or 0
    path = _mapped_file(address)
    version = f"{major}.{minor}"
    # Shared objects are named libbpf.so.MAJOR.MINOR.PATCH; the API stops at MINOR.
    named = re.fullmatch(r"libbpf\.so\.(\d+\.\d+\.\d+)", os.path.basename(path))
    if named and named.group(1).startswith(f"{version}."):
        version = named.group(1)
    return LibraryInfo(path, origin, version)


def lib() -> _Lib:
    """The loaded libbpf; first call loads it, checks the version, routes its log."""
    global _lib, _info
    with _lib_lock:
        if _lib is None:
            cdll, origin = _open_library()
            if not hasattr(cdll, "libbpf_major_version"):
                raise LibbpfMissing("libbpf is older than 0.6; pwru needs libbpf >= 1.0")
            loaded = _Lib(cdll)
            version = (loaded.libbpf_major_version(), loaded.libbpf_minor_version())
            if version < MIN_VERSION:
                raise LibbpfMissing(
                    f"libbpf {version[0]}.{version[1]} is too old; pwru needs libbpf >= 1.0"
                )
            loaded.libbpf_set_print(_print_callback)
            _info = _describe(loaded, origin)
            logging.getLogger("pwru").debug(
                "using libbpf %s (%s) from %s", _info.version, _info.origin, _info.path
            )
            _lib = loaded
        return _lib


def info() -> LibraryInfo:
    """Which libbpf pwru uses (loads it; needs no privileges)."""
    lib()
    assert _info is not None
    return _info


def version() -> tuple[int, int]:
    """The (major, minor) version of the loaded libbpf."""
    loaded = lib()
    return (loaded.libbpf_major_version(), loaded.libbpf_minor_version())


# --------------------------------------------------------------------------
# libbpf's log: formatted with libc's vsnprintf, sent to logging, and kept
# briefly so that a failed load can show the verifier's words.

_libc = ctypes.CDLL(None)
_recent_warnings: deque[str] = deque(maxlen=4096)

if os.uname().machine in ("aarch64", "arm64"):

    class _VaList(ctypes.Structure):  # AAPCS64 va_list is a 32-byte struct
        _fields_ = [("stack", _P), ("gr_top", _P), ("vr_top", _P), ("gr_offs", _I), ("vr_offs", _I)]

    _PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, _VaList)
    _SIGNATURES["libbpf_set_print"] = (_P, [_PrintFn])
    _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _VaList]
else:  # x86_64 va_list decays to a pointer
    _libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int


def _format_libbpf_message(fmt: bytes, args: Any) -> str:
    buf = ctypes.create_string_buffer(4096)
    needed = _libc.vsnprintf(buf, len(buf), fmt, args)
    if needed >= len(buf):
        # va_list may be consumed; the truncated text is still useful.
        return buf.value.decode(errors="replace") + "..."
    return buf.value.decode(errors="replace")


def _print_to_logging(level: int, fmt: bytes, args: Any) -> int:
    try:
        py_level = _LEVELS.get(level, logging.DEBUG)
        if level != _LIBBPF_WARN and not log.isEnabledFor(py_level):
            return 0  # a load prints ~6000 debug lines: formatting them cost ~40 ms
        text = _format_libbpf_message(fmt, args)
        if level == _LIBBPF_WARN:
            _recent_warnings.append(text)
        log.log(py_level, "%s", text.rstrip("\n"))
    except Exception:  # never let an exception cross into C
        pass
    return 0


_print_callback = _PrintFn(_print_to_logging)  # kept alive for as long as libbpf may call it


def _errno() -> int:
    return ctypes.get_errno() or errno.EINVAL


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        raise LibbpfError(what, _errno())
    return ptr


def _check_ret(ret: int, what: str) -> int:
    if ret < 0:
        raise LibbpfError(what, ret)
    return ret


# --------------------------------------------------------------------------
# Objects, programs, maps


class BpfProgram:
    """A program inside an opened BpfObject (a borrowed libbpf pointer)."""

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    @property
    def name(self) -> str:
        return (lib().bpf_program__name(self.ptr) or b"").decode()

    @property
    def section(self) -> str:
        return (lib().bpf_program__section_name(self.ptr) or b"").decode()

    @property
    def fd(self) -> int:
        return int(lib().bpf_program__fd(self.ptr))

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self.ptr))

    def set_autoload(self, enabled: bool) -> None:
        _check_ret(
            lib().bpf_program__set_autoload(self.ptr, enabled), f"set autoload of {self.name}"
        )

    def insns(self) -> bytes:
        """The program's instructions as libbpf currently holds them (8 bytes each)."""
        count = lib().bpf_program__insn_cnt(self.ptr)
        ptr = lib().bpf_program__insns(self.ptr)
        return ctypes.string_at(ptr, count * 8) if ptr and count else b""

    def set_insns(self, code: bytes) -> None:
        """Replace the instructions; only valid before or during load preparation."""
        if len(code) % 8:
            raise ValueError("BPF instructions are 8 bytes each")
        buf = ctypes.create_string_buffer(code, len(code))
        _check_ret(
            lib().bpf_program__set_insns(self.ptr, ctypes.cast(buf, _P), len(code) // 8),
            f"set instructions of {self.name}",
        )

    def attach_kprobe(self, func: str, cookie: int = 0, retprobe: bool = False) -> BpfLink:
        opts = BpfKprobeOpts(sz=ctypes.sizeof(BpfKprobeOpts), bpf_cookie=cookie, retprobe=retprobe)
        ptr = lib().bpf_program__attach_kprobe_opts(self.ptr, func.encode(), ctypes.byref(opts))
        kind = "kretprobe" if retprobe else "kprobe"
        return BpfLink(_check_ptr(ptr, f"attach {kind} to {func}"))

    def attach_kprobe_addr(self, addr: int, cookie: int = 0, retprobe: bool = False) -> BpfLink:
        """kprobe (or kretprobe) at a kernel address (no name: static functions can
        share one)."""
        opts = BpfKprobeOpts(
            sz=ctypes.sizeof(BpfKprobeOpts), bpf_cookie=cookie, offset=addr, retprobe=retprobe
        )
        ptr = lib().bpf_program__attach_kprobe_opts(self.ptr, None, ctypes.byref(opts))
        kind = "kretprobe" if retprobe else "kprobe"
        return BpfLink(_check_ptr(ptr, f"attach {kind} at {addr:#x}"))

    def attach_kprobe_multi(self, addrs: list[int], cookies: list[int] | None = None) -> BpfLink:
        addr_arr = (ctypes.c_ulong * len(addrs))(*addrs)
        opts = BpfKprobeMultiOpts(
            sz=ctypes.sizeof(BpfKprobeMultiOpts), addrs=addr_arr, cnt=len(addrs)
        )
        if cookies is not None:
            opts.cookies = (ctypes.c_uint64 * len(cookies))(*cookies)
        ptr = lib().bpf_program__attach_kprobe_multi_opts(self.ptr, None, ctypes.byref(opts))
        return BpfLink(_check_ptr(ptr, f"attach kprobe-multi ({len(addrs)} functions)"))


class BpfLink:
    """An attachment made by libbpf; destroy() detaches it."""

    def __init__(self, ptr: int) -> None:
        self.ptr: int | None = ptr

    def destroy(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = None


def possible_cpus() -> int:
    """CPUs the kernel may bring up (per-CPU map values come in this number)."""
    return _check_ret(lib().libbpf_num_possible_cpus(), "count possible CPUs")


class BpfMap:
    """A map inside an opened BpfObject (a borrowed libbpf pointer)."""

    def __init__(self, ptr: int, name: str) -> None:
        self.ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return int(lib().bpf_map__fd(self.ptr))

    def set_max_entries(self, entries: int) -> None:
        _check_ret(lib().bpf_map__set_max_entries(self.ptr, entries), f"resize map {self.name}")

    def set_value_size(self, size: int) -> None:
        """Before load: values of ``size`` bytes (maps declared by size, without BTF types)."""
        _check_ret(lib().bpf_map__set_value_size(self.ptr, size), f"resize values of {self.name}")

    def _initial_value(self) -> ctypes.Array[ctypes.c_char]:
        size = ctypes.c_size_t(0)
        ptr = _check_ptr(
            lib().bpf_map__initial_value(self.ptr, ctypes.byref(size)), f"map {self.name}"
        )
        return (ctypes.c_char * size.value).from_address(ptr)

    def initial_size(self) -> int:
        """Size in bytes of a global-data map (.rodata, .bss) as compiled."""
        return len(self._initial_value())

    def set_initial_value(self, data: bytes) -> None:
        """Write a global-data map's contents before load; ``data`` must fill it exactly."""
        view = self._initial_value()
        if len(data) != len(view):
            raise ValueError(f"map {self.name} holds {len(view)} bytes, not {len(data)}")
        ctypes.memmove(view, data, len(data))

    def lookup_percpu_u64(self, key: int) -> list[int]:
        """Per-CPU values of a u32-keyed PERCPU_ARRAY of u64."""
        ncpu = possible_cpus()
        values = (ctypes.c_uint64 * ncpu)()
        k = ctypes.c_uint32(key)
        _check_ret(
            lib().bpf_map_lookup_elem(self.fd, ctypes.byref(k), values), f"look up map {self.name}"
        )
        return list(values)


@dataclass
class BtfName:
    """Name and kind of one type in an object's BTF."""

    name: str
    kind: int


class BpfObject:
    """An opened (and later loaded) BPF ELF object; close() frees everything it holds."""

    # Verifier log space. libbpf asks for a log only when a load fails (it then
    # retries with log level 1 into this buffer); kernels >= 6.4 keep its tail
    # when it overflows, which is the part that names the problem.
    VERIFIER_LOG_SIZE = 8 << 20

    def __init__(self, ptr: int, path: str, log_buf: ctypes.Array[ctypes.c_char]) -> None:
        self.ptr: int | None = ptr
        self.path = path
        self._log_buf: ctypes.Array[ctypes.c_char] | None = log_buf

    @classmethod
    def open_file(cls, path: str, btf_custom_path: str | None = None) -> BpfObject:
        opts = BpfObjectOpenOpts(sz=ctypes.sizeof(BpfObjectOpenOpts))
        if btf_custom_path:
            opts.btf_custom_path = btf_custom_path.encode()
        log_buf = ctypes.create_string_buffer(cls.VERIFIER_LOG_SIZE)
        opts.kernel_log_buf = ctypes.addressof(log_buf)
        opts.kernel_log_size = len(log_buf)
        ptr = lib().bpf_object__open_file(path.encode(), ctypes.byref(opts))
        return cls(_check_ptr(ptr, f"open BPF object {path}"), path, log_buf)

    def _live(self) -> int:
        if not self.ptr:
            raise ValueError("BPF object is closed")
        return self.ptr

    def programs(self) -> Iterator[BpfProgram]:
        prev: int | None = None
        while True:
            prev = lib().bpf_object__next_program(self._live(), prev)
            if not prev:
                return
            yield BpfProgram(prev)

    def program(self, name: str) -> BpfProgram:
        ptr = lib().bpf_object__find_program_by_name(self._live(), name.encode())
        return BpfProgram(_check_ptr(ptr, f"find program {name}"))

    def map(self, name: str) -> BpfMap:
        ptr = lib().bpf_object__find_map_by_name(self._live(), name.encode())
        return BpfMap(_check_ptr(ptr, f"find map {name}"), name)

    def btf_name(self, type_id: int) -> BtfName:
        """Name and kind of a type in the object's own BTF (e.g. from func_info)."""
        btf = _check_ptr(lib().bpf_object__btf(self._live()), "object BTF")
        header = lib().btf__type_by_id(btf, type_id)
        if not header:
            raise LibbpfError(f"BTF type {type_id}", errno.ENOENT)
        name = lib().btf__name_by_offset(btf, header.contents.name_off) or b""
        return BtfName(name.decode(), (header.contents.info >> 24) & 0x1F)

    def load(self) -> None:
        """Load all autoload programs; a verifier rejection raises VerifierError."""
        _recent_warnings.clear()
        ret = lib().bpf_object__load(self._live())
        if ret < 0:
            warnings = "".join(_recent_warnings)
            _recent_warnings.clear()
            failed = re.search(r"prog '([^']+)': BPF program load failed", warnings)
            verifier_log = self._log_buf.value.decode(errors="replace") if self._log_buf else ""
            if failed:
                what = f"the kernel rejected BPF program {failed.group(1)}"
                raise VerifierError(what, ret, verifier_log)
            raise LibbpfError(f"load {os.path.basename(self.path)}", ret)

    def close(self) -> None:
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = None
        self._log_buf = None


# --------------------------------------------------------------------------
# Custom SEC() handlers: how pwru edits programs right before they load


@dataclass
class LoadAttrs:
    """The load attributes libbpf is about to use, as the prepare hook sees them.

    Changing a field here changes what the kernel receives. Buffers assigned
    through set_func_info()/set_line_info() are kept alive by this object's
    owner (the hook keeps its LoadAttrs until load returns).
    """

    opts: Any  # ctypes pointer to BpfProgLoadOpts
    _keep: list[Any]

    @property
    def func_info(self) -> tuple[bytes, int]:
        o = self.opts.contents
        size = o.func_info_cnt * o.func_info_rec_size
        return (
            ctypes.string_at(o.func_info, size) if o.func_info and size else b"",
            o.func_info_rec_size,
        )

    @property
    def line_info(self) -> tuple[bytes, int]:
        o = self.opts.contents
        size = o.line_info_cnt * o.line_info_rec_size
        return (
            ctypes.string_at(o.line_info, size) if o.line_info and size else b"",
            o.line_info_rec_size,
        )

    def set_func_info(self, data: bytes, rec_size: int) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        self._keep.append(buf)
        o = self.opts.contents
        o.func_info, o.func_info_cnt, o.func_info_rec_size = (
            ctypes.addressof(buf),
            len(data) // rec_size,
            rec_size,
        )

    def set_line_info(self, data: bytes, rec_size: int) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        self._keep.append(buf)
        o = self.opts.contents
        o.line_info, o.line_info_cnt, o.line_info_rec_size = (
            ctypes.addressof(buf),
            len(data) // rec_size,
            rec_size,
        )

    @property
    def attach_btf_id(self) -> int:
        return int(self.opts.contents.attach_btf_id)

    @attach_btf_id.setter
    def attach_btf_id(self, value: int) -> None:
        self.opts.contents.attach_btf_id = value

    @property
    def attach_prog_fd(self) -> int:
        return int(self.opts.contents.attach_prog_fd)

    @attach_prog_fd.setter
    def attach_prog_fd(self, value: int) -> None:
        self.opts.contents.attach_prog_fd = value

    @property
    def prog_btf_fd(self) -> int:
        return int(self.opts.contents.prog_btf_fd)


PrepareHook = Callable[[BpfProgram, LoadAttrs], None]


class ProgHandler:
    """A registered custom SEC() handler; unregister() removes it.

    libbpf calls ``hook`` for every program of that section just before it
    loads it, with final (relocated, subprograms appended) instructions.
    An exception in the hook is kept and re-raised by ``reraise()``: it
    cannot travel through libbpf's C frames.
    """

    def __init__(self, section: str, prog_type: int, attach_type: int, hook: PrepareHook) -> None:
        self.hook = hook
        self.error: BaseException | None = None
        self.keep: list[Any] = []
        self._c_hook = _PrepareLoadFn(self._call)
        opts = LibbpfProgHandlerOpts(
            sz=ctypes.sizeof(LibbpfProgHandlerOpts), prog_prepare_load_fn=self._c_hook
        )
        self.id = _check_ret(
            lib().libbpf_register_prog_handler(
                section.encode(), prog_type, attach_type, ctypes.byref(opts)
            ),
            f'register handler for SEC("{section}")',
        )

    def _call(self, prog: int, opts: Any, cookie: int) -> int:
        try:
            self.hook(BpfProgram(prog), LoadAttrs(opts, self.keep))
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised by reraise()
            self.error = exc
            return -errno.ECANCELED

    def reraise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def unregister(self) -> None:
        if self.id > 0:
            lib().libbpf_unregister_prog_handler(self.id)
            self.id = 0
        self.keep.clear()


# --------------------------------------------------------------------------
# Low-level program loading, attaching, testing


def prog_load(
    prog_type: int,
    name: str,
    insns: bytes,
    *,
    expected_attach_type: int = 0,
    attach_btf_id: int = 0,
    attach_prog_fd: int = 0,
    prog_btf_fd: int = 0,
    func_info: tuple[bytes, int] = (b"", 0),
    line_info: tuple[bytes, int] = (b"", 0),
    license: str = "GPL",
    log_size: int = 1 << 20,
) -> int:
    """Load raw instructions; returns the program fd. Rejections raise VerifierError."""
    code = ctypes.create_string_buffer(insns, len(insns))
    log_buf = ctypes.create_string_buffer(log_size)
    opts = BpfProgLoadOpts(sz=ctypes.sizeof(BpfProgLoadOpts))
    opts.expected_attach_type = expected_attach_type
    opts.attach_btf_id = attach_btf_id
    opts.attach_prog_fd = attach_prog_fd
    keep: list[Any] = []
    if prog_btf_fd > 0 and func_info[0]:
        opts.prog_btf_fd = prog_btf_fd
        for field, (data, rec) in (("func_info", func_info), ("line_info", line_info)):
            if data:
                buf = ctypes.create_string_buffer(data, len(data))
                keep.append(buf)
                setattr(opts, field, ctypes.addressof(buf))
                setattr(opts, f"{field}_cnt", len(data) // rec)
                setattr(opts, f"{field}_rec_size", rec)
    opts.log_size = log_size
    opts.log_buf = ctypes.addressof(log_buf)
    fd = lib().bpf_prog_load(
        prog_type, name[:15].encode(), license.encode(), code, len(insns) // 8, ctypes.byref(opts)
    )
    if fd < 0:
        err = fd
        verifier_log = log_buf.value.decode(errors="replace")
        if verifier_log:
            raise VerifierError(f"load program {name}", err, verifier_log)
        raise LibbpfError(f"load program {name}", err)
    return int(fd)


def raw_tracepoint_open(prog_fd: int, name: str | None = None) -> int:
    """Attach a raw or BTF tracepoint program; returns the link fd (close to detach)."""
    fd = lib().bpf_raw_tracepoint_open(name.encode() if name else None, prog_fd)
    return _check_ret(fd, f"attach tracepoint {name or ''}".strip())


def link_create_kprobe_multi(prog_fd: int, addrs: list[int]) -> int:
    """Attach a kprobe.multi program to kernel addresses; returns the link fd."""
    addr_arr = (ctypes.c_ulong * len(addrs))(*addrs)
    opts = BpfLinkCreateOpts(sz=ctypes.sizeof(BpfLinkCreateOpts))
    opts.kprobe_multi.cnt = len(addrs)
    opts.kprobe_multi.addrs = addr_arr
    fd = lib().bpf_link_create(prog_fd, 0, BPF_TRACE_KPROBE_MULTI, ctypes.byref(opts))
    return _check_ret(fd, f"attach kprobe-multi ({len(addrs)} functions)")


def probe_map_type(map_type: int) -> bool:
    """Whether the kernel creates maps of this BPF_MAP_TYPE_* (libbpf's own probe)."""
    return bool(_check_ret(lib().libbpf_probe_bpf_map_type(map_type, None), "probe map type"))


def probe_helper(prog_type: int, helper_id: int) -> bool:
    """Whether programs of this type may call this helper (libbpf's own probe)."""
    ret = lib().libbpf_probe_bpf_helper(prog_type, helper_id, None)
    return bool(_check_ret(ret, f"probe helper {helper_id}"))


@dataclass
class TestRunResult:
    retval: int
    duration_ns: int


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> TestRunResult:
    """Run a program once over ``data`` in the kernel (BPF_PROG_TEST_RUN)."""
    buf = ctypes.create_string_buffer(data, max(len(data), 1))
    out = ctypes.create_string_buffer(len(data) + 256)
    opts = BpfTestRunOpts(sz=ctypes.sizeof(BpfTestRunOpts))
    opts.data_in, opts.data_size_in = ctypes.addressof(buf), len(data)
    opts.data_out, opts.data_size_out = ctypes.addressof(out), len(out)
    opts.repeat = repeat
    _check_ret(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "test-run program")
    return TestRunResult(int(opts.retval), int(opts.duration))


# --------------------------------------------------------------------------
# Ring buffer


class RingBuffer:
    """Reads a BPF_MAP_TYPE_RINGBUF map; each record goes to ``on_sample``.

    The record's memory belongs to the ring: ``on_sample`` must copy what it
    keeps (decoding does). An exception in ``on_sample`` stops the poll and
    is re-raised from poll().
    """

    def __init__(self, map_fd: int, on_sample: Callable[[bytes], None]) -> None:
        self._on_sample = on_sample
        self._error: BaseException | None = None
        self._c_cb = _RingBufferSampleFn(self._sample)
        self.ptr: int | None = _check_ptr(
            lib().ring_buffer__new(map_fd, self._c_cb, None, None), "create ring buffer reader"
        )

    def _sample(self, _ctx: int | None, data: int, size: int) -> int:
        try:
            self._on_sample(ctypes.string_at(data, size))
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised by poll()
            self._error = exc
            return -errno.ECANCELED

    def _reraise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def poll(self, timeout_ms: int, limit: int = 4096) -> int:
        """Wait up to timeout_ms for records and handle them (at most ``limit`` where
        libbpf can stop early, 1.4+; older ones consume while records keep coming)."""
        if not self.ptr:
            return 0
        if not lib().has("ring_buffer__consume_n"):
            ret = lib().ring_buffer__poll(self.ptr, timeout_ms)
        else:
            ret = lib().ring_buffer__consume_n(self.ptr, limit)
            if ret == 0:
                select.select([lib().ring_buffer__epoll_fd(self.ptr)], [], [], timeout_ms / 1000)
                ret = lib().ring_buffer__consume_n(self.ptr, limit)
        self._reraise()
        if ret == -errno.EINTR:
            return 0
        return _check_ret(ret, "poll ring buffer")

    def consume(self) -> int:
        """Handle every record already in the ring without waiting."""
        if not self.ptr:
            return 0
        ret = lib().ring_buffer__consume(self.ptr)
        self._reraise()
        return _check_ret(ret, "consume ring buffer")

    def close(self) -> None:
        if self.ptr:
            lib().ring_buffer__free(self.ptr)
            self.ptr = None


# --------------------------------------------------------------------------
# Programs already loaded in the kernel (targets for fentry on tc/XDP programs)


@dataclass
class LoadedProgram:
    """A BPF program some other tool loaded; ``fd`` is ours to close."""

    id: int
    fd: int
    type: int
    name: str  # the function's name from the program's BTF, else the short kernel name
    func_btf_id: int  # BTF id of the program's main function (0: the program has no BTF)


def _prog_func(fd: int, info: BpfProgInfo) -> tuple[str, int]:
    """Name and BTF id of the main function, from the program's func_info."""
    record = (ctypes.c_uint32 * 2)()
    detail = BpfProgInfo(nr_func_info=1, func_info_rec_size=8, func_info=ctypes.addressof(record))
    size = ctypes.c_uint32(ctypes.sizeof(detail))
    if (
        info.btf_id == 0
        or lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(detail), ctypes.byref(size)) < 0
    ):
        return info.name.decode(errors="replace"), 0
    type_id = int(record[1])
    btf = lib().btf__load_from_kernel_by_id(info.btf_id)
    name = info.name.decode(errors="replace")
    if btf:
        header = lib().btf__type_by_id(btf, type_id)
        if header:
            name = (
                lib().btf__name_by_offset(btf, header.contents.name_off) or b""
            ).decode() or name
        lib().btf__free(btf)
    return name, type_id


def xlated_code(fd: int) -> bytes:
    """A loaded program's instructions as the verifier left them (``bpftool prog dump
    xlated``): with root's view, a helper call's imm is its address minus
    ``__bpf_call_base``."""
    info = BpfProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check_ret(
        lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
        "read program info",
    )
    length = int(info.xlated_prog_len)
    code = ctypes.create_string_buffer(max(length, 1))
    detail = BpfProgInfo(xlated_prog_len=length, xlated_prog_insns=ctypes.addressof(code))
    size = ctypes.c_uint32(ctypes.sizeof(detail))
    _check_ret(
        lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(detail), ctypes.byref(size)),
        "read program instructions",
    )
    return code.raw[: min(length, int(detail.xlated_prog_len))]


def loaded_programs(types: set[int]) -> list[LoadedProgram]:
    """Every loaded program of the given BPF_PROG_TYPE_* values, opened by id."""
    found: list[LoadedProgram] = []
    current = ctypes.c_uint32(0)
    while lib().bpf_prog_get_next_id(current.value, ctypes.byref(current)) == 0:
        fd = lib().bpf_prog_get_fd_by_id(current.value)
        if fd < 0:
            continue  # gone meanwhile
        info = BpfProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if (
            lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) < 0
            or info.type not in types
        ):
            os.close(fd)
            continue
        name, func_btf_id = _prog_func(fd, info)
        found.append(LoadedProgram(int(info.id), fd, int(info.type), name, func_btf_id))
    return found
