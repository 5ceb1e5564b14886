"""The build's own Dask cluster: worker settings, and imports kept light."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eegstore.build.cluster import WORKER_ENV, DaskSession


def test_own_workers_are_separate_processes_with_one_blas_thread_and_the_malloc_settings(
        tmp_path: Path, monkeypatch) -> None:
    # what a Nanny started before in this process leaves behind: Dask's own value
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")

    def state() -> dict[str, object]:  # nested: shipped by value, so it imports nothing
        return {"pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS"),
                **{name: os.environ.get(name) for name in WORKER_ENV}}

    session = DaskSession(2, None, str(tmp_path / "s.zarr"))
    try:
        states = list(session.client().run(state).values())
    finally:
        session.close(wait=True)
    assert len({s["pid"] for s in states} | {os.getpid()}) == 3
    for s in states:
        assert s["omp"] == "1", s
        assert all(s[name] == str(value) for name, value in WORKER_ENV.items()), s
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's, restored


def test_memory_stores_are_built_by_threads_of_this_process() -> None:
    def pid() -> int:
        return os.getpid()

    session = DaskSession(1, None, "memory://threads")
    try:
        pids = set(session.client().run(pid).values())
    finally:
        session.close(wait=True)
    assert pids == {os.getpid()}


def test_importing_the_build_imports_nothing_heavy() -> None:
    code = ("import sys, eegstore.build; "
            "print([m for m in ('mne', 'zarr', 'distributed', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
