"""The ``pwru`` command: parse options, run a session, turn errors into one line.

Exit codes: 0 after a normal end (Ctrl-C, SIGTERM, --output-limit-lines),
2 for usage errors, 1 for problems with the machine or the kernel.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Sequence

from pwru import __version__
from pwru.bpf import libbpf
from pwru.bpf.libbpf import VerifierError
from pwru.errors import PwruError


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)  # "pwru: ..."
    logging.getLogger("pwru").setLevel(logging.DEBUG if debug else logging.WARNING)
    # libbpf's own chatter (and its warnings, which pwru restates) only with --debug
    logging.getLogger("pwru.libbpf").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def _version_line() -> str:
    """``pwru 0.1.0 (libbpf 1.5.0, bundled)``: which libbpf matters in bug reports."""
    try:
        found = libbpf.info()
    except PwruError as error:
        return f"pwru {__version__} (libbpf: {error})"
    return f"pwru {__version__} (libbpf {found.version}, {found.origin})"


def _report(error: PwruError) -> int:
    print(f"pwru: error: {error}", file=sys.stderr)
    if isinstance(error, VerifierError) and error.log:
        print("verifier log (last lines):", file=sys.stderr)
        print(error.tail(), file=sys.stderr)
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    # Importing and setting up make many objects and little garbage: no collections
    # until the session is ready (session.settle() collects once, freezes what is
    # left and turns them back on).
    gc.disable()
    from pwru.options import parse_options

    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        options = parse_options(args)
        if options.version:
            print(_version_line())
            return 0
        _configure_logging(options.debug)
        for line in options.notes:
            print(f"pwru: note: {line}", file=sys.stderr)
        from pwru import session

        return session.run(options)
    except PwruError as error:
        return _report(error)
    except BrokenPipeError:
        return 0  # the reader went away (pwru | head): nothing more to say
    except KeyboardInterrupt:
        return 0
    except Exception as error:  # a bug: say so in one line, details with --debug
        if debug:
            raise
        print(
            f"pwru: internal error: {type(error).__name__}: {error} "
            "(rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        gc.enable()


if __name__ == "__main__":
    sys.exit(main())
