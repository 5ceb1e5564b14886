"""Reliable builds: SIGKILL at named moments then re-run == uninterrupted; verify finds damage.

The build kills itself with SIGKILL at the point named by ``EEGSTORE_TEST_KILL_AT``
(``stage:K``, ``chunk:K``, ``coords``, ``commit``; see :mod:`eegstore.build`).  The
``eegstore build`` subprocesses use this module's Dask cluster (``--scheduler``), whose
worker is a thread of the test process, so no worker has to import MNE again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eegstore.build import KILL_ENV, build_store
from eegstore.store import open_store, str_values
from eegstore.testing import assert_stores_equal
from eegstore.verify import verify_store

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
CHUNK = 16

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def rel_source(synth_mini_ccd: Path) -> str:
    """BIDS root of the shared synthetic CCD release (2 subjects x 3 runs)."""
    return str(synth_mini_ccd / "EEG2025r5mini")


@pytest.fixture(scope="module")
def rel_cluster():
    """A Dask cluster whose single worker is a thread of this process, reachable over TCP."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def _cmd(source: str, store: Path, address: str, subjects: int = 1) -> list[str]:
    return [PY, "-m", "eegstore", "build", source, str(store), "--recipe", "challenge1",
            "--subjects", str(subjects), "--chunk-windows", str(CHUNK), "--scheduler", address,
            "--no-progress"]


def _run(cmd: list[str], kill_at: str | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = kill_at
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=240,
                          start_new_session=True)


@pytest.fixture(scope="module")
def reference(rel_source, rel_cluster, tmp_path_factory) -> Path:
    """The uninterrupted build of the first subject (3 recordings, 4 chunks of 16)."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    report = build_store(rel_source, store, "challenge1", subjects=1, scheduler=rel_cluster,
                         chunk_windows=CHUNK, progress=False)
    assert report.n_ok == 3 and report.n_windows > 2 * CHUNK
    return store


# ------------------------------------------------------------- kill, re-run, compare

#: (first kill point, optional second kill point of the first re-run)
KILLS = [
    ("stage:1", "chunk:2"),  # phase A after 1 of 3 recordings; then killed again in phase B
    ("stage:3", None),       # every recording staged (chunks may already be written)
    ("chunk:1", None),       # phase B: first chunk written, others in flight
    ("chunk:3", None),       # phase B: 3 of 4 chunks written
    ("tables", None),        # every recording placed, coordinates written, chunks in flight
    ("coords", None),        # phase C: coordinates, table and CRCs written, metadata not
    ("commit", None),        # committed, staging not yet removed
]


@pytest.mark.parametrize(("kill_at", "then_at"), KILLS, ids=[k for k, _ in KILLS])
def test_sigkill_then_rerun_equals_uninterrupted(kill_at, then_at, rel_source, rel_cluster,
                                                 reference, tmp_path):
    store = tmp_path / "s.zarr"
    cmd = _cmd(rel_source, store, rel_cluster.scheduler.address)
    first = _run(cmd, kill_at, cwd=tmp_path)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-2000:])
    assert (store / "_staging").is_dir()
    # between the kill and the re-run, the store is either absent-as-a-store or the old state
    if kill_at == "commit":
        assert_stores_equal(reference, store)  # committed: readable already
    else:
        rep = verify_store(store)
        assert not rep.ok and rep.problems[0].kind == "structure", str(rep)
        assert "not finished" in str(rep) and "re-run the same" in str(rep), str(rep)
    if then_at is not None:
        second = _run(cmd, then_at, cwd=tmp_path)
        assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
    done = _run(cmd, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (store / "_staging").exists()
    assert_stores_equal(reference, store)
    assert verify_store(store).ok
    # re-running a finished build changes nothing
    again = _run(cmd, cwd=tmp_path)
    assert again.returncode == 0 and "(0 new)" in again.stdout, again.stdout
    assert_stores_equal(reference, store)


def test_killed_append_keeps_the_old_store_and_resumes(rel_source, rel_cluster, reference,
                                                       tmp_path):
    """Append subject 2 to a 1-subject store; SIGKILL after the trailing partial chunk is
    rewritten: the committed store still reads exactly as before, and a re-run completes it
    to the same result as a 2-subject build from scratch."""
    store = tmp_path / "app.zarr"
    shutil.copytree(reference, store)
    before = {p: p.stat().st_mtime_ns for p in (store / "eeg").rglob("*") if p.is_file()}
    cmd = _cmd(rel_source, store, rel_cluster.scheduler.address, subjects=2)
    killed = _run(cmd, "chunk:1", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_stores_equal(reference, store)
    assert verify_store(store).ok  # CRCs of the committed (old) windows still match
    assert _run(cmd, cwd=tmp_path).returncode == 0
    full = tmp_path / "full.zarr"
    build_store(rel_source, full, "challenge1", subjects=2, scheduler=rel_cluster,
                chunk_windows=CHUNK, progress=False)
    assert_stores_equal(full, store)
    assert verify_store(store).ok
    # full chunks of the old store were never rewritten
    n_old = int(open_store(reference).sizes["window"])
    full_chunks = {str(c) for c in range(n_old // CHUNK)}
    for p, mtime in before.items():
        parts = p.relative_to(store / "eeg").parts
        if parts[0] == "c" and parts[1] in full_chunks:
            assert p.stat().st_mtime_ns == mtime, p


def test_killed_build_resumed_with_more_recordings(rel_source, rel_cluster, tmp_path):
    """Kill a build of the second subject after its first chunk (the staged windows of
    recordings whose chunks are written are already deleted), then re-run it with both
    subjects: the first subject sorts first and shifts every window, so the chunk records
    no longer match, consumed recordings are staged again, and the store equals a
    2-subject build from scratch."""
    store = tmp_path / "grow.zarr"
    first, second = sorted(p.name.removeprefix("sub-") for p in Path(rel_source).glob("sub-*"))
    cmd = _cmd(rel_source, store, rel_cluster.scheduler.address)
    cmd[cmd.index("--subjects") + 1] = second
    killed = _run(cmd, "chunk:1", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    staged = [p.parent.name for p in (store / "_staging").glob("*/done.json")]
    consumed = [n for n in staged if not (store / "_staging" / n / "signal.npy").exists()]
    assert consumed, "expected a recording whose windows were all written and deleted"
    assert list((store / "_staging" / "chunks").glob("*.json"))
    cmd[cmd.index("--subjects") + 1:cmd.index("--subjects") + 2] = [first, second]
    done = _run(cmd, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    full = tmp_path / "full2.zarr"
    build_store(rel_source, full, "challenge1", subjects=2, scheduler=rel_cluster,
                chunk_windows=CHUNK, progress=False)
    assert_stores_equal(full, store)
    assert verify_store(store).ok


# ------------------------------------------------------------------- verify finds damage

def _chunk_file(store: Path, array: str, chunk: int) -> Path:
    meta = json.loads((store / array / "zarr.json").read_text())
    sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    ndim = len(meta["shape"])
    key = sep.join(["c", str(chunk), *(["0"] * (ndim - 1))])
    return store / array / key


def _recordings_of_chunk(store: Path, chunk: int) -> set[str]:
    ds = open_store(store)
    rec = str_values(ds["recording"].values)
    return set(rec[chunk * CHUNK:(chunk + 1) * CHUNK].tolist())


@pytest.fixture
def damaged(reference, tmp_path) -> Path:
    store = tmp_path / "dmg.zarr"
    shutil.copytree(reference, store)
    return store


def _cli_verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "eegstore", "verify", str(store)], capture_output=True,
                          text=True, timeout=120)


def test_verify_flags_a_flipped_byte_by_chunk_and_recording(damaged):
    f = _chunk_file(damaged, "eeg", 1)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    rep = verify_store(damaged)
    assert not rep.ok
    [p] = [p for p in rep.problems if p.chunk == 1]
    assert p.kind in ("checksum", "unreadable"), str(rep)
    assert set(p.recordings) == _recordings_of_chunk(damaged, 1) and p.recordings
    assert all(q.chunk == 1 for q in rep.problems if q.kind in ("checksum", "unreadable"))
    out = _cli_verify(damaged)
    assert out.returncode == 1 and "chunk 1" in out.stdout and p.recordings[0] in out.stdout


def test_verify_flags_a_deleted_chunk(damaged):
    _chunk_file(damaged, "eeg", 2).unlink()
    rep = verify_store(damaged)
    bad = [p for p in rep.problems if p.chunk is not None]
    assert [p.chunk for p in bad] == [2] and bad[0].kind in ("checksum", "unreadable"), str(rep)
    assert set(bad[0].recordings) == _recordings_of_chunk(damaged, 2)


def test_verify_flags_a_truncated_coordinate(damaged):
    # the coordinate's chunk file cut in half: its values cannot be decoded
    f = _chunk_file(damaged, "rt_from_stimulus", 0)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rep = verify_store(damaged)
    assert not rep.ok and "rt_from_stimulus" in str(rep), str(rep)
    out = _cli_verify(damaged)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    assert "rt_from_stimulus" in out.stdout


def test_verify_flags_a_shortened_coordinate(damaged):
    """A per-window coordinate whose recorded length is shorter than eeg's."""
    n = int(open_store(damaged).sizes["window"])
    for path in (damaged / "zarr.json", damaged / "subject" / "zarr.json"):
        doc = json.loads(path.read_text())
        meta = doc["consolidated_metadata"]["metadata"]["subject"] if path.name == "zarr.json" \
            and "consolidated_metadata" in doc else doc
        assert meta["shape"] == [n]
        meta["shape"] = [n - 3]
        path.write_text(json.dumps(doc))
    rep = verify_store(damaged)
    assert not rep.ok and "subject" in str(rep), str(rep)
    out = _cli_verify(damaged)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_of_a_localcluster_build_leaves_no_worker_behind(rel_source, rel_cluster,
                                                                 reference, tmp_path):
    """``--workers 1``: the build's own LocalCluster worker processes die with it."""
    store = tmp_path / "lc.zarr"
    cmd = [PY, "-m", "eegstore", "build", rel_source, str(store), "--recipe", "challenge1",
           "--subjects", "1", "--chunk-windows", str(CHUNK), "--workers", "1",
           "--no-progress"]
    env = {**os.environ, KILL_ENV: "chunk:1"}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "dask worker processes outlived the killed build"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    done = _run(_cmd(rel_source, store, rel_cluster.scheduler.address), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_stores_equal(reference, store)
