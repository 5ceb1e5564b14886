"""Execute the notebooks top to bottom (nbclient) and check they are stored without outputs.

Each notebook generates its own small dataset into a temporary folder, so these
tests need nothing but the installed package.  The kernel is the interpreter
running pytest (a kernelspec written to a temporary ``JUPYTER_PATH``), so no
kernel has to be registered on the machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "eegstore-test-python"
#: Figures each notebook must render (a figure that fails to draw raises, one that is skipped
#: silently would not).
FIGURES = {"01_explore_store.ipynb": 5, "02_train.ipynb": 3, "03_benchmarks.ipynb": 2}
#: Seconds any single cell may take before the run fails.
CELL_TIMEOUT_S = 420


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter, found first on ``JUPYTER_PATH``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "eegstore tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in ("EEGSTORE_BENCH_RESULTS", "EEGSTORE_BENCH_SUITES", "EEGSTORE_BENCH_WORKERS"):
        monkeypatch.delenv(name, raising=False)  # notebook 03 runs its own quick benchmark
    return KERNEL_NAME


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
               if out.output_type in ("display_data", "execute_result")
               and "image/png" in out.get("data", {}))


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} hold outputs; clear them before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_top_to_bottom(name: str, kernel_name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors
    assert _images(nb) >= FIGURES[name], f"{name}: expected {FIGURES[name]} figures"
