"""Errors that reach the user.

Every error carries the process exit code the CLI should use, and a message that
fits on one line and says what to do about it. The CLI prints ``pwru: <message>``.
"""

from __future__ import annotations


class PwruError(Exception):
    """Base of all errors pwru reports to the user (exit code 1)."""

    exit_code = 1


class UsageError(PwruError):
    """Bad flags, flag values or filter expressions (exit code 2, like argparse)."""

    exit_code = 2


class EnvironmentProblem(PwruError):
    """The machine cannot run pwru as asked: not root, no BTF, no libbpf, missing
    kernel feature (exit code 1)."""

    exit_code = 1
