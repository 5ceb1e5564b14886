"""Tests of the backends suite: the --quick run, the fork probe, skips and the verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import benchmarks.backends as bb
from benchmarks.backends import (
    BACKENDS,
    LAYOUTS,
    BackendsConfig,
    backend_verdict,
    chunk_read_rate,
    fork_probe,
    open_backend,
    run_backends_suite,
)
from eegstore.errors import ConfigError
from eegstore.testing import make_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench-backends")
    env = dict(os.environ, EEGSTORE_BENCH_TMP=str(out.parent))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--suites",
                           "backends", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_records_every_backend_layout_and_thread_count(
        quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, result = quick_run
    recs = [r for r in result["records"] if r["suite"] == "backends"]
    threads = BackendsConfig.for_run(quick=True).threads
    want = {(b, lay, t) for b in BACKENDS for lay in LAYOUTS for t in threads}
    assert {(r["backend"], r["layout"], r["threads"]) for r in recs} == want
    assert len(recs) == len(want)
    for r in recs:
        assert r["status"] == "ok", r  # dev installs every backend's package
        assert r["windows_per_s"] > 0 and r["mb_per_s"] > 0 and r["bytes_on_disk"] > 0
        assert r["cache"] == "warm" and r["workers"] == 0
        assert r["fork_safe"] == "ok" or r["fork_safe"] == "hang" \
            or r["fork_safe"].startswith("error: ")
    own = [r for r in recs if r["backend"] == "eegstore"]
    assert {r["read_path"] for r in own if r["layout"] == "float16+none"} == {"raw"}
    assert {r["read_path"] for r in own if r["layout"] != "float16+none"} == {"decode"}
    assert {r["fork_safe"] for r in own} == {"ok"}


def test_quick_run_writes_table_and_verdict(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick_run
    verdict = result["backends_verdict"]
    assert set(verdict["winners"]) == set(LAYOUTS)
    assert set(verdict["fork_safe"]) == set(BACKENDS)
    md = (out / "results.md").read_text()
    assert "## Read backends" in md and f"**Verdict**: {verdict['line']}" in md


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_reads_the_same_chunks(tmp_path: Path, backend: str) -> None:
    store = make_store(tmp_path / "s.zarr", n_windows=20, n_channels=3, n_times=10,
                       chunk_windows=8, compressor="zstd")
    want = open_backend("zarr", store).read_span(0, 3)
    reader = open_backend(backend, store)
    assert np.array_equal(reader.read_span(1, 2), want[8:20])
    assert np.array_equal(reader.read_chunk(2), want[16:20])
    rate = chunk_read_rate(reader, threads=2, time_s=0.05)
    assert rate["windows_read"] == 20 * rate["passes"] and rate["windows_per_s"] > 0


class _FakeReader:
    """Reads instantly in the process that made it; in a forked child it sleeps, raises or
    dies, as a backend whose thread pool did not survive ``fork`` would."""

    def __init__(self, child: str, pid_file: Path) -> None:
        self.pid = os.getpid()
        self.child = child
        self.pid_file = pid_file

    def read(self) -> np.ndarray:
        if os.getpid() != self.pid:
            self.pid_file.write_text(str(os.getpid()))
            if self.child == "sleep":
                time.sleep(60)
            elif self.child == "raise":
                raise ValueError("pool is gone")
            elif self.child == "die":
                os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros(3)


@pytest.mark.parametrize(("child", "outcome"), [
    ("return", "ok"),
    ("sleep", "hang"),
    ("raise", "error: ValueError: pool is gone"),
    ("die", "error: child died (SIGKILL)"),
])
def test_fork_probe_reports_what_the_forked_child_did(tmp_path: Path, child: str,
                                                      outcome: str) -> None:
    reader = _FakeReader(child, tmp_path / "child.pid")
    t0 = time.monotonic()
    assert fork_probe(reader.read, reader.read, timeout_s=1.5).startswith(outcome)
    assert time.monotonic() - t0 < 10  # a sleeping child never holds the probe past its timeout
    child_pid = int((tmp_path / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):  # the child is gone (killed when it hung)
        os.kill(child_pid, 0)


def test_missing_package_is_recorded_as_skipped_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bb._PACKAGES, "zarrs", "no_such_package_for_eegstore_tests")
    bcfg = BackendsConfig(n_chunks=2, chunk_windows=4, n_channels=3, n_times=10,
                          layouts=("float16+none",), backends=("eegstore", "zarrs"),
                          threads=(1,), read_time_s=0.05, probe_timeout_s=10.0)
    recs, info = run_backends_suite(SimpleNamespace(quick=True, seed=0), tmp_path, bcfg=bcfg)
    by = {r["backend"]: r for r in recs}
    assert by["zarrs"]["status"] == "skipped" and by["zarrs"]["fork_safe"] == "skipped"
    assert "no_such_package_for_eegstore_tests" in by["zarrs"]["reason"]
    assert by["eegstore"]["status"] == "ok" and by["eegstore"]["fork_safe"] == "ok"
    assert info["backends_verdict"]["winners"]["float16+none"]["backend"] == "eegstore"
    assert not (tmp_path / "backends").exists()


def _rec(backend: str, layout: str, rate: float, fork: str) -> dict[str, Any]:
    return {"suite": "backends", "backend": backend, "layout": layout, "threads": 1,
            "windows_per_s": rate, "status": "ok", "fork_safe": fork}


@pytest.mark.parametrize(("fork", "adopted"), [("ok", ["zarrs"]), ("hang", [])])
def test_verdict_adopts_a_faster_backend_only_when_fork_safe(fork: str,
                                                             adopted: list[str]) -> None:
    recs = [_rec("eegstore", "float16+none", 100.0, "ok"),
            _rec("zarrs", "float16+none", 150.0, fork),
            _rec("eegstore", "float32+zstd", 100.0, "ok"),
            _rec("zarrs", "float32+zstd", 105.0, fork)]  # within the margin: not faster
    verdict = backend_verdict(recs)
    assert verdict["adopt"] == adopted
    assert verdict["faster_than_eegstore"] == {"zarrs": ["float16+none"]}
    assert verdict["winners"]["float16+none"]["backend"] == "zarrs"
    assert verdict["winners"]["float16+none"]["vs_eegstore"] == pytest.approx(1.5)
    assert ("Adoption justified for zarrs" in verdict["line"]) == (fork == "ok")
    assert ("zarrs (fork probe: hang)" in verdict["line"]) == (fork == "hang")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layouts": ("float64+none",)}, "expected layouts among"),
    ({"backends": ("h5py",)}, "expected layouts among .* and backends among"),
    ({"threads": (0,)}, "expected positive sizes and thread counts"),
    ({"layouts": ("float16+zstd",)}, "expected probe_layout among"),
    ({"probe_timeout_s": 0.0}, "probe_timeout_s > 0"),
])
def test_config_rejects_invalid_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BackendsConfig(**kwargs)
