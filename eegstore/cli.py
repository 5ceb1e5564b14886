"""The ``eegstore`` command line.

Each subcommand lives with the code it drives; this module only dispatches::

    eegstore synth   OUT                 synthetic HBN-format BIDS release  (eegstore.synth)
    eegstore build   SOURCE STORE        labelled Zarr store with Dask      (eegstore.build)
    eegstore info    STORE               summary of a store                 (eegstore.store)
    eegstore verify  STORE               structure, lengths, chunks, CRCs   (eegstore.verify)

Exit codes: 0 success, 1 the work failed (message on one line), 2 misuse
(bad arguments or input, one line, no traceback), 3 an internal error (short
message; the traceback is written to a log file whose path is printed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence

from eegstore.errors import BuildError, EegstoreError

__all__ = ["EXIT_FAILED", "EXIT_INTERNAL", "EXIT_USAGE", "ArgumentParser", "main", "run_cli"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

#: subcommand -> (module, one-line help). The module defines
#: ``configure_parser(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("eegstore.synth", "write a synthetic HBN-format BIDS release (BDF, 100 Hz)"),
    "build": ("eegstore.build", "build a labelled Zarr store from recordings, in parallel"),
    "info": ("eegstore.store", "print a summary of a store"),
    "verify": ("eegstore.verify", "check a store's structure, coordinates, chunks and checksums"),
}


class ArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit 2 (shared by every eegstore CLI)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _log_traceback(prog: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"{prog.replace(' ', '-')}-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return path


def run_cli(prog: str, parser: argparse.ArgumentParser,
            dispatch: Callable[[argparse.Namespace], int],
            argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``dispatch`` with eegstore's error conventions.

    Parameters
    ----------
    prog : str
        Program name for messages.
    parser : argparse.ArgumentParser
        The configured parser.
    dispatch : callable
        Runs the parsed command and returns its exit code.
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(dispatch(args))
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BuildError as exc:
        sys.stderr.write(f"{prog}: failed: {exc}\n")
        return EXIT_FAILED
    except (EegstoreError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:
        path = _log_traceback(prog)
        sys.stderr.write(f"{prog}: internal error: {type(exc).__name__}: {exc} "
                         f"(traceback in {path})\n")
        return EXIT_INTERNAL


def _build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Return the ``eegstore`` parser.

    With ``argv``, only the subcommand it names is configured (importing every
    subcommand's module, mne for ``synth``, zarr and dask for ``build``, would add
    about a second to every command); without, all of them are.
    """
    parser = ArgumentParser(prog="eegstore", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if chosen is None or name == chosen:
            importlib.import_module(module).configure_parser(p)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._module).run(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eegstore`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return run_cli("eegstore", _build_parser(args), _dispatch, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
