"""CLI misuse of every command exits 2 with one line on stderr and no traceback; an internal
error prints one short line naming the log file that holds the traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, Path]:
    from eegstore.testing import make_store

    root = tmp_path_factory.mktemp("cli")
    store = make_store(root / "s.zarr", n_windows=32, n_channels=4, n_times=50,
                       chunk_windows=8, n_subjects=4)
    notastore = root / "notastore"
    notastore.mkdir()
    (notastore / "zarr.json").write_text("[]")
    empty = root / "empty"
    empty.mkdir()
    return {"root": root, "store": store, "notastore": notastore, "empty": empty}


def _cases(e: dict[str, Path]) -> list[tuple[str, list[str]]]:
    r = e["root"]
    return [
        ("eegstore", []),
        ("eegstore", ["nope"]),
        ("eegstore", ["synth"]),
        ("eegstore", ["synth", str(r / "o"), "--subjects", "-1"]),
        ("eegstore", ["synth", str(r / "o"), "--metadata", str(r / "missing")]),
        ("eegstore", ["build", str(e["empty"]), str(r / "b.zarr")]),
        ("eegstore", ["build", str(e["empty"]), str(r / "b.zarr"), "--recipe", "challenge1"]),
        ("eegstore", ["build", str(r / "missing"), str(r / "b.zarr"), "--recipe", "fixed"]),
        ("eegstore", ["build", str(e["empty"]), str(r / "b.zarr"), "--recipe", "fixed",
                      "--chunk-windows", "0"]),
        ("eegstore", ["build", "eegdash:R99x", str(r / "b.zarr"), "--recipe", "fixed"]),
        ("eegstore", ["info"]),
        ("eegstore", ["info", str(r / "missing.zarr")]),
        ("eegstore", ["info", str(e["notastore"])]),
        ("eegstore", ["info", str(e["store"]), "--bogus"]),
        ("eegstore", ["verify"]),
        ("eegstore", ["verify", str(e["store"]), "--bogus"]),
        ("trainers", []),
        ("trainers", ["fit"]),
        ("trainers", ["fit", "--out", str(r / "run")]),
        ("trainers", ["fit", "--out", str(r / "run"), "--resume"]),
        ("trainers", ["fit", "--store", str(e["store"]), "--trainer", "nope",
                      "--out", str(r / "run")]),
        ("trainers", ["fit", "--store", str(e["store"]), "--trainer", "challenge1",
                      "--epochs", "x", "--out", str(r / "run")]),
        ("trainers", ["fit", "--store", str(r / "missing.zarr"), "--trainer", "challenge1",
                      "--out", str(r / "run")]),
        ("trainers", ["fit", "--store", str(e["store"]), "--trainer", "challenge1",
                      "--model-kwargs", "{not json", "--out", str(r / "run")]),
        ("trainers", ["evaluate"]),
        ("trainers", ["evaluate", "--run", str(r / "norun")]),
        ("trainers", ["export-submission", "--challenge1", str(r / "a")]),
        ("trainers", ["export-submission", "--challenge1", str(r / "a"), "--challenge2",
                      str(r / "b"), "--out", str(r / "sub.zip")]),
        ("benchmarks", []),
        ("benchmarks", ["run", "--suites", "nope"]),
        ("benchmarks", ["run", "--sizes", "big"]),
        ("benchmarks", ["run", "--workers", "two"]),
    ]


def _main(prog: str):
    if prog == "eegstore":
        from eegstore.cli import main
    elif prog == "trainers":
        from trainers.__main__ import main
    else:
        from benchmarks.__main__ import main
    return main


def test_every_command_misused_exits_2_with_one_line(cli_env, capsys):
    for prog, argv in _cases(cli_env):
        capsys.readouterr()
        code = _main(prog)(argv)
        out = capsys.readouterr()
        lines = [ln for ln in out.err.splitlines() if ln.strip()]
        assert code == 2, (prog, argv, code, out.err[-2000:])
        assert len(lines) == 1, (prog, argv, out.err)
        assert "Traceback" not in out.err and "error" in lines[0], (prog, argv, out.err)
    assert not (cli_env["root"] / "b.zarr" / "zarr.json").exists()
    assert not (cli_env["root"] / "sub.zip").exists()


@pytest.mark.parametrize("module", ["eegstore", "trainers", "benchmarks"])
def test_real_entry_points_misused(module, cli_env):
    args = {"eegstore": ["info", str(cli_env["root"] / "missing.zarr")],
            "trainers": ["evaluate", "--run", str(cli_env["root"] / "norun")],
            "benchmarks": ["run", "--suites", "nope"]}[module]
    done = subprocess.run([PY, "-m", module, *args], capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()
             and "Warning" not in ln and not ln.startswith("  ")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr


_INJECT = """
import sys
import eegstore.verify as v

def boom(*args, **kwargs):
    raise RuntimeError("injected failure deep inside verify")

v.verify_store = boom
from eegstore.cli import main
sys.exit(main(["verify", sys.argv[1]]))
"""


def test_internal_error_is_one_line_with_the_log_path(cli_env):
    done = subprocess.run([PY, "-c", _INJECT, str(cli_env["store"])], capture_output=True,
                          text=True, timeout=120)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()
             and "Warning" not in ln and not ln.startswith("  ")]
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "internal error: RuntimeError: injected failure" in lines[0]
    m = re.search(r"traceback in (\S+\.log)\)", lines[0])
    assert m, lines[0]
    log = Path(m.group(1))
    try:
        text = log.read_text()
        assert "Traceback" in text and "injected failure deep inside verify" in text
        assert "boom" in text
    finally:
        log.unlink(missing_ok=True)
