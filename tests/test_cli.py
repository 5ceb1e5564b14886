"""The eegstore command-line dispatcher and its exit-code conventions."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from eegstore.cli import EXIT_INTERNAL, EXIT_USAGE, run_cli
from eegstore.errors import BuildError, ConfigError


def _parser() -> argparse.ArgumentParser:
    from eegstore.cli import ArgumentParser

    p = ArgumentParser(prog="t")
    p.add_argument("--n", type=int, default=1)
    return p


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (ConfigError("expected a positive n, got -1; pass --n 1"), EXIT_USAGE, "error: expected"),
        (BuildError("no usable recording"), 1, "failed: no usable recording"),
        (FileNotFoundError("nope"), EXIT_USAGE, "error: nope"),
    ],
)
def test_errors_become_one_line(capsys: pytest.CaptureFixture[str], exc: Exception, code: int,
                                text: str) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise exc

    assert run_cli("t", _parser(), boom, []) == code
    err = capsys.readouterr().err
    assert text in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_internal_error_logs_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("oops")

    assert run_cli("t", _parser(), boom, []) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: oops" in err
    log = err.split("traceback in ")[1].rstrip(")\n")
    with open(log) as fh:
        assert "Traceback" in fh.read()


def test_bad_option_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("t", _parser(), lambda a: 0, ["--n", "x"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err


def test_console_entry_point_help_and_unknown_command() -> None:
    ok = subprocess.run([sys.executable, "-m", "eegstore", "--help"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0
    for command in ("synth", "build", "info", "verify"):
        assert command in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "eegstore", "frobnicate"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == EXIT_USAGE
    assert bad.stderr.count("\n") == 1 and "invalid choice" in bad.stderr


def _imported_by_parser(argv: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported once it parsed ``argv``."""
    code = ("import sys; from eegstore.cli import _build_parser; "
            f"_build_parser({argv!r}); print(*[m in sys.modules for m in {modules!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [m for m, flag in zip(modules, out.stdout.split(), strict=True) if flag == "True"]


def test_a_subcommand_imports_only_its_own_module() -> None:
    """``eegstore build`` does not pay for importing the synth module (and vice versa)."""
    assert _imported_by_parser(["build", "--help"], ("eegstore.synth", "eegstore.build")) \
        == ["eegstore.build"]


def test_the_build_command_starts_without_pandas_xarray_or_mne() -> None:
    """The build's client needs none of them before its Dask workers are started."""
    assert _imported_by_parser(["build", "a", "b"], ("pandas", "xarray", "mne", "torch")) == []
