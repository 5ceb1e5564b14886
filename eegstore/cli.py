"""The ``eegstore`` command line.

Each subcommand lives with the code it drives (``eegstore build``'s arguments are
here, :func:`configure_build_parser`, so that the build package stays a library);
this module dispatches::

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
from typing import TYPE_CHECKING

from eegstore.errors import BuildError, ConfigError, EegstoreError

if TYPE_CHECKING:
    from eegstore.preprocessing import Preprocessor

__all__ = ["EXIT_FAILED", "EXIT_INTERNAL", "EXIT_USAGE", "ArgumentParser",
           "configure_build_parser", "main", "run_build", "run_cli"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

#: subcommand -> (module, one-line help). The module defines
#: ``configure_parser(parser)`` and ``run(args) -> int``; ``eegstore.cli`` itself defines
#: them for ``build`` as :func:`configure_build_parser` and :func:`run_build`.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("eegstore.synth", "write a synthetic HBN-format BIDS release (BDF, 100 Hz)"),
    "build": (__name__, "build a labelled Zarr store from recordings, in parallel"),
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
        p.set_defaults(command_module=module)
        if chosen is None or name == chosen:
            _command(name, module)[0](p)
    return parser


def _command(name: str, module: str) -> tuple[Callable[[argparse.ArgumentParser], None],
                                              Callable[[argparse.Namespace], int]]:
    """``configure_parser`` and ``run`` of a subcommand."""
    if module == __name__:
        return configure_build_parser, run_build
    imported = importlib.import_module(module)
    return imported.configure_parser, imported.run


def _dispatch(args: argparse.Namespace) -> int:
    return int(_command(args.command, args.command_module)[1](args))


# ------------------------------------------------------------------ eegstore build

def configure_build_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eegstore build`` arguments to ``parser``."""
    from eegstore.build import layout
    from eegstore.recipes import RECIPES

    parser.add_argument("source", help="local BIDS directory or eegdash:RN[-mini]")
    parser.add_argument("store", help="output store: path or fsspec URL (s3://..., memory://...)")
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks to include")
    parser.add_argument("--subjects", nargs="+", default=None, metavar="N|LABEL",
                        help="use only the first N subjects (one number), or these subject "
                        "labels (without 'sub-')")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--chunk-windows", type=int, default=None, help="windows per chunk")
    parser.add_argument("--dtype", choices=layout.DTYPES, default=layout.DEFAULT_DTYPE,
                        help="storage dtype of the signal (default %(default)s)")
    parser.add_argument("--units", choices=layout.UNITS, default=layout.DEFAULT_UNITS,
                        help="unit of the stored signal (default %(default)s)")
    parser.add_argument("--compressor", choices=layout.COMPRESSORS,
                        default=layout.DEFAULT_COMPRESSOR,
                        help="chunk compressor (default %(default)s: float16 chunks are read "
                        "with no decode)")
    parser.add_argument("--window-s", type=float, default=None, help="window length (s)")
    parser.add_argument("--stride-s", type=float, default=None, help="window stride (s)")
    steps = parser.add_argument_group("preprocessing (applied in this order)")
    steps.add_argument("--pick", nargs="+", default=None, metavar="CH",
                       help="keep these channels")
    steps.add_argument("--reref", default=None, help="re-reference: 'average' or a channel name")
    steps.add_argument("--l-freq", type=float, default=None, help="band-pass low edge (Hz)")
    steps.add_argument("--h-freq", type=float, default=None, help="band-pass high edge (Hz)")
    steps.add_argument("--resample", type=float, default=None,
                       help="resample to this rate (Hz)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _steps_from_args(args: argparse.Namespace) -> list[Preprocessor]:
    from eegstore.preprocessing import BandPass, PickChannels, Rereference, Resample

    steps: list[Preprocessor] = []
    if args.pick:
        steps.append(PickChannels(tuple(args.pick)))
    if args.reref:
        steps.append(Rereference(args.reref))
    if args.l_freq is not None or args.h_freq is not None:
        steps.append(BandPass(args.l_freq, args.h_freq))
    if args.resample is not None:
        steps.append(Resample(args.resample))
    return steps


def _parse_subjects(values: Sequence[str] | None) -> int | list[str] | None:
    """``--subjects``: one number N (the first N subjects) or subject labels."""
    if values is None:
        return None
    if len(values) == 1 and values[0].lstrip("-").isdigit():
        n = int(values[0])
        if n < 1:
            raise ConfigError(f"expected --subjects >= 1, got {n}")
        return n
    return [v.removeprefix("sub-") for v in values]


def _recipe_params(args: argparse.Namespace) -> dict[str, float]:
    """``--window-s`` / ``--stride-s`` as recipe parameters."""
    params: dict[str, float] = {}
    if args.recipe == "challenge1" and args.stride_s is not None:
        raise ConfigError("expected no --stride-s with --recipe challenge1 "
                          "(one window per trial), got one")
    if args.window_s is not None:
        params["window_s"] = args.window_s
    if args.stride_s is not None:
        params["stride_s"] = args.stride_s
    return params


def run_build(args: argparse.Namespace) -> int:
    """Run ``eegstore build`` with parsed arguments; return the exit code."""
    from eegstore.build import build_store
    from eegstore.recipes import get_recipe

    recipe = get_recipe(args.recipe, **_recipe_params(args))
    report = build_store(args.source, args.store, recipe, tasks=args.tasks,
                         subjects=_parse_subjects(args.subjects), workers=args.workers,
                         scheduler=args.scheduler, chunk_windows=args.chunk_windows,
                         dtype=args.dtype, units=args.units, compressor=args.compressor,
                         preprocessing=_steps_from_args(args),
                         progress=not args.no_progress)
    print(report)
    for rid, reason in list(report.skipped.items())[:20]:
        print(f"  skipped {rid}: {reason}")
    return 0


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
