"""Which kernel functions to probe: those taking a ``struct sk_buff *`` that can be traced.

Three sources are intersected:

1. BTF says which functions take an ``sk_buff *`` among their first five
   parameters, and where (``KernelBtf.skb_functions``): vmlinux, plus the modules
   named by ``--kmods`` or every module with ``--all-kmods`` (split BTF in
   ``/sys/kernel/btf/<module>``).
2. ``/proc/kallsyms`` gives their addresses (kprobe-multi attaches by address). A
   BTF function without a symbol of exactly its name was inlined everywhere or
   only exists as a compiler clone (``name.isra.0``, ``name.constprop.0``) whose
   parameters no longer match BTF; it is skipped.
3. ftrace's list of functions it can hook, in tracefs, says which of those can
   be probed (functions marked ``notrace``, or in files built without ftrace, are
   not). ``available_filter_functions_addrs`` (Linux 6.5+) lists each traceable
   copy by address; ``available_filter_functions`` only by name, once per copy.
   When tracefs is not mounted, it is mounted for the read and unmounted again.
   When neither list can be read (some kernels answer EPERM even to root), the
   result is BTF ∩ kallsyms less the functions in init code (freed after boot)
   and ``noinstr`` code, found from the kernel's section markers in kallsyms; a
   note says so, as other ``notrace`` functions may then refuse to attach.

Names that kallsyms lists more than once are static functions of the same name in
several files. The BTF of such a name describes every copy (pahole 1.25+, which
kernels since 6.4 use for this, leaves out names whose copies disagree in
prototype), so each copy is probed: one AttachTarget per
address, all with the same name, as cilium/pwru does with kprobe-multi (it attaches
every address kallsyms has for a name). The exception is a name-only ftrace list
that has fewer entries for the name than kallsyms has copies: some copy cannot be
traced and nothing says which, and one untraceable address makes a whole
kprobe-multi attachment fail, so the name is skipped as "ambiguous name".

Each BTF function that is not probed is counted under the first reason that
applies, in this order: "--filter-func", "not in kallsyms", "not traceable",
"ambiguous name", "alias" (another probed function has the same address; the
name kallsyms gives the address is kept).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pwru.errors import UsageError
from pwru.kernel import features
from pwru.kernel.btf import BtfError, KernelBtf, SkbFunction
from pwru.kernel.kallsyms import Kallsyms, Symbol

BTF_DIR = "/sys/kernel/btf"
TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
AVAILABLE = "available_filter_functions"
AVAILABLE_ADDRS = "available_filter_functions_addrs"

SKIP_FILTER = "--filter-func"
SKIP_NO_SYMBOL = "not in kallsyms"
SKIP_NOT_TRACEABLE = "not traceable"
SKIP_AMBIGUOUS = "ambiguous name"
SKIP_ALIAS = "alias"

_MOUNT_TIMEOUT_S = 10.0
# Section markers in kallsyms around code ftrace cannot hook (include/asm-generic/sections.h).
_UNTRACEABLE_SECTIONS = (
    ("_sinittext", "_einittext"),
    ("__noinstr_text_start", "__noinstr_text_end"),
    ("__entry_text_start", "__entry_text_end"),
)


@dataclass(frozen=True)
class AttachTarget:
    """One attach point: a function taking a ``struct sk_buff *``."""

    name: str
    skb_arg: int  # 0-based parameter position of the struct sk_buff *
    addr: int  # from kallsyms (kprobe-multi attaches by address)
    module: str  # "" for vmlinux


@dataclass
class Discovery:
    """What ``discover`` found, and why the rest was left out."""

    functions: list[AttachTarget]  # what to attach, sorted by name (then module, address)
    btf_total: int  # skb functions found in BTF (vmlinux + modules)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (never 0)
    source: str = AVAILABLE  # which list said what is traceable, or the fallback and why
    notes: list[str] = field(default_factory=list)  # one-line remarks for the user


@dataclass
class _Ftrace:
    """ftrace's list of traceable functions, as read from tracefs."""

    path: str
    names: Counter[str]  # "name" or "name [module]" -> number of traceable copies
    ips: array[int] | None  # sorted call-site addresses (from ..._addrs), None if not given


def discover(
    kernel_btf: KernelBtf,
    ksyms: Kallsyms,
    *,
    wanted: Callable[[str], bool],
    kmods: Sequence[str] = (),
    all_kmods: bool = False,
    btf_dir: str = BTF_DIR,
    tracing_dirs: Sequence[str] = TRACING_DIRS,
    mount_tracefs: bool = True,
) -> Discovery:
    """The functions taking an ``sk_buff *`` to probe (see the module docstring).

    ``wanted`` is the ``--filter-func`` predicate on names. ``kmods`` names modules
    whose BTF (``btf_dir``/<module>) is searched too; ``all_kmods`` searches every
    module there. A named module without BTF raises UsageError; unreadable BTF
    raises BtfError.
    """
    notes: list[str] = []
    candidates: list[tuple[str, SkbFunction]] = [("", fn) for fn in kernel_btf.skb_functions()]
    for module, btf in _module_btfs(kernel_btf, kmods, all_kmods, btf_dir, notes):
        candidates += [(module, fn) for fn in btf.skb_functions()]
    skipped: Counter[str] = Counter()
    selected = [(module, fn) for module, fn in candidates if wanted(fn.name)]
    skipped[SKIP_FILTER] = len(candidates) - len(selected)

    ftrace = _read_ftrace(tracing_dirs, mount_tracefs) if selected else None
    if isinstance(ftrace, _Ftrace):
        source = os.path.basename(ftrace.path)
    elif ftrace is not None:
        source = f"BTF and kallsyms ({ftrace.short})"
        notes.append(f"{ftrace.detail}: using BTF and kallsyms; some functions may not attach")
    else:
        source = "BTF (no function selected)"
    traceable = _Traceable(ksyms, ftrace if isinstance(ftrace, _Ftrace) else None)
    symbols = ksyms.find([fn.name for _, fn in selected] + traceable.markers)
    traceable.set_untraceable(symbols)
    functions: list[AttachTarget] = []
    for module, fn in selected:
        copies = [s for s in symbols.get(fn.name, ()) if s.module == module]
        why_not = SKIP_NO_SYMBOL if not copies else ""
        if copies:
            copies, why_not = traceable.copies(fn.name, module, copies)
        if why_not:
            skipped[why_not] += 1
            continue
        functions += [AttachTarget(fn.name, fn.skb_arg, s.addr, module) for s in copies]

    functions = _drop_aliases(functions, ksyms, skipped)
    functions.sort(key=lambda f: (f.name, f.module, f.addr))
    return Discovery(
        functions=functions,
        btf_total=len(candidates),
        skipped={reason: count for reason, count in skipped.items() if count},
        source=source,
        notes=notes,
    )


class _Traceable:
    """Which copies of a function ftrace can hook: by ftrace's call-site addresses,
    by its name list, or (without ftrace's list) all but those in init/noinstr code."""

    markers = [name for section in _UNTRACEABLE_SECTIONS for name in section]

    def __init__(self, ksyms: Kallsyms, ftrace: _Ftrace | None) -> None:
        self.ksyms = ksyms
        self.ftrace = ftrace
        self.untraceable: list[tuple[int, int]] = []

    def set_untraceable(self, symbols: dict[str, list[Symbol]]) -> None:
        """Note the untraceable sections (needed only without ftrace's list)."""
        if self.ftrace is None:
            self.untraceable = _untraceable_sections(symbols)

    def copies(self, name: str, module: str, copies: list[Symbol]) -> tuple[list[Symbol], str]:
        """The traceable copies, or [] and the skip reason."""
        ftrace = self.ftrace
        if ftrace is None:
            copies = [
                s for s in copies if not any(lo <= s.addr < hi for lo, hi in self.untraceable)
            ]
        elif ftrace.ips is not None:
            copies = [s for s in copies if _traced(s, ftrace.ips, self.ksyms)]
        else:
            listed = ftrace.names[f"{name} [{module}]" if module else name]
            if 0 < listed < len(copies):
                return [], SKIP_AMBIGUOUS
            copies = copies if listed else []
        return copies, "" if copies else SKIP_NOT_TRACEABLE


# ---- BTF of modules --------------------------------------------------------------


def _module_btfs(
    kernel_btf: KernelBtf,
    kmods: Sequence[str],
    all_kmods: bool,
    btf_dir: str,
    notes: list[str],
) -> list[tuple[str, KernelBtf]]:
    """(module, split BTF) for ``--kmods`` / ``--all-kmods``."""
    if kmods or all_kmods:  # 5.10 has BTF for vmlinux only
        features.module_btf(btf_dir).require("--all-kmods" if all_kmods else "--kmods")
    if all_kmods:
        try:
            names = sorted(n for n in os.listdir(btf_dir) if n != "vmlinux")
        except OSError as err:
            raise BtfError(f"--all-kmods: cannot list {btf_dir}: {err.strerror}") from None
    else:
        names = list(dict.fromkeys(m for m in kmods if m and m != "vmlinux"))
        for module in names:
            if "/" in module or not os.path.isfile(os.path.join(btf_dir, module)):
                raise UsageError(
                    f"--kmods: module {module!r} has no BTF in {btf_dir} "
                    "(is it loaded, and built with CONFIG_DEBUG_INFO_BTF_MODULES?)"
                )
    found: list[tuple[str, KernelBtf]] = []
    for module in names:
        try:
            found.append((module, KernelBtf.load(os.path.join(btf_dir, module), base=kernel_btf)))
        except BtfError as err:
            if not all_kmods:
                raise
            notes.append(f"skipping module {module}: {err}")
    return found


# ---- ftrace's list -------------------------------------------------------------


@dataclass
class _Unread:
    """Why ftrace's list could not be read: a few words for ``source``, a line for notes."""

    short: str
    detail: str


def _read_ftrace(tracing_dirs: Sequence[str], mount_tracefs: bool) -> _Ftrace | _Unread:
    """ftrace's list from the first tracing directory that has one.

    When no directory has it, tracefs is mounted on the first one (unless that is a
    mount point already), read, and unmounted again."""
    found = _read_first(tracing_dirs)
    if found is not None:
        return found
    where = " or ".join(tracing_dirs) or "no tracing directory"
    missing = _Unread("tracefs not found", f"no {AVAILABLE} in {where}")
    target = tracing_dirs[0] if tracing_dirs else ""
    if not mount_tracefs or not os.path.isdir(target) or os.path.ismount(target):
        return missing
    failure = _run(["mount", "-t", "tracefs", "nodev", target])
    if failure:
        return _Unread("tracefs not mounted", f"cannot mount tracefs on {target} ({failure})")
    try:
        found = _read_first([target])
    finally:
        _run(["umount", target])
    return found if found is not None else missing


def _read_first(tracing_dirs: Sequence[str]) -> _Ftrace | _Unread | None:
    """The list from the first directory that has a readable one (with addresses if
    possible); else why it could not be read, or None if no directory has it."""
    errors: dict[str, str] = {}  # file name -> first error other than "missing"
    for directory in tracing_dirs:
        for name in (AVAILABLE_ADDRS, AVAILABLE):
            path = os.path.join(directory, name)
            try:
                with open(path, encoding="ascii", errors="replace") as file:
                    text = file.read()
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ENOTDIR):
                    errors.setdefault(name, f"cannot read {path} ({err.strerror})")
                continue
            return _parse_ftrace(path, text, with_addrs=name == AVAILABLE_ADDRS)
    if not errors:
        return None
    return _Unread(f"{AVAILABLE} unreadable", errors.get(AVAILABLE) or errors[AVAILABLE_ADDRS])


# ftrace prints records it cannot place at a function start (left over from overridden
# weak functions) as "__ftrace_invalid_address___<offset>"; they hook nothing.
_ADDR_LINE = re.compile(r"^([0-9a-fA-F]+) (?!__ftrace_invalid_address__)(.*)$", re.MULTILINE)
# How far into a function its ftrace call site may be: 0, 4 after x86's endbr64
# (IBT), 4 or 8 on arm64 (patchable NOPs, BTI landing pad); 16 leaves room.
_MAX_CALL_SITE_OFFSET = 16


def _parse_ftrace(path: str, text: str, with_addrs: bool) -> _Ftrace:
    """Lines "name" / "name [module]"; with addresses "ffffffff81234564 name [module]"."""
    if not with_addrs:
        return _Ftrace(path, Counter(text.splitlines()), None)
    pairs = _ADDR_LINE.findall(text)
    ips = array("Q", sorted(int(ip, 16) for ip, _ in pairs))
    if ips and ips[0]:
        return _Ftrace(path, Counter(), ips)
    # Addresses hidden (all 0): use the names the lines carry.
    return _Ftrace(path, Counter(name for _, name in pairs), None)


def _traced(symbol: Symbol, ips: array[int], ksyms: Kallsyms) -> bool:
    """Whether ftrace has a call site inside this function (at its start, or after an
    ``endbr64``/BTI landing pad)."""
    i = bisect_left(ips, symbol.addr)
    if i == len(ips) or ips[i] - symbol.addr > _MAX_CALL_SITE_OFFSET:
        return False
    inside = ksyms.symbol_at(ips[i])
    return inside is not None and inside.addr == symbol.addr


def _run(argv: list[str]) -> str:
    """Run a short command; "" on success, else why it failed (one line)."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_MOUNT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"{argv[0]} exited with {done.returncode}"
    return ""


# ---- without ftrace's list -------------------------------------------------------


def _untraceable_sections(symbols: dict[str, list[Symbol]]) -> list[tuple[int, int]]:
    """Address ranges of vmlinux that ftrace never hooks, from the kernel's section
    markers: init code (freed after boot) and ``noinstr`` code (entry, idle)."""

    def marker(name: str) -> int | None:
        found = [s.addr for s in symbols.get(name, ()) if not s.module]
        return found[0] if len(found) == 1 else None

    ranges = []
    for start, end in _UNTRACEABLE_SECTIONS:
        lo, hi = marker(start), marker(end)
        if lo is not None and hi is not None and lo < hi:
            ranges.append((lo, hi))
    return ranges


# ---- aliases ---------------------------------------------------------------------


def _drop_aliases(
    functions: list[AttachTarget], ksyms: Kallsyms, skipped: Counter[str]
) -> list[AttachTarget]:
    """One function per address: of names sharing an address, keep the one kallsyms
    gives it (the kernel's own choice), else the first in name order."""
    by_addr: dict[int, list[AttachTarget]] = {}
    for fn in functions:
        by_addr.setdefault(fn.addr, []).append(fn)
    if len(by_addr) == len(functions):
        return functions
    kept: list[AttachTarget] = []
    for addr, same in by_addr.items():
        if len(same) > 1:
            primary = ksyms.name_at(addr)
            same.sort(key=lambda fn: (fn.name != primary, fn.name))
            skipped[SKIP_ALIAS] += len(same) - 1
        kept.append(same[0])
    return kept
