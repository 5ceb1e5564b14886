"""The build's own workers fork from a forkserver that already imported what they need."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from eegstore import _forkserver
from eegstore.build import _DaskSession


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no forkserver on this platform")
def test_build_workers_fork_from_the_preloaded_forkserver(tmp_path: Path) -> None:
    def state() -> dict[str, object]:  # nested: shipped by value, so it imports nothing
        return {"ppid": os.getppid(), "mne": "mne.io" in sys.modules,
                "build": "eegstore.build" in sys.modules,
                "omp": os.environ.get("OMP_NUM_THREADS")}

    session = _DaskSession(2, None, str(tmp_path / "s.zarr"))
    try:
        states = list(session.client().run(state).values())
    finally:
        session.close(wait=True)
    assert len(states) == 2
    parents = {s["ppid"] for s in states}
    assert len(parents) == 1 and os.getpid() not in parents  # one forkserver, not this process
    for s in states:
        assert s["mne"] and s["build"], s  # imported before any task ran
        assert s["omp"] == "1", s


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_malloc_sets_the_glibc_thresholds() -> None:
    assert _forkserver.tune_malloc()


def test_the_forkserver_helpers_import_nothing_heavy() -> None:
    import subprocess

    code = ("import sys, eegstore._forkserver, eegstore.build; "
            "print([m for m in ('mne', 'zarr', 'distributed', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_a_forkserver_that_cannot_start_falls_back_to_spawned_workers(monkeypatch) -> None:
    from multiprocessing import forkserver

    def refuse() -> None:
        raise OSError("no AF_UNIX sockets here")

    monkeypatch.setattr(forkserver, "ensure_running", refuse)
    assert _forkserver.start() is False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_forkserver_skips_its_teardown_but_its_children_do_not() -> None:
    import subprocess

    # a process that imports the preload is a forkserver for this purpose: at its exit it
    # flushes its output and leaves before earlier exit handlers (its teardown) run; a
    # process forked from it is not the server, and exits as it chooses
    code = """if True:
        import atexit, os, sys
        atexit.register(lambda: print("teardown ran"))
        import eegstore._forkserver_preload as preload
        pid = os.fork()
        if pid == 0:
            preload._leave_now()
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"child exit {os.waitstatus_to_exitcode(status)}")
        """
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "child exit 3"  # flushed, without the teardown's line
