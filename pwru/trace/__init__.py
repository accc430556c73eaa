"""Where pwru attaches: the probe table and one module per backend.

``BackendName`` lives here, dependency-free, because option parsing needs the
names before anything is loaded.
"""

from __future__ import annotations

import enum


class BackendName(str, enum.Enum):
    """``--backend`` values; AUTO (empty) picks the first that works."""

    AUTO = ""
    KPROBE = "kprobe"
    KPROBE_MULTI = "kprobe-multi"
    TRACEPOINT = "tracepoint"
