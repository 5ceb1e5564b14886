"""Loader faults: a killed DataLoader worker, a corrupted chunk, a reader during an append."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eegstore.build import KILL_ENV, build_store
from eegstore.errors import CorruptChunkError
from eegstore.store import open_store
from eegstore.testing import make_store
from eegstore.torch import WindowDataset, WindowStream

PY = sys.executable


def _chunk_file(store: Path, chunk: int) -> Path:
    meta = json.loads((store / "eeg" / "zarr.json").read_text())
    sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    return store / "eeg" / sep.join(["c", str(chunk), "0", "0"])


@pytest.fixture
def loader_store(tmp_path) -> Path:
    # compressed, so that a torn chunk is a decode error (raw chunks need verify_checksums)
    return make_store(tmp_path / "l.zarr", n_windows=256, n_channels=4, n_times=50,
                      chunk_windows=8, n_subjects=4, seed=3, compressor="zstd")


# ------------------------------------------------------------------ killed worker

_KILL_WORKER = r"""
import json, os, signal, sys, time
import psutil
from torch.utils.data import DataLoader
from eegstore.torch import WindowStream

stream = WindowStream(sys.argv[1], batch_size=4, shuffle=True, seed=0)
loader = DataLoader(stream, batch_size=None, num_workers=2)
me = psutil.Process()
before = {p.pid for p in me.children()}
it = iter(loader)
next(it)
workers = [p for p in me.children() if p.pid not in before]
t0 = time.monotonic()
out = {"n_workers": len(workers), "error": None}
try:
    os.kill(workers[0].pid, signal.SIGKILL)
    for _ in it:
        pass
except Exception as exc:
    out.update(error=type(exc).__name__, message=str(exc), elapsed_s=time.monotonic() - t0)
print(json.dumps(out), flush=True)
os._exit(0)
"""


@pytest.mark.timeout(60)
def test_killed_worker_makes_the_main_process_raise(loader_store, tmp_path):
    """SIGKILL one of two DataLoader workers mid-epoch: the main process raises, no hang.

    Run in a child process: torch's SIGCHLD handler raises asynchronously in the main
    thread, which must not land inside pytest's own machinery.
    """
    script = tmp_path / "kill_worker.py"
    script.write_text(_KILL_WORKER)
    done = subprocess.run([PY, str(script), str(loader_store)], capture_output=True, text=True,
                          timeout=50)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["n_workers"] == 2
    # RuntimeError from the worker-death check, or the failed fetch of the dead worker's
    # shared-memory batch (ConnectionResetError) -- whichever comes first
    assert out["error"] in ("RuntimeError", "ConnectionResetError"), out
    if out["error"] == "RuntimeError":
        assert "killed by signal" in out["message"] or "exited unexpectedly" in out["message"]
    print(f"worker death -> {out['error']} in {out['elapsed_s']:.3f} s")
    assert out["elapsed_s"] < 30  # hang guard only (torch checks workers every 5 s)


# ---------------------------------------------------------------- corrupted chunk

def _corrupt(store: Path, chunk: int) -> None:
    """Overwrite a chunk file with zeros (a torn write).  A *truncated* blosc chunk is not a
    deterministic test: blosc may decode past the end of the buffer without an error."""
    f = _chunk_file(store, chunk)
    f.write_bytes(bytes(f.stat().st_size))


def test_corrupted_chunk_raises_naming_array_and_chunk(loader_store):
    _corrupt(loader_store, 2)
    ds = WindowDataset(loader_store)
    ds[0]  # chunk 0 is fine
    with pytest.raises(CorruptChunkError, match=r"chunk 2 of array 'eeg' \(windows 16:24\)"):
        ds[17]
    stream = WindowStream(loader_store, batch_size=8, shuffle=False)
    with pytest.raises(CorruptChunkError, match=r"chunk 2 of array 'eeg'"):
        for _ in stream:
            pass


@pytest.mark.timeout(60)
def test_corrupted_chunk_in_a_worker_reaches_the_main_process(loader_store):
    _corrupt(loader_store, 5)
    stream = WindowStream(loader_store, batch_size=8, shuffle=True, seed=1)
    with pytest.raises(CorruptChunkError, match=r"chunk 5 of array 'eeg'"):
        for _ in DataLoader(stream, batch_size=None, num_workers=1):
            pass


# ------------------------------------------------------- a reader during an append

@pytest.fixture(scope="module")
def append_cluster():
    """Dask cluster whose worker is a thread of this process, reachable over TCP."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def _all_windows(ds: WindowDataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.item()) for x, y, _ in (ds[i] for i in range(len(ds)))],
                 strict=True)
    return np.stack(xs), np.asarray(ys)


def _stream_windows(stream: WindowStream, num_workers: int) -> dict[int, np.ndarray]:
    out = {}
    for x, _y, idx in DataLoader(stream, batch_size=None, num_workers=num_workers):
        for row, i in zip(x.numpy(), idx.tolist(), strict=True):
            out[i] = row
    return out


@pytest.mark.timeout(300)
def test_reader_opened_before_an_append_sees_a_consistent_store(synth_mini_ccd, append_cluster,
                                                                 tmp_path):
    source = str(synth_mini_ccd / "EEG2025r5mini")
    store = tmp_path / "a.zarr"
    build_store(source, store, "challenge1", subjects=1, scheduler=append_cluster,
                chunk_windows=16, progress=False)
    n_old = int(open_store(store).sizes["window"])
    assert n_old % 16, "the test needs a trailing partial chunk (rewritten by the append)"
    early = WindowDataset(store)
    early_stream = WindowStream(store, batch_size=5, shuffle=True, seed=0)
    x0, y0 = _all_windows(early)
    # during: the append is killed right after it rewrote the trailing partial chunk
    cmd = [PY, "-m", "eegstore", "build", source, str(store), "--recipe", "challenge1",
           "--subjects", "2", "--scheduler", append_cluster.scheduler.address, "--no-progress"]
    env = {**os.environ, KILL_ENV: "chunk:1"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    x1, y1 = _all_windows(early)
    np.testing.assert_array_equal(x1, x0)
    np.testing.assert_array_equal(y1, y0)
    during = WindowDataset(store)  # opened mid-append: the committed (old) state
    assert len(during) == n_old
    np.testing.assert_array_equal(_all_windows(during)[0], x0)
    got = _stream_windows(early_stream, num_workers=1)  # workers open the store now
    assert sorted(got) == list(range(n_old))
    np.testing.assert_array_equal(np.stack([got[i] for i in range(n_old)]), x0)
    # after: the append completes; the early reader still sees its windows, a new one all
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={k: v for k, v in os.environ.items() if k != KILL_ENV})
    assert done.returncode == 0, done.stderr[-2000:]
    x2, y2 = _all_windows(early)
    np.testing.assert_array_equal(x2, x0)
    np.testing.assert_array_equal(y2, y0)
    late = WindowDataset(store)
    assert len(late) > n_old
    xl, yl = _all_windows(late)
    np.testing.assert_array_equal(xl[:n_old], x0)
    np.testing.assert_array_equal(yl[:n_old], y0)
    got = _stream_windows(early_stream, num_workers=1)
    assert sorted(got) == list(range(n_old))
    np.testing.assert_array_equal(np.stack([got[i] for i in range(n_old)]), x0)
    assert torch.isfinite(torch.from_numpy(xl)).all()


@pytest.mark.timeout(300)
def test_verify_checksums_catches_a_deleted_chunk(synth_mini_ccd, append_cluster, tmp_path):
    """A deleted chunk file reads as fill values without any codec error; with
    ``verify_checksums=True`` the recorded CRC32 catches it (WindowDataset and stream)."""
    from eegstore.sources import discover_recordings

    recs = discover_recordings(str(synth_mini_ccd / "EEG2025r5mini"))[:1]
    store = tmp_path / "crc.zarr"
    build_store("unused", store, "challenge1", recordings=recs, scheduler=append_cluster,
                chunk_windows=8, progress=False)
    ok = WindowDataset(store, verify_checksums=True)
    x_clean = ok[9][0].numpy()
    _chunk_file(store, 1).unlink()
    silent = WindowDataset(store)
    assert np.all(silent[9][0].numpy() == 0) and np.any(x_clean != 0)  # silently zeros
    with pytest.raises(CorruptChunkError, match=r"chunk 1 of array 'eeg' .*recorded CRC32"):
        WindowDataset(store, verify_checksums=True)[9]
    stream = WindowStream(store, batch_size=4, shuffle=False, verify_checksums=True)
    with pytest.raises(CorruptChunkError, match=r"chunk 1 of array 'eeg'"):
        for _ in stream:
            pass
    # stores without recorded checksums cannot be verified: a clear error up front
    plain = make_store(tmp_path / "plain.zarr", n_windows=16, chunk_windows=8)
    with pytest.raises(ValueError, match="recorded chunk checksums"):
        WindowStream(plain, batch_size=4, verify_checksums=True)
